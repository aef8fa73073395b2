"""The whole pipeline on the embedded default data, in a few minutes on a 2-core CPU.

Stages (each prints the command a user would run for it, and runs that stage's ``run(config)``):
  1. data       scikit-image's bundled photos and generated images of four shapes (nothing downloaded)
  2. label      exact HC/RC/SaliencyCut targets into a cache; a third of the training images is left
                unlabelled on purpose, so that pretraining must ask the surrogate for them
  3. surrogate  a Pix2Pix surrogate trained on the cached targets, and its fidelity on unseen images
  4. pretrain   SimCLR twice: with saliency views (--aug-source cache,surrogate --policy sal+default)
                and without (--aug-source none --policy default)
  5. evaluate   linear probe and kNN at label fractions for both backbones and a random one
  6. report     OUT/report.md with the table, plots, pictures and an honest verdict

Running it again in the same --out starts the training stages afresh (the data and the label
cache are reused).

Example:
  saliency-ssl quickstart                 # writes runs/quickstart/
  saliency-ssl quickstart --out /tmp/qs --epochs 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from saliencyssl.app.options import fail, one_line_errors
from saliencyssl.files import replace_file

SUMMARY = "the whole pipeline on the embedded data, in a few minutes on a CPU"

SIZE = 32
#: 600 steps of the default recipe: mask IoU 0.90-0.91 and boundary F 0.87-0.90 on the generated test shapes
#: (benchmarks/surrogate_shapes.py).
SURROGATE_EPOCHS = 200

#: Outputs of the training stages, replaced when the quickstart runs again in the same --out
#: (the data and the cache are kept: labelling only fills what is missing).
RERUN_FOLDERS = ("surrogate", "pretrain_saliency", "pretrain_default", "eval")


class StageFailedError(RuntimeError):
    """A stage of the quickstart did not finish (the message names it)."""


@dataclass
class QuickstartConfig:
    """The quickstart's options (``saliency-ssl quickstart``), checked when built.

    Attributes:
        out: the output folder.
        epochs: pretraining epochs per run.
        surrogate_epochs: surrogate training epochs (3 steps each on the 150-160 labelled training images).
        surrogate_minutes: cap on the surrogate's training time.
        workers: labelling processes (``None``: the CPUs available).
        seed: seed of the generated images, the surrogate and pretraining.
    """

    out: Path = Path("runs/quickstart")
    epochs: int = 5
    surrogate_epochs: int = SURROGATE_EPOCHS
    surrogate_minutes: float = 2.0
    workers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give the output folder (created if missing)")
        if self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: pretrain at least 1 epoch")
        if self.surrogate_epochs < 1:
            raise ValueError(f"--surrogate-epochs {self.surrogate_epochs}: train at least 1 epoch")
        if not self.surrogate_minutes > 0:
            raise ValueError(f"--surrogate-minutes {self.surrogate_minutes}: give a positive time budget")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers {self.workers}: give 0 (this process) or more worker processes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-ssl quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="pretraining epochs per run (default %(default)s)")
    parser.add_argument("--surrogate-epochs", type=int, default=SURROGATE_EPOCHS,
                        help="surrogate training epochs: 3 steps each on the 150-160 labelled training images "
                             "(default %(default)s)")
    parser.add_argument("--surrogate-minutes", type=float, default=2.0,
                        help="cap on the surrogate's training time; the default epochs take about 40 s on one thread "
                             "of a busy 2-core CPU (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="labelling processes (default: CPUs available)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated images, the surrogate and pretraining (default %(default)s)")
    return parser


def stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def say(stage_name: str, argv: list) -> None:
    """Print the command line of a stage, as a user would run it."""
    print(f"$ saliency-ssl {stage_name} " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)


def clear_previous_run(out: Path) -> None:
    """Remove the training stages' outputs of an earlier quickstart in ``out``, saying so."""
    for name in RERUN_FOLDERS:
        folder = out / name
        if folder.is_dir():
            print(f"  replacing the previous run's {folder}", flush=True)
            shutil.rmtree(folder)


