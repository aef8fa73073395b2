"""Classification and clustering of a frozen backbone's features at label fractions (the evaluate stage).

:func:`evaluate_classification` extracts (or loads cached) features of the train and test sets,
runs the linear probe and kNN over label fractions x seeds (class-balanced subsets drawn per
seed), k-means with NMI/ARI and a t-SNE picture, and writes ``results.json``, ``results.csv``,
``results.md`` and the plots to the output folder.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("linear", "knn", "kmeans")
#: The most seeds an evaluation runs (each draws its own labelled subsets and trains its own probe,
#: per fraction): far more than any spread needs, few enough that the sweep's bookkeeping fits in memory.
MAX_SEEDS = 1000


@dataclass
class ClassificationSettings:
    """The options of one evaluation (the evaluate stage's :class:`~saliencyssl.app.evaluate.EvaluateConfig` checks them)."""

    backbone: str
    test: str
    out: Path
    train: str | None = None
    fractions: str = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    seeds: int = 3
    image_size: int | None = None
    backbone_seed: int = 0
    random_stem: str = "auto"
    device: str = "cpu"
    batch_size: int = 256
    clusters: int | None = None
    knn_k: int = 200
    knn_temperature: float = 0.1
    probe_c: float = 1.0
    tsne_points: int = 2000
    cache_dir: str | None = None
    no_cache: bool = False
    train_limit: int | None = None
    test_limit: int | None = None
    command: str = ""


def evaluate_classification(s: ClassificationSettings, verbose: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run the protocols of ``s`` and write the report; returns ``results`` (as in results.json).

    ``verbose`` prints the results; ``progress`` shows progress bars.

    Raises:
        ValueError: unlabelled sets for linear/knn, mismatched classes, or no cluster count.
        FileNotFoundError: a missing backbone or folder.
    """
    import torch

    from saliencyssl.datasets import open_image_set
    from saliencyssl.eval import clustering, features as feats, fractions as frac, knn, probe, results as report

    started = time.time()
    protocols = list(s.protocols)
    fractions = frac.parse_fractions(s.fractions)
    supervised = [p for p in protocols if p in ("linear", "knn")]
    if isinstance(s.seeds, bool) or not isinstance(s.seeds, int) or not 1 <= s.seeds <= MAX_SEEDS:
        raise ValueError(f"seeds {s.seeds!r}: give a whole number from 1 to {MAX_SEEDS}")
    seeds = list(range(s.seeds))
    out_dir = Path(s.out)

    model, info = feats.load_frozen_backbone(s.backbone, s.image_size, s.backbone_seed, s.device,
                                              s.random_stem)
    cache = None if s.no_cache else feats.FeatureCache(s.cache_dir)
    test_set = open_image_set(s.test)
    train_set = open_image_set(s.train) if s.train and supervised else None
    if s.test_limit:
        test_set = test_set.spread(s.test_limit)
    if s.train_limit and train_set is not None:
        train_set = train_set.spread(s.train_limit)
    if supervised:
        require_same_labels(train_set, s.train, test_set, s.test, supervised)
        require_held_out(train_set, s.train, test_set, s.test)

    timings: dict[str, float] = {}
    t0 = time.time()
    test_feats = feats.dataset_features(test_set, model, info, cache, s.batch_size, s.device, "test", progress)
    train_feats = (feats.dataset_features(train_set, model, info, cache, s.batch_size, s.device, "train", progress)
                   if train_set is not None else None)
    timings["features_s"] = time.time() - t0

    scores: dict[str, list[frac.FractionScore]] = {}
    n_classes = len(test_set.classes)
    for protocol in supervised:
        X, y = train_feats.features, train_set.labels
        Xt, yt = test_feats.features, test_set.labels
        if protocol == "linear":
            def score(idx, seed, X=X, y=y, Xt=Xt, yt=yt):
                return {"accuracy": probe.linear_probe_accuracy(X[idx], y[idx], Xt, yt, C=s.probe_c)}
        else:
            def score(idx, seed, X=X, y=y, Xt=Xt, yt=yt):
                return {"accuracy": knn.knn_accuracy(X[idx], y[idx], Xt, yt, n_classes, s.knn_k,
                                                     s.knn_temperature)}
        t0 = time.time()
        bar = f"{protocol} over fractions x seeds" if progress else None
        scores[protocol] = frac.sweep(y, fractions, seeds, score, progress=bar)
        timings[f"{protocol}_s"] = time.time() - t0
    warn_same_subsets(next(iter(scores.values()), []))

    kmeans_summary = None
    kmeans_meta: dict = {}
    tsne_path = None
    if "kmeans" in protocols:
        n_clusters = s.clusters or n_classes
        if not n_clusters:
            raise ValueError(f"the test set {s.test} has no class sub-folders, so the number of clusters is "
                             f"unknown; give the number of clusters")
        t0 = time.time()
        labels = test_set.labels if test_set.has_labels else None
        result = clustering.kmeans_clusters(test_feats.features, n_clusters, labels, seed=0)
        kmeans_summary = {"nmi": result.nmi, "ari": result.ari, "n_clusters": n_clusters}
        kmeans_meta = {"n_clusters": n_clusters, "on": "test", "features": "L2-normalised", "seed": 0,
                       "n_init": clustering.DEFAULT_N_INIT}
        timings["kmeans_s"] = time.time() - t0
        if s.tsne_points > 0:
            t0 = time.time()
            idx, embedding = clustering.tsne_map(test_feats.features, s.tsne_points, seed=0)
            tsne_path = report.plot_tsne(embedding, result.assignments[idx],
                                         labels[idx] if labels is not None else None, test_set.classes,
                                         out_dir / "tsne.png", title=f"t-SNE of {len(idx)} test images' features")
            kmeans_meta["tsne_points"] = int(len(idx))
            timings["tsne_s"] = time.time() - t0

    plots = {}
    if scores:
        knn_settings = {"k": s.knn_k, "temperature": s.knn_temperature}
        plots["accuracy"] = str(report.plot_fraction_curves(
            {report.protocol_title(name, knn_settings): entries for name, entries in scores.items()}, "accuracy",
            "top-1 test accuracy", out_dir / "accuracy_vs_fraction.png",
            title=f"{Path(s.backbone).name if s.backbone != 'random' else 'random init'}: accuracy vs labels",
            chance=1.0 / n_classes if n_classes else None))
    if tsne_path is not None:
        plots["tsne"] = str(tsne_path)
    timings["total_s"] = time.time() - started

    meta = {
        "backbone": info.to_json(),
        "datasets": {name: _describe(s, path) for name, s, path in
                     (("train", train_set, s.train), ("test", test_set, s.test)) if s is not None},
        "protocols": protocols, "fractions": [t for t, _ in fractions], "seeds": seeds,
        "limits": {"train": s.train_limit, "test": s.test_limit},
        "subsets": "class-balanced (round(fraction * class size) per class, at least 1), nested across fractions "
                   "per seed",
        "linear": {"C": s.probe_c, "max_iter": probe.DEFAULT_MAX_ITER, "standardised": True},
        "knn": {"k": s.knn_k, "temperature": s.knn_temperature, "features": "L2-normalised",
                "k_capped_at_labelled_count": True},
        "kmeans": kmeans_meta,
        "feature_cache": {"train": _cache_meta(train_feats), "test": _cache_meta(test_feats)},
        "device": s.device, "batch_size": s.batch_size, "threads": torch.get_num_threads(),
        "plots": plots, "timings": timings,
        "command": s.command,
        "versions": _versions(), "host": platform.node(),
    }
    results = report.classification_results(scores, kmeans_summary, meta)
    rows = report.classification_rows(scores, kmeans_summary)
    paths = report.write_report(out_dir, results, rows, report.classification_markdown(results, rows))
    for protocol, entries in scores.items() if verbose else ():
        print(f"{protocol:>6}: " + ", ".join(f"{e.fraction}: {e.mean('accuracy'):.3f}±{e.std('accuracy'):.3f}"
                                             for e in entries))
    if kmeans_summary is not None and verbose:
        nmi, ari = kmeans_summary["nmi"], kmeans_summary["ari"]
        print(f"kmeans: NMI {nmi:.3f}, ARI {ari:.3f}" if nmi is not None else "kmeans: no labels, no NMI/ARI")
    if verbose:
        print(f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name} and plots to {out_dir} "
              f"in {timings['total_s']:.1f}s")
    return results



def require_same_labels(train_set, train, test_set, test, protocols) -> None:
    """Check that the ``--train`` and ``--test`` image sets are labelled with the same classes.

    Args:
        train_set, test_set: the opened image sets (``train_set`` may be ``None``: no ``--train``).
        train, test: their paths, as the user wrote them (for the messages).
        protocols: the protocols that need labels (named in the message).

    Raises:
        ValueError: a set without labels, with fewer than two classes, or the two with different classes.
    """
    _require_labels(train_set, train, "the train set", protocols)
    _require_labels(test_set, test, "the test set", protocols)
    if train_set.classes != test_set.classes:
        only_train = sorted(set(train_set.classes) - set(test_set.classes))
        only_test = sorted(set(test_set.classes) - set(train_set.classes))
        raise ValueError(f"the train set {train} and the test set {test} have different classes (only in train: "
                         f"{only_train}, only in test: {only_test}); give both the same class sub-folders")


def warn_same_subsets(entries) -> None:
    """Say when several label fractions draw the same number of images (at least one per class makes
    small fractions of small sets equal): their columns are then one experiment repeated."""
    by_count: dict[int, list[str]] = {}
    for entry in entries:
        by_count.setdefault(entry.n_labelled, []).append(entry.fraction)
    for count, names in by_count.items():
        if len(names) > 1:
            print(f"note: label fractions {', '.join(names)} all give {count} labelled images: their results are "
                  f"the same experiment", file=sys.stderr)


#: Share of the test images that may also be training images (exact pixel copies, which real data
#: sets hold a few of) before the evaluation is refused as scored on what it trained on.
MAX_SHARED_TEST_SHARE = 0.01


def require_held_out(train_set, train, test_set, test) -> None:
    """Refuse a test set whose images are (beyond :data:`MAX_SHARED_TEST_SHARE`) also in the train set:
    the same folder twice, or a CIFAR-10 batch folder, which always opens its train batches."""
    shared = len(set(test_set.hashes()) & set(train_set.hashes()))
    if shared > MAX_SHARED_TEST_SHARE * len(test_set):
        raise ValueError(f"{shared} of the {len(test_set)} images of the test set {test} are also in the train set "
                         f"{train}: the probes would be scored on images they were fitted on; give a held-out test "
                         f"set (for CIFAR-10 python batches, the test_batch file: {Path(test) / 'test_batch'})")


def _require_labels(image_set, path, what, protocols) -> None:
    if image_set is None or not image_set.has_labels:
        loose = [n for n in (image_set.names if image_set is not None else []) if "/" not in n]
        why = (f"; {len(loose)} images lie directly in it, e.g. {loose[0]}" if loose and len(loose) < len(image_set)
               else "")
        raise ValueError(f"{what} {path} has no labels (its images are not all in two or more class sub-folders "
                         f"{path}/<class>/...{why}), but the protocols {','.join(protocols)} need them; arrange it as "
                         f"{path}/<class>/*.png, or run the kmeans protocol alone")


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
