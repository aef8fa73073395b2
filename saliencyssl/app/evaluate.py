"""Downstream evaluation of a frozen ResNet-18 backbone: linear probe, kNN and k-means.

Opens the image sets, extracts (or loads cached) features, runs each protocol over label
fractions x seeds and writes results.json / results.csv / results.md and plots
(:func:`saliencyssl.eval.classification.evaluate_classification`).

The out folder is a run folder (:class:`~saliencyssl.app.rundir.RunDir`): a finished evaluation
with the same settings is not redone (``--force`` redoes it), one with other settings is refused
with the settings that differ. What an evaluation's settings are, :func:`evaluation_settings`
says; the grid asks the same question of its cells.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from saliencyssl.app.options import (add_backbone_options, check_count, check_outside, cpu_limit, fail,
                                     one_line_errors)
from saliencyssl.app.rundir import RunDir, RunDirError, RunExistsError
from saliencyssl.eval.classification import MAX_SEEDS, PROTOCOLS, ClassificationSettings

SUMMARY = "linear probe, kNN and k-means of a frozen backbone at label fractions"
#: The most k-means clusters an evaluation asks for (its labelled sets have tens of classes).
MAX_CLUSTERS = 100_000


@dataclass
class EvaluateConfig(ClassificationSettings):
    """One evaluation (``saliency-ssl evaluate``'s options): :class:`ClassificationSettings`, checked,
    with where to run. ``out`` defaults to ``BACKBONE_DIR/eval`` (``runs/eval-random-seed<S>``)."""

    threads: int | None = None
    force: bool = False
    progress: bool = True
    verbose: bool = True

    def __post_init__(self) -> None:
        from saliencyssl.datasets import check_image_size
        from saliencyssl.eval import fractions as frac

        self.protocols = [p.strip() for p in (self.protocols.split(",") if isinstance(self.protocols, str)
                                              else self.protocols) if p.strip()]
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(f"--protocol {','.join(self.protocols)!r}: unknown {unknown or 'empty list'}; choose "
                             f"from {', '.join(PROTOCOLS)}")
        frac.parse_fractions(self.fractions)
        check_count("--seeds", self.seeds, 1, MAX_SEEDS)
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: give a positive number of images per forward pass")
        for flag, value in (("--knn-k", self.knn_k), ("--clusters", self.clusters),
                            ("--train-limit", self.train_limit), ("--test-limit", self.test_limit)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} {value}: give at least 1 (leave the option out for its default)")
        check_count("--threads", self.threads, 1, cpu_limit())
        check_count("--batch-size", self.batch_size, 1, 65_536)
        check_count("--clusters", self.clusters, 1, MAX_CLUSTERS)
        check_count("--backbone-seed", self.backbone_seed, 0, 2 ** 32 - 1)
        for flag, value in (("--knn-temperature", self.knn_temperature), ("--probe-c", self.probe_c)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not value > 0:
                raise ValueError(f"{flag} {value!r}: give a finite positive number")
        if self.tsne_points < 0:
            raise ValueError(f"--tsne-points {self.tsne_points}: give 0 (no t-SNE picture) or more")
        if self.image_size is not None:
            check_image_size(self.image_size, "--image-size")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda: no CUDA device is visible to torch here; use --device cpu")
        supervised = [p for p in self.protocols if p in ("linear", "knn")]
        if supervised and not self.train:
            raise ValueError(f"--protocol {','.join(supervised)} needs --train DIR (labelled training images); "
                             f"or run --protocol kmeans alone")
        if self.backbone != "random" and not Path(self.backbone).is_file():
            raise FileNotFoundError(f"--backbone {self.backbone}: no such file; pass RUN_DIR/backbone.pt written by "
                                    f"saliency-ssl pretrain, a ResNet-18 state dict, or 'random' for the random "
                                    f"baseline")
        if self.out is None:
            self.out = (Path("runs") / f"eval-random-seed{self.backbone_seed}" if self.backbone == "random"
                        else Path(self.backbone).resolve().parent / "eval")
        self.out = Path(self.out)
        check_outside(self.out, {"--train": self.train, "--test": self.test})


def evaluation_settings(config: ClassificationSettings) -> dict:
    """What makes an evaluation's results: the backbone (its file's digest, or the random seed and
    stem) and image size, the data folders and limits, and each protocol's parameters."""
    from saliencyssl.eval import fractions as frac
    from saliencyssl.eval.features import backbone_identity

    identity, size = backbone_identity(config.backbone, config.image_size, config.backbone_seed, config.random_stem)
    protocols = sorted(config.protocols)
    settings = {"backbone": identity, "image_size": size, "test": str(Path(config.test).resolve()),
                "test_limit": config.test_limit, "protocols": protocols, "seeds": config.seeds,
                "fractions": [text for text, _ in frac.parse_fractions(config.fractions)]}
    if "linear" in protocols or "knn" in protocols:
        settings.update(train=str(Path(config.train).resolve()), train_limit=config.train_limit)
    if "knn" in protocols:
        settings["knn"] = [config.knn_k, config.knn_temperature]
    if "linear" in protocols:
        settings["probe_c"] = config.probe_c
    if "kmeans" in protocols:
        settings["clusters"] = config.clusters
    return settings


