#!/usr/bin/env python
"""The whole pipeline on the embedded default data, in a few minutes on a 2-core CPU.

Stages (each prints the command a user would run for it):
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
  python scripts/quickstart.py                 # writes runs/quickstart/
  python scripts/quickstart.py --out /tmp/qs --epochs 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

# The stages run the other scripts in this folder (python puts it first on sys.path).
import eval_fidelity
import evaluate
import label
import pretrain
import show_views
import train_surrogate

from saliencyssl.cache import TargetCache
from saliencyssl.cache.executors import default_workers, make_executor
from saliencyssl.cache.labelling import label_folder
from saliencyssl.datasets import open_image_set
from saliencyssl.embedded import write_embedded_dataset
from saliencyssl.eval.gridtable import plot_rows, policy_gap, result_rows, rows_markdown
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.visualize import LABEL_GRID_HEADER, image_grid, labeller_grid_row, save_rgb

SIZE = 32
#: 600 steps of the default recipe: mask IoU 0.90-0.91 and boundary F 0.87-0.90 on the generated test shapes
#: (benchmarks/surrogate_shapes.py).
SURROGATE_EPOCHS = 200


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def run(script, name: str, argv: list[str]) -> None:
    """Run one of the scripts in this process, printing the equivalent command line."""
    print(f"$ python scripts/{name} " + " ".join(shlex.quote(a) for a in argv), flush=True)
    status = script.main(argv)
    if status != 0:
        raise SystemExit(f"scripts/{name} failed with status {status}")


#: Outputs of the training stages, replaced when the quickstart runs again in the same --out
#: (the data and the cache are kept: labelling only fills what is missing).
RERUN_FOLDERS = ("surrogate", "pretrain_saliency", "pretrain_default", "eval")


def clear_previous_run(out: Path) -> None:
    """Remove the training stages' outputs of an earlier quickstart in ``out``, saying so."""
    for name in RERUN_FOLDERS:
        folder = out / name
        if folder.is_dir():
            print(f"  replacing the previous run's {folder}", flush=True)
            shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    clear_previous_run(out)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    t = stage("1. embedded data: scikit-image photos and generated shape images")
    data = write_embedded_dataset(out / "data", seed=args.seed)
    train, test = str(data["train"]), str(data["test"])
    for key in ("photos", "train", "test"):
        print(f"  {key:7s} {len(open_image_set(data[key], keep_decoded=False))} images in {data[key]}")
    seconds["data"] = time.perf_counter() - t

    t = stage("2. exact labelling into the cache (two thirds of the training images)")
    cache_dir = out / "cache"
    config = LabellerConfig()
    workers = ["--workers", str(args.workers)] if args.workers is not None else []
    run(label, "label.py", [str(data["photos"]), "--cache", str(cache_dir), "--quiet", "--export", str(out / "maps"),
                            *workers])
    run(label, "label.py", [test, "--cache", str(cache_dir), "--quiet", *workers])
    train_set = open_image_set(train, keep_decoded=False)
    keep = [p for i, p in enumerate(train_set.paths) if i % 3 != 2]
    print(f"  labelling {len(keep)} of {len(train_set)} training images; the other {len(train_set) - len(keep)} "
          f"are left to the surrogate")
    executor = make_executor(args.workers if args.workers is not None else default_workers())
    try:
        label_folder(train, TargetCache(cache_dir, config.fingerprint(), params=config.params()), config,
                     executor=executor, paths=keep, progress=False)
    finally:
        executor.close()
    rows = []
    labeller = Labeller(config)
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
    run(train_surrogate, "train_surrogate.py", [train, "--cache", str(cache_dir), "--out", str(surrogate),
                                                "--size", str(SIZE), "--epochs", str(args.surrogate_epochs),
                                                "--max-minutes", str(args.surrogate_minutes), "--threads", "1",
                                                "--seed", str(args.seed), "--quiet"])
    run(eval_fidelity, "eval_fidelity.py", [test, "--cache", str(cache_dir), "--surrogate",
                                            str(surrogate / "surrogate.pt"), "--json", str(out / "fidelity.json"),
                                            "--grid", str(out / "fidelity_grid.png")])
    seconds["surrogate"] = time.perf_counter() - t

    t = stage("4. pretraining SimCLR with and without saliency views")
    common = ["--data", train, "--method", "simclr", "--epochs", str(args.epochs), "--batch-size", "32",
              "--image-size", str(SIZE), "--seed", str(args.seed), "--quiet"]
    run(show_views, "show_views.py", [train, "--cache", str(cache_dir), "--policy", "sal+default", "--image-size",
                                      str(SIZE), "--out", str(out / "views.png")])
    run(pretrain, "pretrain.py", common + ["--aug-source", "cache,surrogate", "--policy", "sal+default", "--cache",
                                           str(cache_dir), "--surrogate", str(surrogate / "surrogate.pt"),
                                           "--out", str(out / "pretrain_saliency")])
    run(pretrain, "pretrain.py", common + ["--aug-source", "none", "--policy", "default",
                                           "--out", str(out / "pretrain_default")])
    seconds["pretrain"] = time.perf_counter() - t

    t = stage("5. evaluation: linear probe and kNN at label fractions")
    fractions = "0.05,0.1,0.25,0.5,1.0"
    backbones = {"sal+default": str(out / "pretrain_saliency" / "backbone.pt"),
                 "default": str(out / "pretrain_default" / "backbone.pt"), "random init": "random"}
    for name, backbone in backbones.items():
        run(evaluate, "evaluate.py", ["--backbone", backbone, "--train", train, "--test", test, "--fractions", fractions,
                                      "--protocol", "linear,knn,kmeans", "--seeds", "3", "--image-size", str(SIZE),
                                      "--no-cache", "--tsne-points", "0",
                                      "--out", str(out / "eval" / name.replace(" ", "_").replace("+", "_plus_"))])
    seconds["evaluate"] = time.perf_counter() - t

    t = stage("6. report")
    report = write_report(out, backbones, seconds)
    seconds["report"] = time.perf_counter() - t
    print(f"  wrote {report}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s; open {report}")
    return 0


def write_report(out: Path, backbones: dict[str, str], seconds: dict[str, float]) -> Path:
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
              "backbone starts near chance and a few minutes of SSL move it little. Use `scripts/run_grid.py` with "
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
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
