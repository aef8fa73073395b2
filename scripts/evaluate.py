#!/usr/bin/env python
"""Downstream evaluation of a frozen ResNet-18 backbone: linear probe, kNN and k-means.

Parses the command line, opens the image sets, extracts (or loads cached) features, runs each
protocol over label fractions x seeds and writes results.json / results.csv / results.md and
plots. The work itself lives in :mod:`saliencyssl.eval`.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROTOCOLS = ("linear", "knn", "kmeans")

EPILOG = """\
examples:
  # a pretrained backbone on CIFAR-10 image folders, all protocols, 10 fractions x 3 seeds
  python scripts/evaluate.py --backbone runs/simclr/backbone.pt \\
      --train data/cifar10/train --test data/cifar10/test --out runs/simclr/eval

  # the random-initialisation baseline, three fractions, kNN and linear only
  python scripts/evaluate.py --backbone random --image-size 32 \\
      --train data/cifar10/train --test data/cifar10/test \\
      --fractions 0.1,0.5,1.0 --protocol linear,knn --out runs/random/eval

  # clustering of an unlabelled folder (no --train needed)
  python scripts/evaluate.py --backbone runs/simclr/backbone.pt --test my_photos \\
      --protocol kmeans --clusters 8

data layout: a folder with one sub-folder per class (DIR/<class>/*.png) is labelled; any other
image folder is unlabelled; a folder of CIFAR-10 python batches also works. Train and test must
have the same class sub-folders.

outputs (in --out): results.json, results.csv, results.md, accuracy_vs_fraction.png, tsne.png.
results.json maps linear/knn -> fraction (as written) -> {accuracy_mean, accuracy_std,
n_labelled}, kmeans -> {nmi, ari}, and meta -> run details (backbone, datasets, seeds, caches).
Features are cached (see --cache-dir), so re-running with other fractions or protocols is fast.
"""


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.eval.fractions import DEFAULT_FRACTIONS
    from saliencyssl.eval.knn import DEFAULT_K, DEFAULT_TEMPERATURE
    from saliencyssl.eval.probe import DEFAULT_C

    p = argparse.ArgumentParser(
        prog="evaluate.py", description=__doc__.splitlines()[0] + "\nFeatures come from the frozen backbone's "
        "512-d penultimate layer (cached on disk);\nthe labelled subset at each fraction is drawn class-balanced per "
        "seed; results are mean and std over seeds.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, metavar="PATH|random",
                   help="RUN_DIR/backbone.pt written by scripts/pretrain.py, a plain torchvision ResNet-18 state dict "
                        "(e.g. local ImageNet weights), or 'random' for a seeded randomly initialised ResNet-18 baseline")
    p.add_argument("--train", metavar="DIR", help="labelled training images (DIR/<class>/*); the probe and kNN draw "
                                                  "their labelled subsets from here. Needed for linear and knn")
    p.add_argument("--test", required=True, metavar="DIR",
                   help="test images: linear/knn are scored on them (must be labelled), k-means clusters them")
    p.add_argument("--fractions", default=DEFAULT_FRACTIONS, metavar="F,F,...",
                   help="label fractions in (0, 1] of the training set to use as labelled (default %(default)s); the "
                        "text as written becomes the key in results.json")
    p.add_argument("--protocol", default=",".join(PROTOCOLS), metavar="P,P,...",
                   help="any of linear (logistic regression on standardised features), knn (weighted kNN) and kmeans "
                        "(clustering, NMI/ARI, t-SNE picture); default %(default)s")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="number of seeds (0..N-1); each draws its own labelled subsets, results are mean and std "
                        "over seeds (default %(default)s)")
    p.add_argument("--out", metavar="OUT_DIR",
                   help="output folder (default: BACKBONE_DIR/eval, or runs/eval-random-seedS for --backbone random)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="input side length; default: the backbone config's image_size (32 for random, where it also "
                        "picks the stem: CIFAR stem up to 64 px)")
    p.add_argument("--backbone-seed", type=int, default=0, metavar="S",
                   help="initialisation seed of --backbone random (default %(default)s)")
    p.add_argument("--random-stem", default="auto", choices=("auto", "cifar", "imagenet"),
                   help="stem of --backbone random: auto = CIFAR stem up to 64 px, else the ImageNet stem; set it to "
                        "match the pretrained backbone you compare with (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where features are computed "
                                                                            "(default %(default)s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch during feature extraction (default: torch's choice; 1 is often faster "
                        "on a busy machine)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B",
                   help="images per forward pass during feature extraction (default %(default)s)")
    p.add_argument("--clusters", type=int, metavar="K",
                   help="k-means clusters (default: number of classes of --test; required when it is unlabelled)")
    p.add_argument("--knn-k", type=int, default=DEFAULT_K, metavar="K",
                   help="kNN neighbours (default %(default)s, lightly's benchmark; capped at the labelled count)")
    p.add_argument("--knn-temperature", type=float, default=DEFAULT_TEMPERATURE, metavar="T",
                   help="kNN similarity temperature (default %(default)s)")
    p.add_argument("--probe-c", type=float, default=DEFAULT_C, metavar="C",
                   help="inverse L2 strength of the logistic-regression probe (default %(default)s)")
    p.add_argument("--tsne-points", type=int, default=2000, metavar="N",
                   help="t-SNE picture on at most N test images (random subsample); 0 skips it (default %(default)s)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache (default $SALIENCYSSL_FEATURE_CACHE or ~/.cache/saliencyssl/features)")
    p.add_argument("--no-cache", action="store_true", help="always recompute features and store nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = " ".join(["evaluate.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args, parser)
    except (FileNotFoundError, ValueError) as error:  # includes ImageDecodeError
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from saliencyssl.datasets import open_image_set
    from saliencyssl.eval import clustering, features as feats, fractions as frac, knn, probe, report

    started = time.time()
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        parser.error(f"--protocol {args.protocol!r}: unknown {unknown or 'empty list'}; choose from {', '.join(PROTOCOLS)}")
    try:
        fractions = frac.parse_fractions(args.fractions)
    except ValueError as error:
        parser.error(str(error))
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: give the number of seeds, at least 1")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: give a positive number of images per forward pass")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch here; use --device cpu")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: give a positive number")
        torch.set_num_threads(args.threads)
    supervised = [p for p in protocols if p in ("linear", "knn")]
    if supervised and not args.train:
        parser.error(f"--protocol {','.join(supervised)} needs --train DIR (labelled training images); "
                     f"or run --protocol kmeans alone")
    if args.backbone != "random" and not Path(args.backbone).is_file():
        raise FileNotFoundError(f"--backbone {args.backbone}: no such file; pass RUN_DIR/backbone.pt written by "
                                f"scripts/pretrain.py, a ResNet-18 state dict, or 'random' for the random baseline")
    seeds = list(range(args.seeds))
    out_dir = Path(args.out) if args.out else (
        Path("runs") / f"eval-random-seed{args.backbone_seed}" if args.backbone == "random"
        else Path(args.backbone).resolve().parent / "eval")

    model, info = feats.load_frozen_backbone(args.backbone, args.image_size, args.backbone_seed, args.device,
                                              args.random_stem)
    cache = None if args.no_cache else feats.FeatureCache(args.cache_dir)
    test_set = open_image_set(args.test)
    train_set = open_image_set(args.train) if args.train and supervised else None
    if supervised:
        _require_labels(train_set, args.train, "--train", supervised)
        _require_labels(test_set, args.test, "--test", supervised)
        if train_set.classes != test_set.classes:
            only_train = sorted(set(train_set.classes) - set(test_set.classes))
            only_test = sorted(set(test_set.classes) - set(train_set.classes))
            raise ValueError(f"--train {args.train} and --test {args.test} have different classes (only in train: "
                             f"{only_train}, only in test: {only_test}); give both the same class sub-folders")

    timings: dict[str, float] = {}
    t0 = time.time()
    test_feats = feats.dataset_features(test_set, model, info, cache, args.batch_size, args.device, "test")
    train_feats = (feats.dataset_features(train_set, model, info, cache, args.batch_size, args.device, "train")
                   if train_set is not None else None)
    timings["features_s"] = time.time() - t0

    scores: dict[str, list[frac.FractionScore]] = {}
    n_classes = len(test_set.classes)
    for protocol in supervised:
        X, y = train_feats.features, train_set.labels
        Xt, yt = test_feats.features, test_set.labels
        if protocol == "linear":
            def score(idx, seed, X=X, y=y, Xt=Xt, yt=yt):
                return {"accuracy": probe.linear_probe_accuracy(X[idx], y[idx], Xt, yt, C=args.probe_c)}
        else:
            def score(idx, seed, X=X, y=y, Xt=Xt, yt=yt):
                return {"accuracy": knn.knn_accuracy(X[idx], y[idx], Xt, yt, n_classes, args.knn_k,
                                                     args.knn_temperature)}
        t0 = time.time()
        scores[protocol] = frac.sweep(y, fractions, seeds, score, progress=f"{protocol} over fractions x seeds")
        timings[f"{protocol}_s"] = time.time() - t0

    kmeans_summary = None
    kmeans_meta: dict = {}
    tsne_path = None
    if "kmeans" in protocols:
        n_clusters = args.clusters or n_classes
        if not n_clusters:
            raise ValueError(f"--test {args.test} has no class sub-folders, so the number of clusters is unknown; "
                             f"give --clusters K")
        t0 = time.time()
        labels = test_set.labels if test_set.has_labels else None
        result = clustering.kmeans_clusters(test_feats.features, n_clusters, labels, seed=0)
        kmeans_summary = {"nmi": result.nmi, "ari": result.ari, "n_clusters": n_clusters}
        kmeans_meta = {"n_clusters": n_clusters, "on": "test", "features": "L2-normalised", "seed": 0,
                       "n_init": clustering.DEFAULT_N_INIT}
        timings["kmeans_s"] = time.time() - t0
        if args.tsne_points > 0:
            t0 = time.time()
            idx, embedding = clustering.tsne_map(test_feats.features, args.tsne_points, seed=0)
            tsne_path = report.plot_tsne(embedding, result.assignments[idx],
                                         labels[idx] if labels is not None else None, test_set.classes,
                                         out_dir / "tsne.png", title=f"t-SNE of {len(idx)} test images' features")
            kmeans_meta["tsne_points"] = int(len(idx))
            timings["tsne_s"] = time.time() - t0

    plots = {}
    if scores:
        plots["accuracy"] = str(report.plot_fraction_curves(
            scores, "accuracy", "top-1 test accuracy", out_dir / "accuracy_vs_fraction.png",
            title=f"{Path(args.backbone).name if args.backbone != 'random' else 'random init'}: accuracy vs labels",
            chance=1.0 / n_classes if n_classes else None))
    if tsne_path is not None:
        plots["tsne"] = str(tsne_path)
    timings["total_s"] = time.time() - started

    meta = {
        "backbone": info.to_json(),
        "datasets": {name: _describe(s, path) for name, s, path in
                     (("train", train_set, args.train), ("test", test_set, args.test)) if s is not None},
        "protocols": protocols, "fractions": [t for t, _ in fractions], "seeds": seeds,
        "subsets": "class-balanced (round(fraction * class size) per class, at least 1), nested across fractions "
                   "per seed",
        "linear": {"C": args.probe_c, "max_iter": probe.DEFAULT_MAX_ITER, "standardised": True},
        "knn": {"k": args.knn_k, "temperature": args.knn_temperature, "features": "L2-normalised",
                "k_capped_at_labelled_count": True},
        "kmeans": kmeans_meta,
        "feature_cache": {"train": _cache_meta(train_feats), "test": _cache_meta(test_feats)},
        "device": args.device, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "plots": plots, "timings": timings,
        "command": args.command,
        "versions": _versions(), "host": platform.node(),
    }
    results = report.classification_results(scores, kmeans_summary, meta)
    rows = report.classification_rows(scores, kmeans_summary)
    paths = report.write_report(out_dir, results, rows, report.classification_markdown(results, rows))
    for protocol, entries in scores.items():
        print(f"{protocol:>6}: " + ", ".join(f"{e.fraction}: {e.mean('accuracy'):.3f}±{e.std('accuracy'):.3f}"
                                             for e in entries))
    if kmeans_summary is not None:
        nmi, ari = kmeans_summary["nmi"], kmeans_summary["ari"]
        print(f"kmeans: NMI {nmi:.3f}, ARI {ari:.3f}" if nmi is not None else "kmeans: no labels, no NMI/ARI")
    print(f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name} and plots to {out_dir} "
          f"in {timings['total_s']:.1f}s")
    return 0


def _require_labels(image_set, path, flag, protocols) -> None:
    if image_set is None or not image_set.has_labels:
        raise ValueError(f"{flag} {path} has no labels (its images are not in class sub-folders {path}/<class>/...), "
                         f"but --protocol {','.join(protocols)} needs them; arrange it as {path}/<class>/*.png, or run "
                         f"--protocol kmeans alone")
    if len(image_set.classes) < 2:
        raise ValueError(f"{flag} {path} has only {len(image_set.classes)} class sub-folder; classification needs "
                         f"at least two")


def _describe(image_set, path) -> dict:
    import numpy as np

    counts = np.bincount(image_set.labels[image_set.labels >= 0], minlength=len(image_set.classes))
    return {"path": str(path), "n_images": len(image_set), "classes": list(image_set.classes),
            "images_per_class": [int(c) for c in counts]}


def _cache_meta(cached) -> dict | None:
    if cached is None:
        return None
    return {"path": str(cached.path) if cached.path else None, "hit": cached.hit}


def _versions() -> dict:
    import lightly
    import sklearn
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightly": lightly.__version__, "scikit-learn": sklearn.__version__}


if __name__ == "__main__":
    sys.exit(main())