def _label(images: Path, cache: Path, workers: int | None, export: Path | None = None) -> None:
    from saliencyssl.app import label

    say("label", [images, "--cache", cache, "--quiet", *(["--export", export] if export else []),
                  *(["--workers", workers] if workers is not None else [])])
    config = label.LabelConfig(images=images, cache=cache, workers=workers, export=export, progress=False)
    summary = label.run(config)
    print(f"labeller fingerprint {config.labeller.fingerprint()} -> cache {cache}")
    print("\n".join(summary.lines()))
    if summary.failed:
        raise StageFailedError(f"labelling {images} failed for {len(summary.failed)} images")


def _pretrain(argv: list, **options) -> None:
    from saliencyssl.app.pretrain import PretrainConfig, Pretrainer
    from saliencyssl.ssl.distributed import cleanup

    say("pretrain", argv)
    trainer = Pretrainer(PretrainConfig(**options))
    try:
        trainer.run()
    finally:
        cleanup(trainer.dist)


def run(config: QuickstartConfig) -> Path:
    """Run the six stages into ``config.out``; returns the path of ``report.md``.

    Raises:
        StageFailedError: a stage did not finish (labelling failures).
        OSError, ValueError: a stage refused its inputs (the message says which).
    """
    from saliencyssl.app import evaluate, fidelity, train_surrogate, views
    from saliencyssl.app.label import label_images
    from saliencyssl.datasets import open_image_set
    from saliencyssl.embedded import write_embedded_dataset
    from saliencyssl.saliency import Labeller, LabellerConfig
    from saliencyssl.surrogate.training import TrainConfig
    from saliencyssl.visualize import LABEL_GRID_HEADER, image_grid, labeller_grid_row, save_rgb

    out = config.out
    clear_previous_run(out)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    t = stage("1. embedded data: scikit-image photos and generated shape images")
    data = write_embedded_dataset(out / "data", seed=config.seed)
    train, test = data["train"], data["test"]
    for key in ("photos", "train", "test"):
        print(f"  {key:7s} {len(open_image_set(data[key], keep_decoded=False))} images in {data[key]}")
    seconds["data"] = time.perf_counter() - t

    t = stage("2. exact labelling into the cache (two thirds of the training images)")
    cache_dir = out / "cache"
    labeller_config = LabellerConfig()
    _label(data["photos"], cache_dir, config.workers, export=out / "maps")
    _label(test, cache_dir, config.workers)
    train_set = open_image_set(train, keep_decoded=False)
    keep = train_set.subset([i for i in range(len(train_set)) if i % 3 != 2])
    print(f"  labelling {len(keep)} of {len(train_set)} training images; the other {len(train_set) - len(keep)} "
          f"are left to the surrogate")
    summary = label_images(train, cache_dir, labeller_config, workers=config.workers, progress=False, image_set=keep)
    if summary.failed:
        raise StageFailedError(f"labelling {train} failed for {len(summary.failed)} images")
    rows = []
    labeller = Labeller(labeller_config)
    photos = open_image_set(data["photos"], keep_decoded=False)
    for image in [photos.image(i) for i in range(len(photos))] + [train_set.image(i) for i in (0, 70, 140, 210)]:
        labelling = labeller.label(image, with_hc=True)
        rows.append(labeller_grid_row(image, labelling.hc, labelling.target))
    save_rgb(out / "labeller_grid.png", image_grid(rows, tile_height=128, header=LABEL_GRID_HEADER))
    print(f"  wrote {out / 'labeller_grid.png'}")
    seconds["label"] = time.perf_counter() - t

    t = stage("3. the surrogate: Pix2Pix trained on the cached targets, fidelity on unseen images")
    surrogate = out / "surrogate"
    # One torch thread: on a 2-core machine that other work shares, a second thread mostly waits for the first
    # (0.055 s a step on one thread against 0.13 s on two, with load 7; benchmarks/surrogate_shapes.py).
    argv = [train, "--cache", cache_dir, "--out", surrogate, "--size", SIZE, "--epochs", config.surrogate_epochs,
            "--max-minutes", config.surrogate_minutes, "--threads", 1, "--seed", config.seed, "--quiet"]
    say("train-surrogate", argv)
    train_surrogate.run(train_surrogate.TrainSurrogateConfig(
        images=train, cache=cache_dir, out=surrogate, threads=1, progress=False,
        command=[str(a) for a in argv],
        train=TrainConfig(image_size=SIZE, epochs=config.surrogate_epochs, max_minutes=config.surrogate_minutes,
                          seed=config.seed)))
    say("fidelity", [test, "--cache", cache_dir, "--surrogate", surrogate / "surrogate.pt", "--json",
                     out / "fidelity.json", "--grid", out / "fidelity_grid.png"])
    fidelity.run(fidelity.FidelityConfig(images=test, cache=cache_dir, surrogate=surrogate / "surrogate.pt",
                                         json=out / "fidelity.json", grid=out / "fidelity_grid.png"))
    seconds["surrogate"] = time.perf_counter() - t

    t = stage("4. pretraining SimCLR with and without saliency views")
    say("views", [train, "--cache", cache_dir, "--policy", "sal+default", "--image-size", SIZE, "--out",
                  out / "views.png"])
    views.run(views.ViewsConfig(data=train, out=out / "views.png", cache=cache_dir, policy="sal+default",
                                image_size=SIZE))
    common = ["--data", train, "--method", "simclr", "--epochs", config.epochs, "--batch-size", 32, "--image-size",
              SIZE, "--seed", config.seed, "--quiet"]
    shared = dict(data=str(train), method="simclr", epochs=config.epochs, batch_size=32, image_size=SIZE,
                  seed=config.seed, progress=False)
    _pretrain(common + ["--aug-source", "cache,surrogate", "--policy", "sal+default", "--cache", cache_dir,
                        "--surrogate", surrogate / "surrogate.pt", "--out", out / "pretrain_saliency"],
              aug_source="cache,surrogate", policy="sal+default", cache=str(cache_dir),
              surrogate=str(surrogate / "surrogate.pt"), out=str(out / "pretrain_saliency"), **shared)
    _pretrain(common + ["--aug-source", "none", "--policy", "default", "--out", out / "pretrain_default"],
              aug_source="none", policy="default", out=str(out / "pretrain_default"), **shared)
    seconds["pretrain"] = time.perf_counter() - t

    t = stage("5. evaluation: linear probe and kNN at label fractions")
    fractions = "0.05,0.1,0.25,0.5,1.0"
    backbones = {"sal+default": str(out / "pretrain_saliency" / "backbone.pt"),
                 "default": str(out / "pretrain_default" / "backbone.pt"), "random init": "random"}
    for name, backbone in backbones.items():
        eval_dir = out / "eval" / name.replace(" ", "_").replace("+", "_plus_")
        argv = ["--backbone", backbone, "--train", train, "--test", test, "--fractions", fractions, "--protocol",
                "linear,knn,kmeans", "--seeds", 3, "--image-size", SIZE, "--no-cache", "--tsne-points", 0,
                "--out", eval_dir]
        say("evaluate", argv)
        evaluate.run(evaluate.EvaluateConfig(
            backbone=backbone, train=str(train), test=str(test), out=eval_dir, fractions=fractions,
            protocols="linear,knn,kmeans", seeds=3, image_size=SIZE, no_cache=True, tsne_points=0,
            command=" ".join(["saliency-ssl evaluate", *(shlex.quote(str(a)) for a in argv)])))
    seconds["evaluate"] = time.perf_counter() - t

    t = stage("6. report")
    report = write_quickstart_report(out, backbones, seconds)
    seconds["report"] = time.perf_counter() - t
    print(f"  wrote {report}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s; open {report}")
    return report


