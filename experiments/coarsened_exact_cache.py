"""A cache of the exact targets with only the region boundaries a surrogate also draws, to test where DetCon-S's kNN
gap comes from.

Pretrained on the surrogate's targets, DetCon-S's backbones are level with exact targets on the linear probe and 0.2
to 1.0 kNN points below (docs/surrogate.md, "How good it is"). Merging the surrogate's small fragments did not close
that gap (experiments/merged_regions_cache.py); what is left is that its partition is coarser where it counts: with
the fragments merged it has 3.7 regions an image against the labeller's 5.0, and its largest region owns 57% of the
cells of DetCon-S's grid against 45% (results/surrogate_regions_cifar10.json). This arm isolates that: each exact
region is assigned to the surrogate region it overlaps most, and two 4-adjacent exact regions assigned to the same
surrogate region are merged (transitively). What is left are the labeller's own boundaries, placed where the
labeller placed them, but only those between regions whose larger parts the surrogate separates; the mask and the
saliency map are the labeller's (DetCon-S's default policy reads only the regions). A boundary the surrogate draws
along only part of a border goes too, so the result is coarser than the surrogate's own partition (3.3 regions an
image, the largest owning 60% of the cells, against 3.7 and 57% with its fragments merged): the test leans towards
finding an effect. If pretraining on these targets loses no more kNN points than the surrogate's own targets do, the
missed boundaries can explain the gap; if it is level with exact targets, the gap lies in where the surrogate draws
its boundaries and what it adds.

Found (results/surrogate_parity_1248.json, docs/findings.md, "The surrogate"): kNN 0.4 to 1.0 points below exact
targets and level with the surrogate's own targets (-0.2 to +0.3, inside the spread): the missed boundaries account
for the gap. Linear 0.4 to 1.2 below exact targets, 0.6 to 1.2 below the surrogate's: the extra coarsening costs
linear points.

Labels: a merged region takes the lowest exact label among its members, so an image where nothing merges keeps its
exact labels bit for bit (and DetCon-S's ties between regions, a grid cell split evenly going to the lower label,
fall as on the exact map). Overlap ties go to the lower surrogate label. The surrogate predicts in batches of 64, as
the router hands it a pretraining batch's images.

    python experiments/coarsened_exact_cache.py ../shared/data/cifar10/train --cache runs/caches/cifar \\
        --surrogate runs/exp/parity/surrogate_all/surrogate.pt --out runs/caches/cifar_exact_coarsened
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from saliencyssl.cache import TargetCache
from saliencyssl.target import Target, TargetBatch

#: The file beside the cache that says how it was made. Not merged_regions_cache.MADE_BY: these are the labeller's
#: targets, so the parity table names no surrogate's agreement for this arm.
MADE_BY = "coarsened_exact.json"


def coarsen(exact: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """``exact`` ``(H, W)`` region labels with every pair of 4-adjacent regions that overlap the same ``guide``
    region most merged (transitively); a merged region takes its members' lowest label. ``guide`` equal to ``exact``
    (or finer than it) leaves ``exact`` as it is."""
    values, index = np.unique(exact, return_inverse=True)
    index = index.reshape(exact.shape)
    _, guide_index = np.unique(guide, return_inverse=True)
    guide_index = guide_index.reshape(guide.shape)
    n, g = len(values), int(guide_index.max()) + 1
    overlap = np.bincount((index * g + guide_index).ravel(), minlength=n * g).reshape(n, g)
    owner = overlap.argmax(axis=1)  # the first maximum: the lower guide label
    pairs = np.concatenate([np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], 1),
                            np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], 1)])
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (owner[pairs[:, 0]] == owner[pairs[:, 1]])]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    lowest = np.full(n, n, np.int64)
    np.minimum.at(lowest, component, np.arange(n))  # the lowest member (values are sorted) of each component
    return values[lowest[component]][index]


def main(argv: list[str] | None = None) -> int:
    import surrogate_regions
    from merged_regions_cache import predict_pretraining, surrogate_cache_parser, write_cache

    parser = surrogate_cache_parser(__doc__, "the surrogate.pt whose regions guide the merge")
    args = parser.parse_args(argv)
    config, pairs, predicted = predict_pretraining(parser, args)
    source = TargetCache(args.cache, config.fingerprint())
    exact: list[Target] = []
    try:
        for h in pairs.hashes:
            target = source.get(h)
            if target is None or target.shape != (args.size, args.size):
                parser.error(f"{args.cache} has no {args.size} px target for image {h}; label the images first")
            exact.append(target)
    finally:
        source.close()
    guides = predicted.regions[:, 0].long().numpy()
    coarsened = [Target(t.saliency, t.mask, coarsen(t.regions.astype(np.int64), guides[i]).astype(t.regions.dtype))
                 for i, t in enumerate(exact)]
    for name, batch in (("exact", TargetBatch.from_targets(exact)), ("surrogate", predicted),
                        ("exact, coarsened", TargetBatch.from_targets(coarsened))):
        stats = surrogate_regions.region_stats(batch, 8)
        print(f"{name:18s} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items() if k != "images"))
    changed = sum(not np.array_equal(c.regions, t.regions) for c, t in zip(coarsened, exact))
    written = write_cache(args, config, zip(pairs.hashes, coarsened), MADE_BY, "coarsened_exact_cache.py", argv,
                          surrogate=str(args.surrogate), images=len(coarsened), changed=changed)
    print(f"wrote {written} targets into {args.out}; {changed} of {len(coarsened)} images lost a boundary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
