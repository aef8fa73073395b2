"""Turn the run folders of the experiments into the small result files the findings quote (results/*.json).

    python experiments/collect_results.py mask_aware_cifar10 --runs runs/exp/mask_aware_cifar10
    python experiments/collect_results.py photos --runs runs/exp/photos
    python experiments/collect_results.py surrogate_curve --runs runs/exp/surrogate_curve
    python experiments/collect_results.py photo_surrogate --runs runs/exp/photo_surrogate
    python experiments/collect_results.py parity --runs runs/exp/parity

Each subcommand reads the results.json / history.json files its experiment wrote and writes one or
more result files (the format of :mod:`saliencyssl.app.report`: a table, notes, the commands, the
date and the machine), which ``saliency-ssl report`` renders into docs/findings.md. ``--date`` and
``--machine`` default to today and this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from saliencyssl.eval.gridtable import result_rows, spread


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(path: Path, title: str, columns: list, rows: list, command: list[str], notes: list[str], date: str,
          machine: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"title": title, "date": date, "machine": machine, "command": command,
                                "columns": columns, "rows": rows, "notes": notes}, indent=1) + "\n")
    print(f"wrote {path}")


def _pair(mean: float, std: float) -> list[float]:
    return [round(float(mean), 4), round(float(std), 4)]


# -- CIFAR-10: mask-aware recipes against default ---------------------------------------------------
RECIPES = [("simclr", "default", "SimCLR, default"), ("simclr", "salcrop+default", "SimCLR, salcrop+default"),
           ("simclr", "comp0.3+default", "SimCLR, comp0.3+default"), ("detcon-simclr", "default", "DetCon-S, default"),
           ("random", "random init", "random init")]


def mask_aware_cifar10(args) -> None:
    from saliencyssl.app.grid import GridConfig, cells

    config = GridConfig.load(args.config)
    sources = [(c.method, c.policy, c.eval_dir, c.run_dir) for c in cells(config)]
    sources += [("random", "random init", config.random_eval_dir(seed), None) for seed in config.seeds]
    rows = result_rows(sources)
    fractions = list(dict.fromkeys(r["fraction"] for r in rows))
    labels = [f"{float(f):.0%}" for f in fractions]
    command = [f"saliency-ssl grid {args.config}",
               f"python experiments/collect_results.py mask_aware_cifar10 --config {args.config}"]
    for protocol, name in (("linear", "linear probe"), ("knn", "kNN (k = 200, T = 0.1)")):
        table, gaps = [], []
        base = {r["fraction"]: r for r in rows if r["method"] == "simclr" and r["policy"] == "default"
                and r["protocol"] == protocol}
        for method, policy, label in RECIPES:
            mine = {r["fraction"]: r for r in rows if r["method"] == method and r["policy"] == policy
                    and r["protocol"] == protocol}
            if not mine:
                continue
            table.append([label] + [_pair(mine[f]["accuracy_mean"], spread(mine[f])) if f in mine else None
                                    for f in fractions])
            if (method, policy) != ("simclr", "default") and base:
                gaps.append([label] + [_pair(mine[f]["accuracy_mean"] - base[f]["accuracy_mean"],
                                             max(spread(mine[f]), spread(base[f])))
                                       if f in mine and f in base else None for f in fractions])
        seeds = sorted({r["pretrain_seeds"] for r in rows})
        notes = [f"Top-1 test accuracy on the 10,000 CIFAR-10 test images at each share of the 10,000 train images' "
                 f"labels: mean over {'/'.join(map(str, seeds))} pretraining seeds and 3 label seeds; ± the larger "
                 f"of the spread over label subsets and over pretraining seeds."]
        write(Path(args.out) / f"mask_aware_cifar10_{protocol}.json",
              f"CIFAR-10, {name}: mask-aware recipes at 1,248 steps", ["recipe", *labels], table, command, notes,
              args.date, args.machine)
        write(Path(args.out) / f"mask_aware_cifar10_{protocol}_gap.json",
              f"CIFAR-10, {name}: gap to SimCLR default", ["recipe", *labels], gaps, command,
              ["Mean accuracy minus SimCLR default's at each label fraction; ± the larger spread of the two rows. "
               "A gap inside its spread is no difference."], args.date, args.machine)


# -- photos: segmentation with few masks -------------------------------------------------------------
PHOTO_RECIPES = [("default", "SimCLR, default"), ("salcrop", "SimCLR, salcrop+default"),
                 ("comp", "SimCLR, comp0.3+default"), ("detcon", "DetCon-S, default"), ("sal", "SimCLR, sal+default"),
                 ("sal0.5", "SimCLR, sal0.5+default"), ("random", "random init")]


def photos(args) -> None:
    root = Path(args.runs)
    command = ["bash experiments/photo_judgement.sh",
               f"python experiments/collect_results.py photos --runs {args.runs}"]
    for domain, title in (("clothing", "street photos, person masks (Clothing Co-Parsing; 300 test photos)"),
                          ("horses", "horse photos, figure masks (Weizmann; 100 test photos)")):
        for metric, metric_name in (("iou", "foreground IoU"), ("f", "F-measure (beta^2 = 0.3)")):
            table, fractions = [], None
            for name, label in PHOTO_RECIPES:
                path = root / domain / name / "results.json"
                if not path.is_file():
                    continue
                results = json.loads(path.read_text())
                fractions = fractions or [k for k in results if k != "meta"]
                table.append([label] + [_pair(results[f][f"{metric}_mean"], results[f][f"{metric}_std"])
                                        for f in fractions])
            if not table:
                continue
            meta = json.loads((root / domain / PHOTO_RECIPES[0][0] / "results.json").read_text())["meta"] \
                if (root / domain / PHOTO_RECIPES[0][0] / "results.json").is_file() else {}
            box = meta.get("baselines", {}).get("centre_box", {}).get(metric)
            notes = [f"FPN segmenter fine-tuned on each backbone at each share of the training photos' masks, 3 "
                     f"seeds (± std over seeds); {metric_name} on the fixed test split at 96 px."
                     + (f" An image-blind centred box scores {box:.3f}." if box is not None else "")]
            write(Path(args.out) / f"mask_aware_photos_{domain}_{metric}.json", f"{title}: {metric_name}",
                  ["backbone", *[f"{float(f):.0%}" for f in fractions]], table, command, notes, args.date,
                  args.machine)


# -- the surrogate: fidelity against the amount of data ---------------------------------------------
def surrogate_curve(args) -> None:
    root = Path(args.runs)
    rows = []
    for folder in sorted(root.glob("n*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        if not folder.is_dir() or not (root / f"{folder.name}_test.json").is_file():
            continue
        test = json.loads((root / f"{folder.name}_test.json").read_text())
        history = json.loads((folder / "history.json").read_text())
        steps = history[-1].get("step") or history[-1].get("steps")
        seconds = history[-1].get("seconds")
        s = test["surrogate"] if "surrogate" in test else test
        rows.append([int(folder.name[1:]), steps, round(seconds / 60, 1) if seconds else None,
                     s.get("presence_accuracy"), s.get("mask_iou_present"), s.get("mask_f"),
                     s.get("saliency_mae"), s.get("boundary_f")])
    write(Path(args.out) / "surrogate_cifar10_data.json",
          "CIFAR-10 surrogate: fidelity against the exact targets of the 10,000 test images, by training images",
          ["training images", "steps", "minutes", "presence accuracy", "mask IoU (present)", "mask F",
           "saliency MAE", "boundary F"], rows,
          ["bash experiments/surrogate_curve.sh",
           f"python experiments/collect_results.py surrogate_curve --runs {args.runs}"],
          ["The same number of optimiser steps (about 12,000 of batch 64) for every size, one torch thread; 5% of "
           "each training set held out by content hash to choose the step kept. Up to 25,000 images, drawn from "
           "the 40,000 CIFAR-10 training images outside the pretraining set; 50,000 is all of them."],
          args.date, args.machine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("mask_aware_cifar10", "photos", "surrogate_curve"))
    parser.add_argument("--runs", default=None, help="the experiment's run folder")
    parser.add_argument("--config", default="configs/mask_aware_cifar10_cpu.json", help="grid config (CIFAR-10)")
    parser.add_argument("--out", default="results", help="where the result files go (default %(default)s)")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--machine", default=None, help="default: this CPU, 2 cores, one torch thread per run")
    args = parser.parse_args(argv)
    args.machine = args.machine or f"{cpu_name()} ({os.cpu_count()} cores), one torch thread per run, no GPU"
    {"mask_aware_cifar10": mask_aware_cifar10, "photos": photos, "surrogate_curve": surrogate_curve}[
        args.experiment](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