def write_quickstart_report(out: Path, backbones: dict[str, str], seconds: dict[str, float]) -> Path:
    """Write ``out/report.md``: accuracy tables and plots, targets, pretraining and time per stage."""
    from saliencyssl.eval.gridtable import plot_rows, policy_gap, result_rows, rows_markdown

    sources = []
    for name, backbone in backbones.items():
        eval_dir = out / "eval" / name.replace(" ", "_").replace("+", "_plus_")
        run_dir = Path(backbone).parent if backbone != "random" else None
        sources.append(("random" if backbone == "random" else "simclr", name, eval_dir, run_dir))
    rows = result_rows(sources)
    for protocol in ("linear", "knn"):
        plot_rows(rows, protocol, out / f"accuracy_{protocol}.png", f"quickstart: {protocol} accuracy")
    fidelity = json.loads((out / "fidelity.json").read_text())
    history = {name: json.loads((Path(b).parent / "history.json").read_text())
               for name, b in backbones.items() if b != "random"}

    lines = ["# saliency-ssl quickstart report", "",
             "SimCLR on a ResNet-18 (CIFAR stem, 32 px) pretrained on 240 generated images of four shapes, with and "
             "without the saliency view, then scored by a linear probe and kNN on frozen features at label "
             "fractions (3 seeds), beside a randomly initialised backbone.", ""]
    for protocol in ("linear", "knn"):
        comparison = policy_gap(rows, "sal+default", "default", protocol)
        gap, spread = comparison["mean_gap"], comparison["spread"]
        better = "better" if gap > 0 else "worse"
        verdict = "within the spread over seeds" if abs(gap) <= spread else "larger than the spread over seeds"
        lines.append(f"- **{protocol}**: `sal+default` did {better} than `default` by {abs(gap) * 100:.1f} "
                     f"accuracy points on average over the label fractions ({verdict}, which is up to "
                     f"{spread * 100:.1f} points).")
    epochs = len(next(iter(history.values())))
    lines += ["", f"**Caveat.** This is a smoke test of the whole pipeline, not evidence: 240 images and {epochs} "
              f"epoch{'s' if epochs != 1 else ''} of pretraining on a CPU. Chance is 25% (four balanced classes); a "
              "randomly initialised ResNet-18 sees mostly colour, which says nothing about the shape, so every "
              "backbone starts near chance and a few minutes of SSL move it little. Use `saliency-ssl grid` with "
              "`configs/grid_cifar10_*.json` for a real comparison.", ""]
    lines.append(rows_markdown("", "", rows))
    lines += ["![linear accuracy](accuracy_linear.png) ![kNN accuracy](accuracy_knn.png)", "",
              "## Targets", "",
              f"Surrogate fidelity on {fidelity['n']} test images it never saw (predict-nothing baseline in brackets): "
              f"mask IoU over images with an object {_fmt(fidelity.get('mask_iou_present'))} "
              f"({_fmt(fidelity['baseline'].get('mask_iou_present'))}), object-or-not accuracy "
              f"{_fmt(fidelity.get('presence_accuracy'))} ({_fmt(fidelity['baseline'].get('presence_accuracy'))}), "
              f"saliency MAE {_fmt(fidelity.get('saliency_mae'))} ({_fmt(fidelity['baseline'].get('saliency_mae'))}).",
              "", "![labeller grid](labeller_grid.png)", "", "![views](views.png)", "",
              "![surrogate vs exact](fidelity_grid.png)", "", "## Pretraining", "",
              "| run | final loss | seconds per epoch (data / augmentation / compute) | targets from cache / surrogate |",
              "| --- | --- | --- | --- |"]
    for name, hist in history.items():
        last = hist[-1]
        split = last["seconds"]
        router = last["router"]
        lines.append(f"| {name} | {last['loss']:.3f} | {split['epoch']:.1f} ({split['data']:.2f} / "
                     f"{split['augmentation']:.2f} / {split['compute']:.1f}) | {router['cache_hits']} / "
                     f"{router['surrogate_images']} |")
    lines += ["", "## Time per stage", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.0f} |" for k, v in seconds.items()]
    path = out / "report.md"
    replace_file(path, "\n".join(lines) + "\n")
    return path


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = QuickstartConfig(out=args.out, epochs=args.epochs, surrogate_epochs=args.surrogate_epochs,
                                  surrogate_minutes=args.surrogate_minutes, workers=args.workers, seed=args.seed)
        run(config)
    except StageFailedError as error:
        return fail(str(error), 1)
    except (OSError, ValueError, LookupError) as error:  # a stage refused its inputs; the message says which
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