def run(config: EvaluateConfig) -> dict:
    """Evaluate (unless ``config.out`` holds this evaluation already) and return the results.

    Raises:
        RunDirError: ``config.out`` holds another evaluation (the differences named) or other files.
        FileNotFoundError, ValueError: missing or unlabelled data, a damaged backbone.
    """
    import torch

    from saliencyssl.eval.classification import evaluate_classification

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    settings = evaluation_settings(config)
    run_dir = RunDir(config.out, "evaluate")
    if run_dir.state(settings).finished and not config.force and (run_dir / "results.json").is_file():
        if config.verbose:
            print(f"{config.out} already holds this evaluation (--force redoes it)")
        return json.loads((run_dir / "results.json").read_text())
    run_dir.start(settings, free={"device": config.device, "batch_size": config.batch_size}, resume=True,
                  restart_unfinished=True)
    results = evaluate_classification(config, verbose=config.verbose, progress=config.progress)
    run_dir.finish(results="results.json")
    return results


EPILOG = """\
examples:
  # a pretrained backbone on CIFAR-10 image folders, all protocols, 10 fractions x 3 seeds
  saliency-ssl evaluate --backbone runs/simclr/backbone.pt \\
      --train ../shared/data/cifar10/train --test ../shared/data/cifar10/test --out runs/simclr/eval

  # the random-initialisation baseline, three fractions, kNN and linear only
  saliency-ssl evaluate --backbone random --image-size 32 \\
      --train ../shared/data/cifar10/train --test ../shared/data/cifar10/test \\
      --fractions 0.1,0.5,1.0 --protocol linear,knn --out runs/random/eval

  # clustering of an unlabelled folder (no --train needed)
  saliency-ssl evaluate --backbone runs/simclr/backbone.pt --test my_photos \\
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
        prog="saliency-ssl evaluate", description=__doc__.splitlines()[0] + "\nFeatures come from the frozen backbone's "
        "512-d penultimate layer (cached on disk);\nthe labelled subset at each fraction is drawn class-balanced per "
        "seed; results are mean and std over seeds.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_options(p)
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
                   help=f"number of seeds (0..N-1, N at most {MAX_SEEDS}); each draws its own labelled subsets, "
                        "results are mean and std over seeds (default %(default)s)")
    p.add_argument("--out", metavar="OUT_DIR",
                   help="output folder (default: BACKBONE_DIR/eval, or runs/eval-random-seedS for --backbone random)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="input side length; default: the backbone config's image_size (32 for random, where it also "
                        "picks the stem: CIFAR stem up to 64 px)")
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
    p.add_argument("--train-limit", type=int, metavar="N",
                   help="use N training images evenly spaced through --train (keeps the classes' proportions)")
    p.add_argument("--test-limit", type=int, metavar="N", help="use N test images evenly spaced through --test")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache (default $SALIENCYSSL_FEATURE_CACHE, else $XDG_CACHE_HOME/saliencyssl/features, "
                        "else ~/.cache/saliencyssl/features)")
    p.add_argument("--no-cache", action="store_true", help="always recompute features and store nothing")
    p.add_argument("--force", action="store_true",
                   help="evaluate again even when --out holds a finished evaluation with the same settings")
    p.add_argument("--quiet", action="store_true", help="no progress bars (results are still printed)")
    return p




@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(["saliency-ssl evaluate", *(sys.argv[1:] if argv is None else argv)])
    try:
        config = EvaluateConfig(
            backbone=args.backbone, test=args.test, train=args.train, out=args.out, fractions=args.fractions,
            protocols=args.protocol, seeds=args.seeds, image_size=args.image_size, backbone_seed=args.backbone_seed,
            random_stem=args.random_stem, device=args.device, batch_size=args.batch_size, clusters=args.clusters,
            knn_k=args.knn_k, knn_temperature=args.knn_temperature, probe_c=args.probe_c,
            tsne_points=args.tsne_points, cache_dir=args.cache_dir, no_cache=args.no_cache,
            train_limit=args.train_limit, test_limit=args.test_limit, command=command, threads=args.threads,
            force=args.force, progress=not args.quiet)
        run(config)
    except RunDirError as error:
        return fail(f"{error} (or pass --force)" if isinstance(error, RunExistsError) else error)
    except (FileNotFoundError, ValueError) as error:  # includes ImageDecodeError and BackboneCheckpointError
        return fail(error)
    except MemoryError as error:
        return fail(f"out of memory{': ' + str(error) if str(error) else ''}; evaluate fewer images "
                    f"(--train-limit, --test-limit) or at a smaller --image-size, or a smaller --batch-size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
