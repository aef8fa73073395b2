"""Turn the run folders of the experiments into the small result files the findings quote (results/*.json).

    python experiments/collect_results.py mask_aware_cifar10 --config CONFIG [CONFIG ...] [--name STEM]
    python experiments/collect_results.py photos --runs runs/exp/photos
    python experiments/collect_results.py surrogate_curve --runs runs/exp/surrogate_curve
    python experiments/collect_results.py surrogate_gpu --runs OUT      (OUT of experiments/gpu_surrogate_all.sh run)
    python experiments/collect_results.py surrogate_shapes --runs runs/shapes
    python experiments/collect_results.py baseline_stats --runs runs/baseline
    python experiments/collect_results.py photo_surrogate --runs runs/exp/photo_surrogate/measure
    python experiments/collect_results.py test_suite --runs runs/tests
    python experiments/collect_results.py labeller --runs results/raw/labeller
    python experiments/collect_results.py surrogate_width --runs results/raw/surrogate_width
    python experiments/collect_results.py cpu_speed --runs results/raw/cpu_speed
    python experiments/collect_results.py gpu_speed --runs OUT      (OUT of experiments/gpu_speed.sh run)
    python experiments/collect_results.py parity [--steps 624|1248] [--carry]

Each subcommand reads the results.json / history.json files its experiment wrote and writes one or
more result files (the format of :mod:`saliencyssl.app.report`: a table, notes, the commands, the
date and the machine), which ``saliency-ssl report`` renders into docs/findings.md. ``--date`` and
``--machine`` default to today and this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from saliencyssl.eval.gridtable import pool_runs, result_rows, spread

# bench_common (the machine's name) lives in benchmarks/, beside this folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_common import cpu_name  # noqa: E402


def write(path: Path, title: str, columns: list, rows: list, command: list[str], notes: list[str], date: str,
          machine: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"title": title, "date": date, "machine": machine, "command": command,
                                "columns": columns, "rows": rows, "notes": notes}, indent=1) + "\n")
    print(f"wrote {path}")


def _pair(mean: float, std: float) -> list[float]:
    return [round(float(mean), 4), round(float(std), 4)]


def _gap(mine: tuple[float, float], base: tuple[float, float]) -> list[float]:
    """One gap cell between two (mean, spread) cells: the difference of the means, ± the larger spread."""
    return _pair(mine[0] - base[0], max(mine[1], base[1]))


# -- CIFAR-10: mask-aware recipes against default ---------------------------------------------------
RECIPES = [("simclr", "default", "SimCLR, default"), ("simclr", "salcrop+default", "SimCLR, salcrop+default"),
           ("simclr", "comp0.3+default", "SimCLR, comp0.3+default"), ("detcon-simclr", "default", "DetCon-S, default"),
           ("byol", "default", "BYOL, default"), ("detcon-byol", "default", "DetCon-B, default"),
           ("simclr", "sal+default", "SimCLR, sal+default"), ("random", "random init", "random init")]
# the row each recipe's gap is taken to: its own method with `default` (DetCon-B to BYOL), else SimCLR default
GAP_REFERENCE = {"byol": ("byol", "BYOL"), "detcon-byol": ("byol", "BYOL")}


def _cell_sources(configs: list, keep: set[tuple[str, str]] | None = None) -> list[tuple]:
    """The :func:`result_rows` sources of the cells of several grid configs (``keep``: only these
    (method, policy) cells)."""
    from saliencyssl.app.grid import cells

    return [(c.method, c.policy, c.eval_dir, c.run_dir) for config in configs for c in cells(config)
            if keep is None or (c.method, c.policy) in keep]


def mask_aware_cifar10(args) -> None:
    from saliencyssl.app.grid import GridConfig

    configs = [GridConfig.load(path) for path in args.config]
    sources = _cell_sources(configs)  # configs that differ only in their pretraining seeds pool into one row per cell
    sources += [("random", "random init", config.random_eval_dir(seed), None)
                for config in configs if "random" in config.baselines for seed in config.seeds]
    rows = result_rows(sources)
    fractions = list(dict.fromkeys(r["fraction"] for r in rows))
    labels = [f"{float(f):.0%}" for f in fractions]
    command = [f"saliency-ssl grid {path}" for path in args.config]
    name_option = "" if args.name == "mask_aware_cifar10" else f" --name {args.name}"
    command.append(f"python experiments/collect_results.py mask_aware_cifar10 --config {' '.join(args.config)}"
                   + name_option)
    for protocol, name in (("linear", "linear probe"), ("knn", "kNN (k = 200, T = 0.1)")):
        table, gaps = [], []
        for method, policy, label in RECIPES:
            mine = _by_fraction(rows, method, policy, protocol)
            if not mine:
                continue
            row_label = f"{label} ({_seeds_label(mine)})"
            table.append([row_label] + [_pair(mine[f]["accuracy_mean"], spread(mine[f])) if f in mine else None
                                        for f in fractions])
            reference, reference_label = GAP_REFERENCE.get(method, ("simclr", "SimCLR"))
            base = _by_fraction(rows, reference, "default", protocol)
            if (method, policy) != (reference, "default") and base:
                gap_label = row_label if _seeds_label(mine) == _seeds_label(base) else \
                    f"{label} ({_seeds_label(mine)}; {reference_label} default {_seeds_label(base)})"
                if reference != "simclr":
                    gap_label += f", to {reference_label} default"
                gaps.append([gap_label] + _gap_cells(mine, base, fractions))
        n_seeds = max((r["pretrain_seeds"] for r in rows), default=1)
        spread_note = ("± the larger of the spread over label subsets and the standard deviation of the pretraining "
                       "seeds' means (a row of one seed: label subsets only)" if n_seeds > 1 else
                       "± the spread over label subsets only (one pretraining seed: the spread over pretraining "
                       "seeds, usually the larger, is not measured)")
        notes = [f"Top-1 test accuracy on the 10,000 CIFAR-10 test images at each share of the 10,000 train images' "
                 f"labels. Mean over the pretraining seeds each row names and 3 label seeds; {spread_note}. At 100% "
                 f"every label seed uses the same labels."]
        write(Path(args.out) / f"{args.name}_{protocol}.json",
              f"CIFAR-10, {name}: {configs[0].name.split(': ', 1)[-1]}", ["recipe", *labels], table, command, notes,
              args.date, args.machine)
        write(Path(args.out) / f"{args.name}_{protocol}_gap.json",
              f"CIFAR-10, {name}: gap to default", ["recipe", *labels], gaps, command,
              ["Mean accuracy minus SimCLR default's (DetCon-B: minus BYOL default's) at each label fraction; ± the "
               "larger spread of the two rows. A gap inside its spread is no difference."], args.date, args.machine)


# -- photos: segmentation with few masks -------------------------------------------------------------
PHOTO_RECIPES = [("default", "SimCLR, default"), ("salcrop", "SimCLR, salcrop+default"),
                 ("comp", "SimCLR, comp0.3+default"), ("detcon", "DetCon-S, default"), ("sal", "SimCLR, sal+default"),
                 ("sal0.5", "SimCLR, sal0.5+default"), ("random", "random init")]
# each name's recipe as experiments/photo_judgement.sh takes it
PHOTO_SPECS = {"default": "simclr:default", "salcrop": "simclr:salcrop+default", "comp": "simclr:comp0.3+default",
               "detcon": "detcon-simclr:default", "sal": "simclr:sal+default", "sal0.5": "simclr:sal0.5+default",
               "random": "random:"}


def photos(args) -> None:
    root = Path(args.runs)
    done = [name for name, _ in PHOTO_RECIPES
            if all((root / domain / name / "results.json").is_file() for domain in ("clothing", "horses"))]
    command = ["bash experiments/photo_judgement.sh " + " ".join(f"{name}={PHOTO_SPECS[name]}" for name in done),
               f"python experiments/collect_results.py photos --runs OUT/exp/photos"]
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
            backbone = meta.get("backbone", {}).get("config") or {}
            training = meta.get("training", {})
            split = meta.get("split", {})
            notes = [f"Backbones (ResNet-18, ImageNet stem) pretrained on the 1,295 unlabelled photos "
                     f"(clothing_parsing/unlabelled and bsds500_test) at {backbone.get('image_size', 96)} px for "
                     f"{backbone.get('epochs', '?')} epochs of {backbone.get('batch_size', '?')}, pretraining seed "
                     f"{backbone.get('seed', 0)}, targets from the exact cache; random init is the untrained "
                     f"network. Each is fine-tuned whole in an FPN segmenter ({training.get('epochs', '?')} epochs, "
                     f"Adam, BCE + soft Dice) at each share of the {split.get('n_train', '?')} training photos' "
                     f"masks, 3 seeds (± std over seeds); {metric_name} on the fixed test split of "
                     f"{split.get('n_test', '?')} photos (by content hash)."
                     + (f" An image-blind centred box scores {box:.3f}." if box is not None else "")]
            write(Path(args.out) / f"mask_aware_photos_{domain}_{metric}.json", f"{title}: {metric_name}",
                  ["backbone", *[f"{float(f):.0%}" for f in fractions]], table, command, notes, args.date,
                  args.machine)
    photo_seeds(args)


def _photo_seed_runs(root: Path, domain: str, name: str) -> dict[int, dict]:
    """``{pretraining seed: results.json}`` of one recipe on one photo set: seed 0 in ``domain/``, seed N in
    ``domain_sN/`` (experiments/photo_judgement.sh with SEED=N; no other folder name counts)."""
    runs = {}
    for folder in sorted(root.glob(f"{domain}*")):
        match = re.fullmatch(rf"{re.escape(domain)}(?:_s([1-9][0-9]*))?", folder.name)
        if match and (folder / name / "results.json").is_file():
            runs[int(match.group(1) or 0)] = json.loads((folder / name / "results.json").read_text())
    return runs


def _pooled(runs: dict[int, dict], metric: str, fraction: str) -> tuple[float, float]:
    """Mean over pretraining seeds of one fraction's mean, and the larger of the spread over fine-tuning seeds
    and the spread of the seeds' means (:func:`pool_runs`, as CIFAR-10's tables)."""
    mean, within, between = pool_runs([r[fraction][f"{metric}_mean"] for r in runs.values()],
                                      [r[fraction][f"{metric}_std"] for r in runs.values()])
    return mean, max(within, between or 0.0)


def _seed_cell(run: dict, metric: str, fraction: str) -> tuple[float, float]:
    """One pretraining seed's (mean, std over fine-tuning seeds) of a metric at one share of the masks."""
    return run[fraction][f"{metric}_mean"], run[fraction][f"{metric}_std"]


def photo_seeds(args) -> None:
    """The photo recipes that have more than one pretraining seed, pooled, each against SimCLR default over the
    same seeds, and the gap at each seed alone."""
    root = Path(args.runs)
    labels = dict(PHOTO_RECIPES)
    for domain, title in (("clothing", "street photos (Clothing Co-Parsing)"), ("horses", "horses (Weizmann)")):
        found = {name: _photo_seed_runs(root, domain, name) for name, _ in PHOTO_RECIPES}
        base_runs = found["default"]
        pooled = [name for name in found if name not in ("default", "random")
                  and len(set(found[name]) & set(base_runs)) > 1]
        if not pooled:
            continue
        fractions = [k for k in next(iter(base_runs.values())) if k != "meta"]
        table, names = [], ["default", *pooled]
        for metric, metric_name in (("iou", "IoU"), ("f", "F")):
            written = set()
            for name in pooled:
                seeds = sorted(set(found[name]) & set(base_runs))
                mine = {s: found[name][s] for s in seeds}
                base = {s: base_runs[s] for s in seeds}
                seed_text = "/".join(map(str, seeds))
                for label, runs in ((labels["default"], base), (labels[name], mine)):
                    row_label = f"{label}, {metric_name} (pretraining seeds {seed_text})"
                    if row_label not in written:  # default once per set of seeds
                        written.add(row_label)
                        table.append([row_label] + [_pair(*_pooled(runs, metric, f)) for f in fractions])
                gap_row = [f"{labels[name]} minus default, {metric_name} (seeds {seed_text})"]
                gap_row += [_gap(_pooled(mine, metric, f), _pooled(base, metric, f)) for f in fractions]
                table.append(gap_row)
                for seed in seeds:
                    table.append([f"{labels[name]} minus default, {metric_name} (seed {seed} alone)"]
                                 + [_gap(_seed_cell(mine[seed], metric, f), _seed_cell(base[seed], metric, f))
                                    for f in fractions])
        seeds_run = sorted(set.union(*(set(found[n]) for n in names)) - {0})
        recipes = " ".join(f"{n}={PHOTO_SPECS[n]}" for n in names)
        command = [f"bash experiments/photo_judgement.sh {recipes}"]
        command += [f"SEED={seed} bash experiments/photo_judgement.sh {recipes}" for seed in seeds_run]
        command.append("python experiments/collect_results.py photos --runs OUT/exp/photos")
        write(Path(args.out) / f"mask_aware_photos_{domain}_seeds.json",
              f"{title}: SimCLR default and {', '.join(labels[n] for n in pooled)} over pretraining seeds",
              ["backbone, metric", *[f"{float(f):.0%}" for f in fractions]], table, command,
              ["Foreground IoU and F-measure (beta^2 = 0.3) on the fixed test split, as the tables above, mean over "
               "the pretraining seeds named (3 fine-tuning seeds each); ± the larger of the spread over fine-tuning "
               "seeds and the standard deviation of the pretraining seeds' means. A gap's ± is the larger spread "
               "of its two rows (for one seed alone: the larger fine-tuning spread); a gap inside it is no "
               "difference."], args.date, args.machine)


# -- the surrogate: fidelity against the amount of data ---------------------------------------------
def _fidelity_scores(report: dict) -> dict:
    """The surrogate's scores in a ``saliency-ssl fidelity --json`` report: at its top level, where
    ``surrogate`` names the checkpoint, or under ``surrogate`` in reports that score several sources."""
    nested = report.get("surrogate")
    return nested if isinstance(nested, dict) else report


def _steps_run(record: dict, history: list) -> int | None:
    """The optimiser steps a train-surrogate run took: its run.json's outcome, else (a run stopped before it
    wrote one) the step of its last evaluation, at an epoch's end."""
    steps = (record.get("outcome") or {}).get("steps")
    if steps is None and history:
        steps = history[-1].get("step") or history[-1].get("steps")
    return steps


def surrogate_curve(args) -> None:
    root = Path(args.runs)
    rows = []
    for folder in sorted(root.glob("n*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        if not folder.is_dir() or not (root / f"{folder.name}_test.json").is_file():
            continue
        test = json.loads((root / f"{folder.name}_test.json").read_text())
        history = json.loads((folder / "history.json").read_text())
        record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
        steps = _steps_run(record, history)
        seconds = history[-1].get("seconds") or (history[-1].get("minutes") or 0) * 60 or None
        s = _fidelity_scores(test)
        rows.append([int(folder.name[1:]), steps, round(seconds / 60, 1) if seconds else None,
                     s.get("presence_accuracy"), s.get("mask_iou_present"), s.get("mask_f"),
                     s.get("saliency_mae"), s.get("boundary_f")])
    write(Path(args.out) / "surrogate_cifar10_data.json",
          "CIFAR-10 surrogate: fidelity against the exact targets of the 10,000 test images, by training images",
          ["training images", "steps", "minutes", "presence accuracy", "mask IoU (present)", "mask F",
           "saliency MAE", "boundary F"], rows,
          ["bash experiments/surrogate_curve.sh",
           f"python experiments/collect_results.py surrogate_curve --runs {args.runs}"],
          ["The same number of optimiser steps of batch 64 for every size, one torch thread, the defaults of "
           "saliency-ssl train-surrogate; 5% of each training set held out by content hash to choose the step kept. Up to 25,000 images, drawn from "
           "the 40,000 CIFAR-10 training images outside the pretraining set; 50,000 is all of them. Minutes of "
           "wall time with the four runs side by side on the machine."],
          args.date, args.machine)


REGION_COLUMNS = [("regions", "regions"), ("regions_16px", "of 16 px or more"), ("regions_64px", "of 64 px or more"),
                  ("regions_owning_a_cell", "owning a grid cell"),
                  ("small_regions_owning_a_cell", "owning a cell, under 64 px"),
                  ("largest_region_cells", "cells of the largest"),
                  ("mask_area", "mask area"), ("no_mask", "images without a mask"),
                  ("boundary_recall", "boundary recall"), ("boundary_precision", "boundary precision")]


#: What each experiment script that writes a cache of altered targets does, by its file name.
_CACHE_MAKERS = {
    "merged_regions_cache.py": "experiments/merged_regions_cache.py writes a surrogate's targets, its boundary "
                               "channel cut at --boundary-threshold (0.5 unless the command gives one), with each "
                               "region under --min-pixels (50 unless given; 0: none) merged into the neighbour "
                               "sharing the longest border",
    "coarsened_exact_cache.py": "experiments/coarsened_exact_cache.py writes the exact targets with each two touching "
                                "regions that overlap the same region of a surrogate most merged; the surrogate's "
                                "regions are drawn with its boundary channel cut at --boundary-threshold, 0.5 unless "
                                "the command gives one",
}


def surrogate_regions(args) -> None:
    """experiments/surrogate_regions.py's JSON (--runs) to results/surrogate_regions_cifar10.json. The surrogates'
    checkpoints are not committed: the commands name them SURROGATE_1, SURROGATE_2, ... and a note each says which
    it is by its agreement with the exact test targets."""
    path = Path(args.runs or "results/raw/surrogate_regions.json")
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; run experiments/surrogate_regions.py first (its docstring has the "
                 f"command)")
    report = json.loads(path.read_text())
    rows = [[name] + [round(stats[key], 3) if key in stats else None for key, _ in REGION_COLUMNS]
            for name, stats in report["rows"].items()]
    n = next(iter(report["rows"].values()))["images"]
    notes = [f"The {n:,} pretraining images at {report['size']} px, without views; means over the images. Regions "
             f"are counted per image; DetCon-S pools over those that own a cell of its {report['grid']}x"
             f"{report['grid']} feature grid (each cell takes the region covering most of it), and the largest's "
             f"column is the share of the cells it owns. Mask area: the foreground's share of the pixels. Boundary "
             f"recall: the share of the exact region boundary's pixels with one of the row's within a pixel; "
             f"precision: the share of the row's boundary pixels with an exact one within a pixel."]
    made_by = report.get("made_by", {})
    commands = [*made_by.values(), report["command"]]
    for i, (name, file) in enumerate(report.get("surrogates", {}).items(), 1):  # named by agreement, as in parity
        placeholder = f"SURROGATE_{i}"
        commands = [command.replace(file, placeholder) for command in commands]
        fidelity = Path(file).parent / "test.json"
        notes.append(f"Surrogate, {name} ({placeholder} in the commands): "
                     + (f"agreement with the exact targets of the {_agreement(fidelity)}" if fidelity.is_file()
                        else f"the surrogate.pt of a run folder named {Path(file).parent.name}."))
    for name, folder in report.get("caches", {}).items():
        maker = next((text for script, text in _CACHE_MAKERS.items() if script in made_by.get(name, "")), None)
        notes.append(f"{name[0].upper()}{name[1:]}: the targets of the cache {Path(folder).name}, read as they are"
                     + (f" ({maker})." if maker else "."))
    write(Path(args.out) / "surrogate_regions_cifar10.json",
          "The surrogate's regions against the exact labeller's, on the CIFAR-10 pretraining images",
          ["targets"] + [label for _, label in REGION_COLUMNS], rows,
          commands + [f"python experiments/collect_results.py surrogate_regions --runs {path}"],
          notes, report.get("date", args.date), args.machine)


def surrogate_gpu(args) -> None:
    """results/surrogate_cifar10_gpu.json from the OUT of experiments/gpu_surrogate_all.sh run: one row per run
    folder with a fidelity report beside it (``NAME/`` and ``NAME_test.json``); the machine is the card the run
    named in ``device.txt`` unless ``--machine`` is given."""
    root = Path(args.runs)
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (root / f"{p.name}_test.json").is_file()):
        settings = json.loads((folder / "run.json").read_text())["settings"]
        history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").is_file() else []
        s = _fidelity_scores(json.loads((root / f"{folder.name}_test.json").read_text()))
        last = history[-1] if history else {}
        rows.append([f"{folder.name}, batch {settings['batch_size']}", last.get("step"), round(last["minutes"], 2)
                     if last.get("minutes") is not None else None, s.get("presence_accuracy"),
                     s.get("mask_iou_present"), s.get("mask_f"), s.get("saliency_mae"), s.get("boundary_f")])
    if not rows:
        raise SystemExit(f"{root}: no run folder with a NAME_test.json beside it (experiments/gpu_surrogate_all.sh run "
                         "writes them)")
    device = root / "device.txt"
    machine = args.machine_given or (device.read_text().strip() if device.is_file() else args.machine)
    write(Path(args.out) / "surrogate_cifar10_gpu.json",
          "CIFAR-10 surrogate on all 50,000 train images, on a GPU: fidelity against the exact targets of the "
          "10,000 test images",
          ["run", "steps", "minutes", "presence accuracy", "mask IoU (present)", "mask F", "saliency MAE",
           "boundary F"], rows,
          ["bash experiments/gpu_surrogate_all.sh stage", "bash experiments/gpu_surrogate_all.sh run",
           f"python experiments/collect_results.py surrogate_gpu --runs {args.runs}"],
          ["Both runs side by side on the one GPU, the defaults of saliency-ssl train-surrogate otherwise; batch 64 "
           "for 6,000 steps is the CPU curve's budget (results/surrogate_cifar10_data.json), the other a fixed "
           "wall time with fp16 autocast; 5% held out by content hash to choose the step kept. Steps and minutes as "
           "of the last epoch's end."],
          args.date, machine)


# -- the surrogate on the generated shapes: what held it back -----------------------------------------
SHAPE_RUNS = [
    ("Pix2Pix recipe, 129 steps", "old_129"),
    ("Pix2Pix recipe, 600 steps", "old_600"),
    ("Pix2Pix + --lambda-l1 10", "o129_l1_10"), ("Pix2Pix + --lambda-mask 100", "o129_mask100"),
    ("Pix2Pix + --lambda-boundary 40", "o129_boundary40"), ("Pix2Pix, no GAN", "o129_gan0"),
    ("Pix2Pix, no dropout", "o129_dropout0"), ("Pix2Pix + full-resolution head", "o129_head8"),
    ("Pix2Pix + quarter turns", "o129_rotate"), ("Pix2Pix + --lr 3e-3", "o129_lr3e-3"),
    ("Pix2Pix + --ngf 32", "o129_ngf32"), ("Pix2Pix, batch 16 x 516 steps", "o129_bs16x4"),
    ("Pix2Pix + balanced boundary weight", "o129_balanced"),
    ("defaults, 600 steps", "default"), ("defaults, --seed 1", "seed1"), ("defaults, --seed 2", "seed2"),
    ("defaults, other generated data (--data-seed 1)", "data1"), ("defaults, other generated data (--data-seed 2)", "data2"),
    ("defaults, --head 0", "new_head0"), ("defaults, --head 0, 950 steps (equal CPU time)", "new_head0_950"),
    ("defaults, --no-rotate", "new_norotate"), ("defaults, --boundary-pos-weight 2", "new_pos2"),
    ("defaults, --lambda-gan 1", "new_gan1"), ("defaults, --dropout-blocks 3", "new_dropout3"), ("defaults, --lr 2e-4", "new_lr2e-4"),
    ("defaults, --lr 2e-3", "new_lr2e-3"), ("defaults, --batch-size 32, 1,200 steps", "new_bs32"), ("defaults, --head 16", "new_head16"),
    ("defaults, --ngf 32", "new_ngf32"), ("defaults, --boundary-pos-weight 10", "new_pos10"),
]


def surrogate_shapes(args) -> None:
    root = Path(args.runs)
    rows, commands, first = [], [], None
    for label, name in SHAPE_RUNS:
        path = root / f"{name}.json"
        if not path.is_file():
            continue
        run = json.loads(path.read_text())
        first = first or run
        per_class = run["mask_iou_per_class"]
        rows.append([label, run["steps"], run["mask_iou"], *(per_class[c] for c in ("ellipse", "rectangle",
                                                                                     "triangle", "cross")),
                     run["boundary_f"], round(run["seconds_per_step_cpu_median"], 3)])
        commands.append(run["command"])
    notes = [f"120 generated test shapes at 32 px (160 for training). A round blob at the right place reaches IoU "
             f"{first['blob_bound']:.3f} (crosses {first['blob_bound_per_class']['cross']:.3f}, triangles "
             f"{first['blob_bound_per_class']['triangle']:.3f}); a perfect outline {first['resolution_ceiling']:.3f} "
             f"(half-covered pixels go either way at 32 px). Pix2Pix recipe: Pix2Pix's adversarial term, no head, "
             f"dropout in 3 decoder blocks, boundary weight 2, mirrors only, rate 1e-3. Defaults: full-resolution "
             f"head, no adversarial term, no dropout, class-balanced boundary weight, quarter turns and mirrors. "
             f"CPU seconds per step: median, one thread, on a machine shared with other jobs."] if first else []
    write(Path(args.out) / "surrogate_shapes.json", "The surrogate on the embedded shapes: one lever at a time",
          ["recipe", "steps", "mask IoU", "ellipse", "rectangle", "triangle", "cross", "boundary F", "s/step"], rows,
          commands, notes, first["date"] if first else args.date, args.machine)



# -- CIFAR-10: the controls of the mask-aware judgement (a second seed, DetCon's temperature) -----------------
CONTROLS = [("configs/mask_aware_cifar10_short.json", "simclr", "default", "SimCLR, default, seed 0 (T = 0.5)"),
            ("configs/mask_aware_cifar10_short_seed1.json", "simclr", "default", "SimCLR, default, seed 1 (T = 0.5)"),
            ("configs/mask_aware_cifar10_short_t01.json", "simclr", "default", "SimCLR, default, seed 0, T = 0.1"),
            ("configs/mask_aware_cifar10_short.json", "detcon-simclr", "default", "DetCon-S, default, seed 0 (T = 0.1)"),
            ("configs/mask_aware_cifar10_short_seed1.json", "detcon-simclr", "default",
             "DetCon-S, default, seed 1 (T = 0.1)")]


def mask_aware_controls(args) -> None:
    table = {}
    for config_path, method, policy, label in CONTROLS:
        if not Path(config_path).is_file():
            continue
        rows = _seed_rows([config_path], {(method, policy)})  # one config: one pretraining seed, not pooled
        if rows:
            table[label] = rows
    fractions = list(dict.fromkeys(r["fraction"] for rows in table.values() for r in rows))
    out_rows = []
    for protocol, name in (("linear", "linear"), ("knn", "kNN")):
        for label, rows in table.items():
            mine = {r["fraction"]: r for r in rows if r["protocol"] == protocol}
            out_rows.append([f"{label}, {name}"] + [_pair(mine[f]["accuracy_mean"], spread(mine[f])) if f in mine
                                                    else None for f in fractions])
    write(Path(args.out) / "mask_aware_cifar10_controls.json",
          "CIFAR-10, 624 steps: a second pretraining seed and SimCLR at DetCon's temperature",
          ["run, protocol", *[f"{float(f):.0%}" for f in fractions]], out_rows,
          [f"saliency-ssl grid {c}" for c in dict.fromkeys(c for c, *_ in CONTROLS)]
          + ["python experiments/collect_results.py mask_aware_controls"],
          ["Top-1 test accuracy, mean over 3 label seeds ± their spread. Seed 1 against seed 0 of the same recipe "
           "shows the spread over pretraining seeds; SimCLR at T = 0.1 against DetCon-S separates the mask-pooled "
           "loss from the temperature. The T = 0.1 run used two torch threads, the others one."], args.date, args.machine)


# -- CIFAR-10: rows pooled over the pretraining seeds of several grid configs (controls, parity) -------
def _seed_rows(config_paths: list[str], keep: set[tuple[str, str]]) -> list[dict]:
    """Rows of :func:`result_rows` over the cells of several grid configs (their pretraining seeds pooled)."""
    from saliencyssl.app.grid import GridConfig

    return result_rows(_cell_sources([GridConfig.load(path) for path in config_paths], keep))


def _by_fraction(rows: list[dict], method: str, policy: str, protocol: str) -> dict:
    return {r["fraction"]: r for r in rows if (r["method"], r["policy"], r["protocol"]) == (method, policy, protocol)}


def _seeds(rows: dict) -> int:
    """The most pretraining seeds behind one cell's rows (``{fraction: row}``)."""
    return max((r["pretrain_seeds"] for r in rows.values()), default=0)


def _seeds_label(rows: dict) -> str:
    return _seeds_text(_seeds(rows))


def _seeds_text(seeds: int) -> str:
    return f"{seeds} seed" + ("s" if seeds != 1 else "")


def _gap_cells(mine: dict, base: dict, fractions: list[str]) -> list:
    return [_gap((mine[f]["accuracy_mean"], spread(mine[f])), (base[f]["accuracy_mean"], spread(base[f])))
            if f in mine and f in base else None for f in fractions]


# -- the surrogate downstream: DetCon-S on the surrogate's targets against the exact ones -----------------
# per budget (pretraining steps): the grid configs of DetCon-S and SimCLR default on exact targets (both
# pretraining seeds), of DetCon-S on the surrogate's targets and on half exact, half surrogate; the result file
PARITY_BUDGETS = {
    "624": {"exact": ["configs/mask_aware_cifar10_short.json", "configs/mask_aware_cifar10_short_seed1.json"],
            "surrogate": "configs/surrogate_parity_cifar10_short.json",
            "half": "configs/surrogate_parity_half_cifar10_short.json", "result": "surrogate_parity.json"},
    "1248": {"exact": ["configs/mask_aware_cifar10_cpu.json"], "surrogate": "configs/surrogate_parity_cifar10.json",
             "half": "configs/surrogate_parity_half_cifar10.json", "result": "surrogate_parity_1248.json",
             "all": "configs/surrogate_parity_all_cifar10.json",
             "half_all": "configs/surrogate_parity_half_all_cifar10.json",
             "merged": "configs/surrogate_parity_merged_cifar10.json",
             "coarsened": "configs/surrogate_parity_coarsened_cifar10.json",
             "cut": "configs/surrogate_parity_cut_cifar10.json",
             "recut": "configs/surrogate_parity_recut_cifar10.json",
             "b30": "configs/surrogate_parity_b30_cifar10.json",
             "seed1": "configs/surrogate_parity_seed1_cifar10.json",
             "exact_seed2": "configs/surrogate_parity_exact_seed2_cifar10.json"},
}
#: The arm of a budget's "all" config: the surrogate trained on every CIFAR-10 image outside the pretraining set;
#: and of its "half_all" config: that surrogate filling in the half of the targets the cache lacks.
_ALL_ARM = "targets of the 40,000-image surrogate"
_HALF_ALL_ARM = "half exact, half from the 40,000-image surrogate"
#: ... and of its "merged" config: that surrogate's targets with their small regions merged, served from a cache
_MERGED_ARM = "merged regions of the 40,000-image surrogate"
#: ... and of its "cut" and "recut" configs: that surrogate's targets with its boundary channel cut at 0.3, and the
#: same with the small regions then merged
_CUT_ARM = "regions of the 40,000-image surrogate cut at 0.3"
_RECUT_ARM = "regions of the 40,000-image surrogate cut at 0.3, under 50 px merged"
#: ... and of its "b30" config: the targets of a surrogate trained by that recipe with the boundary term x3
_B30_ARM = "targets of the 40,000-image surrogate, boundary term x3"
#: ... and of its "seed1" config: the targets of a second training of that recipe, another training seed
_SEED1_ARM = "targets of the 40,000-image surrogate, training seed 1"
#: ... and of its "coarsened" config: the exact targets with touching regions that surrogate does not separate merged
_COARSENED_ARM = "exact targets coarsened to the 40,000-image surrogate's regions"
#: ... and of its "exact_seed2" config: the exact targets again, from a third pretraining seed
_THIRD_SEED_ARM = "exact targets, a third pretraining seed"
#: {arm: the budget's config key} of the arms compared with the exact targets, in the table's order: those fed by a
#: surrogate, the coarsened arm, whose regions are the labeller's cut along a surrogate's, and a third seed of the
#: exact targets themselves, which says how far the two seeds every arm is compared with sit from a third
_SURROGATE_ARMS = {"surrogate targets": "surrogate", "half exact, half surrogate": "half", _ALL_ARM: "all",
                   _HALF_ALL_ARM: "half_all", _MERGED_ARM: "merged", _CUT_ARM: "cut", _RECUT_ARM: "recut",
                   _B30_ARM: "b30", _SEED1_ARM: "seed1", _COARSENED_ARM: "coarsened", _THIRD_SEED_ARM: "exact_seed2"}
#: Arms that also get a gap row against another arm, the one they alter: each acts on the all arm's surrogate or,
#: the b30 and seed1 arms, on its recipe (the seed1 arm's gap row is how far two trainings of one recipe lie apart)
_ALTERED_ARMS = {_MERGED_ARM: _ALL_ARM, _CUT_ARM: _ALL_ARM, _RECUT_ARM: _ALL_ARM, _B30_ARM: _ALL_ARM,
                 _SEED1_ARM: _ALL_ARM, _COARSENED_ARM: _ALL_ARM}
#: What the first parity note says of each arm a budget may add, by its config key; the note names the arm first.
_ARM_NOTES = {
    "all": "every target from a surrogate trained by the same command on all 40,000 CIFAR-10 training images outside "
           "the pretraining set.",
    "half_all": "the half-labelled cache, the other half's targets from that surrogate.",
    "merged": "every target from that surrogate, predicted once, with each region under 50 pixels merged into the "
              "neighbour sharing the longest border (the labeller's smallest segment at this size), served from a "
              "cache (experiments/merged_regions_cache.py).",
    "cut": "every target from that surrogate, predicted once with its boundary channel cut at 0.3 instead of 0.5 "
           "(drawing boundaries it is less sure of), no region merged, served from a cache "
           "(experiments/merged_regions_cache.py --boundary-threshold 0.3 --min-pixels 0).",
    "recut": "the same, with its regions under 50 pixels then merged as in the merged arm, which gives as many "
             "regions an image as the labeller's and as large a largest region "
             "(--boundary-threshold 0.3 --min-pixels 50).",
    "b30": "every target, at the usual cut, from a surrogate trained by the 40,000-image command with the boundary "
           "term's weight tripled (--lambda-boundary 30) for as many optimiser steps (21,846, on two threads), which "
           "draws more of the labeller's region boundaries; predicted once, served from a cache (--min-pixels 0).",
    "seed1": "every target, at the usual cut, from a second training of the 40,000-image recipe with another "
             "training seed (--seed 1) for as many optimiser steps (21,846); predicted once, served from a cache "
             "(--min-pixels 0). Its gap row against the 40,000-image surrogate's targets is how far two trainings of "
             "one recipe lie apart downstream.",
    "coarsened": "the labeller's targets with each two touching exact regions whose larger parts lie in the same "
                 "region of that surrogate merged, so only boundaries of the labeller's that the surrogate's "
                 "partition keeps are left (a partition coarser than the surrogate's own); mask and map the "
                 "labeller's; served from a cache (experiments/coarsened_exact_cache.py).",
    "exact_seed2": "the exact targets' DetCon-S with pretraining seed 2, kept apart from seeds 0 and 1 so that its "
                   "gap row shows how far one more seed of the reference itself falls from them.",
}


def _surrogate_behind(config_path: str) -> Path | None:
    """The surrogate.pt whose targets a parity config pretrains on: its pretraining's ``surrogate``, or, for a
    config that reads a surrogate's targets from a cache, the one that cache records having been made with
    (experiments/merged_regions_cache.py); None when neither says."""
    from merged_regions_cache import MADE_BY
    from saliencyssl.app.grid import GridConfig

    config = GridConfig.load(config_path)
    if "surrogate" in config.pretrain:
        return Path(config.pretrain["surrogate"])
    record = Path(config.cache) / MADE_BY
    return Path(json.loads(record.read_text())["surrogate"]) if record.is_file() else None


def _column(fraction: str) -> str:
    return f"{float(fraction):.0%}"


def _measured_cells(rows: list[dict], method: str, policy: str, protocol: str) -> tuple[dict, int]:
    """One cell's rows of a collection as ``{column: (mean, spread)}`` and its pretraining seeds."""
    by = _by_fraction(rows, method, policy, protocol)
    return {_column(f): (r["accuracy_mean"], spread(r)) for f, r in by.items()}, _seeds(by)


def _recorded_cells(previous: dict | None, label: str, name: str) -> tuple[dict, int]:
    """The row ``"<label> (N seeds), <name>"`` of a previous result file as ``{column: (mean, spread)}``, N."""
    for row in (previous or {}).get("rows", []):
        match = re.fullmatch(rf"{re.escape(label)} \((\d+) seeds?\), {re.escape(name)}", str(row[0]))
        if match:
            return ({column: tuple(cell) for column, cell in zip(previous["columns"][1:], row[1:]) if cell},
                    int(match[1]))
    return {}, 0


#: How the parity notes start that say which rows were kept from an earlier collection, and each arm's surrogate.
_KEPT, _SURROGATE_OF = "Kept from the collection of ", "The surrogate of the "


def _recorded_agreements(previous: dict | None) -> dict[str, str]:
    """{arm: its surrogate's agreement with the exact targets} as a previous parity file's notes record it.

    Notes name the arms they speak of (``The surrogate of the A and B rows: agreement ...``); two earlier forms
    are read too: one note for every surrogate-fed arm (``Its agreement ...``), and one for the arms measured
    when others were kept (``The surrogate of the rows measured now (...): its agreement ...``)."""
    if not previous:
        return {}
    notes = previous.get("notes", [])
    arms = [m[1] for row in previous.get("rows", []) if (m := re.fullmatch(r"(.+) \(\d+ seeds?\), [^,]+",
                                                                            str(row[0])))
            and " minus " not in m[1] and m[1] != "exact targets"]
    kept = set(_kept_dates(previous, arms))
    found: dict[str, str] = {}
    for note in notes:
        named = re.fullmatch(rf"{_SURROGATE_OF}(?:kept )?(.+?) rows: (agreement .*)", note)
        if named:
            found.update({label: named[2] for label in arms if label in named[1].split(" and ")})
        elif note.startswith(f"{_SURROGATE_OF}rows measured now"):
            found.update({label: note[note.index("agreement"):] for label in arms if label not in kept})
        elif note.startswith("Its agreement with the exact targets"):
            found.update({label: note[len("Its "):] for label in arms if label not in found})
    return found


def _kept_dates(previous: dict | None, arms) -> dict[str, str]:
    """{arm: the date of the collection its rows were kept from}, as a previous parity file's notes say."""
    note = next((n for n in (previous or {}).get("notes", []) if n.startswith(_KEPT)), "")
    # each date's list ends at the full stop before the next date's, or at the note's end (names may hold one: "0.3")
    return {label: date for date, labels in re.findall(r"(\d{4}-\d{2}-\d{2}), whose run folders were not collected "
                                                         rf"again: (.+?)\.(?= {_KEPT}|$)", note)
            for label in _arms_in(labels, arms)}


def _arms_in(text: str, arms) -> list[str]:
    """The arms a note lists, joined by ", ", in the order of ``arms``. An arm's own name may hold one ("half exact,
    half surrogate"), and one name may begin another ("exact targets" and "exact targets, a third pretraining
    seed"): the longest names are looked for first, and each found is taken out of the list."""
    rest, found = f", {text}, ", set()
    for arm in sorted(arms, key=len, reverse=True):
        if f", {arm}, " in rest:
            found.add(arm)
            rest = rest.replace(f", {arm}, ", ", ", 1)
    return [arm for arm in arms if arm in found]


def _agreement(fidelity: Path) -> str:
    """A fidelity report's agreement with the exact targets, as the end of a sentence; with the optimiser steps
    and minutes of the surrogate's training where its run.json says them."""
    f = _fidelity_scores(json.loads(fidelity.read_text()))
    run = fidelity.parent / "run.json"
    outcome = (json.loads(run.read_text()).get("outcome") or {}) if run.is_file() else {}
    trained = (f" (trained {outcome['steps']:,} steps of 64 in {outcome['minutes']:.0f} minutes)"
               if "steps" in outcome and "minutes" in outcome else "")
    return (f"{f['n']:,} test images{trained}: presence accuracy {f['presence_accuracy']:.3f}, mask IoU on present "
            f"masks {f['mask_iou_present']:.3f}, region boundary F {f['boundary_f']:.3f}.")


def parity(args) -> None:
    """The parity table. With ``--carry``, an arm whose run folders are absent keeps its rows from the result
    file this collection replaces (and a gap row between two such arms is kept as it was), so one arm can be
    measured again or added without the others' runs; the notes name what was kept and when it was collected."""
    keep = {("detcon-simclr", "default")}
    budget = PARITY_BUDGETS[args.steps]
    steps = f"{int(args.steps):,} steps"
    result = Path(args.out) / budget["result"]
    previous = json.loads(result.read_text()) if args.carry and result.is_file() else None
    cache = _seed_rows(budget["exact"], keep | {("simclr", "default")})  # DetCon-S and the plain baseline
    measured = {"exact targets": cache}
    measured.update({label: _seed_rows([budget[key]], keep) for label, key in _SURROGATE_ARMS.items()
                     if key in budget})
    columns = list(dict.fromkeys(_column(r["fraction"]) for rows in measured.values() for r in rows))
    if previous and len(previous["columns"]) - 1 > len(columns):
        columns = list(previous["columns"][1:])
    table, carried = [], set()
    previous_rows = {row[0]: row for row in (previous or {}).get("rows", [])}
    for protocol, name in (("linear", "linear"), ("knn", "kNN")):
        arms = {}
        for label, rows in measured.items():
            cells, seeds = _measured_cells(rows, "detcon-simclr", "default", protocol)
            if not cells:
                cells, seeds = _recorded_cells(previous, label, name)
                if cells:
                    carried.add(label)
            arms[label] = (cells, seeds)
            if cells:
                table.append([f"{label} ({_seeds_text(seeds)}), {name}"]
                             + [_pair(*cells[c]) if c in cells else None for c in columns])
        plain = _measured_cells(cache, "simclr", "default", protocol)[0]
        gaps = [(label, "exact targets", arms["exact targets"][0]) for label in measured if label != "exact targets"]
        gaps += [(label, other, arms[other][0]) for label, other in _ALTERED_ARMS.items()
                 if label in arms and other in arms]
        gaps.append(("surrogate targets", "SimCLR default (no targets)", plain))
        for label, reference, base in gaps:
            row_name = f"{label} minus {'exact' if reference == 'exact targets' else reference}, {name}"
            mine = arms[label][0]
            if mine and base and not (label in carried and reference in carried):
                table.append([row_name] + [_gap(mine[c], base[c]) if c in mine and c in base else None
                                           for c in columns])
            elif mine and row_name in previous_rows and (label in carried or not base):
                table.append(previous_rows[row_name])  # both sides kept: the row as it was collected
    notes = [f"DetCon-S (RC regions pooled in the loss, default policy), {steps} of 64 on the 10,000 CIFAR-10 "
             "train images. Linear probe and kNN on the frozen features at each share of the labels, 3 label "
             "seeds; ± the larger of the spread over label subsets and the std of the pretraining seeds' means. "
             "The surrogate trained for 25 minutes of wall time on one thread on 10,000 of the CIFAR-10 training "
             "images outside the pretraining set. Half exact, half surrogate: a "
             "cache holding the exact targets of half the pretraining images (chosen by content hash, "
             "experiments/partial_cache.py), the other half's from a surrogate trained by the same command "
             "(--aug-source cache,surrogate); a note below gives each arm's surrogate."
             + "".join(f" {label[0].upper()}{label[1:]}: {_ARM_NOTES[key]}" for label, key in _SURROGATE_ARMS.items()
                       if key in budget and key in _ARM_NOTES)
             + " A gap row is the difference of the means, ± the larger of the two rows' spreads."]
    missing = [label for label, rows in measured.items() if not rows and label not in carried]
    if missing:
        notes.append(f"Not measured at this budget: {', '.join(missing)}.")
    if carried:
        dates = _kept_dates(previous, measured)  # rows kept once already keep the date they were collected on
        by_date: dict[str, list[str]] = {}
        for label in measured:
            if label in carried:
                by_date.setdefault(dates.get(label, previous.get("date", "an earlier date")), []).append(label)
        notes.append(" ".join(f"{_KEPT}{date}, whose run folders were not collected again: {', '.join(labels)}."
                              for date, labels in by_date.items()))
    # each surrogate-fed arm's surrogate: its agreement now, or as recorded when its rows were kept
    recorded = _recorded_agreements(previous)
    agreements: dict[str, str] = {}
    for label, key in _SURROGATE_ARMS.items():
        if key not in budget:
            continue
        surrogate = _surrogate_behind(budget[key])
        fidelity = surrogate.parent / "test.json" if surrogate else None
        if label in carried and label in recorded:
            agreements[label] = recorded[label]
        elif label not in carried and measured[label] and fidelity and fidelity.is_file():
            agreements[label] = f"agreement with the exact targets of the {_agreement(fidelity)}"
    for text in dict.fromkeys(agreements.values()):  # arms that share a surrogate share a note
        notes.append(f"{_SURROGATE_OF}{' and '.join(a for a, t in agreements.items() if t == text)} rows: {text}")
    default_budget = args.steps == "624"
    write(result,
          f"CIFAR-10, {steps}: DetCon-S on the surrogate's targets against the exact targets",
          ["targets, protocol", *columns], table,
          ["bash experiments/surrogate_parity.sh" if default_budget else
           f"STEPS={args.steps} bash experiments/surrogate_parity.sh",
           "python experiments/collect_results.py parity" + ("" if default_budget else f" --steps {args.steps}")
           + (" --carry" if carried else "")],
          notes, args.date, args.machine)


# -- the baseline check: our default policy against lightly's SimCLRTransform ----------------------------
def baseline_stats(args) -> None:
    path = Path(args.runs) / "augmentation_stats.json"
    report = json.loads(path.read_text())
    settings, geometry = report["settings"], report["geometry_and_parameters"]
    rows = []
    for name, measures in report["colour_effect"].items():
        rows.append([name] + [round(measures[k]["mean"], 4) for k in ("d_luminance", "luminance_std_ratio",
                                                                      "chroma_ratio", "clipped")]
                    + [round(measures["gray"], 4)])
    crops, ks, resampling = geometry.get("crop_sizes", {}), geometry["ks"], report["resampling"]
    timing = report.get("timing", {})
    notes = [f"{settings['images']} CIFAR-10 train images at {settings['image_size']} px, batches of "
             f"{settings['batch_size']}, seed {settings['seed']}; lightly's SimCLRTransform with "
             f"cj_strength {settings['lightly']['cj_strength']}, min_scale {settings['lightly']['min_scale']}, no blur. "
             f"The colour part of each pipeline alone (no crop, no flip): mean change of luminance, ratio of luminance "
             f"deviation, ratio of chroma, change in the share of clipped values, share of grey views.",
             f"Crops: Kolmogorov-Smirnov p = {ks['crop_scale']['ks_pvalue']:.2f} (scale) and "
             f"{ks['crop_ratio']['ks_pvalue']:.2f} (aspect ratio) over the drawn views; chi-square p = "
             f"{crops.get('pvalue', float('nan')):.2f} over {crops.get('draws', 0):,} crop sizes of each generator. "
             f"Resampling of the same boxes: ours differs from PIL's by {resampling['ours_vs_pil']:.2f} grey levels, "
             f"torch's half-pixel interpolation by {resampling['half_pixel_vs_pil']:.2f}; a corner-aligned grid "
             f"would zoom x{resampling['corner_zoom']:.4f}."
             + (f" Two views of {timing['batch_size']} images on one thread: ours {timing['ours_ms']:.1f} ms, "
                f"lightly's {timing['lightly_ms']:.1f} ms." if timing else "")]
    write(Path(args.out) / "baseline_augmentation.json",
          "The default policy against lightly's SimCLRTransform: what the colour part does to the pixels",
          ["pipeline", "d luminance", "luminance std ratio", "chroma ratio", "d clipped", "grey views"], rows,
          [f"python experiments/lightly_baseline.py --stats --data {settings.get('data', 'DATA')} --batch-size "
           f"{settings['batch_size']} --stats-images {settings['images']} --json {path}",
           f"python experiments/collect_results.py baseline_stats --runs {args.runs}"],
          notes, settings.get("date", args.date), args.machine)


# -- the photo surrogate against human masks --------------------------------------------------------------
PHOTO_SETS = [("clothing_parsing", "Clothing Co-Parsing, 1,003 street photos, person masks"),
              ("weizmann_horses", "Weizmann horses, 328 photos"),
              ("weizmann_horses_b", "Weizmann horses, the 164 even-numbered photos"),
              ("salbench", "salbench, 36 photos")]
# what each training folder other than the photos alone holds (a note under the table)
PHOTO_DATA = {
    "photos_cifar5k": "the same 1,295 photos and 5,000 CIFAR-10 train images (500 a class, experiments/cifar_split.py "
                      "--skip 4500; their exact targets labelled at 64 px by the same default labeller), brought to "
                      "96 px.",
    "photos_horses_a": "the same 1,295 photos and the 164 odd-numbered Weizmann horses (experiments/link_folders.py "
                       "--part 0/2), with their exact targets; their human masks are never read.",
    "horses_a": "the 164 odd-numbered Weizmann horses alone, with their exact targets.",
}


#: The side the photo surrogate is trained and scored at unless a run says otherwise.
PHOTO_SIZE = 96

#: train-surrogate options a photo run's row names when its run.json sets them away from today's defaults: the
#: settings key, the flag (a switch for a boolean, named when it is off) and what the note under the table says of it.
#: The data, the side and the width are named in their own words; a key an older run.json lacks is not named.
PHOTO_OPTIONS = {"rotate": ("--no-rotate", "mirrors only, no quarter turns: the photos scored are all upright"),
                 "flip": ("--no-flip", "no mirrors"),
                 "lambda_mask": ("--lambda-mask", "the mask term's weight"),
                 "lambda_l1": ("--lambda-l1", "the saliency map's L1 weight"),
                 "lambda_boundary": ("--lambda-boundary", "the boundary term's weight"),
                 "boundary_pos_weight": ("--boundary-pos-weight", "the weight of boundary pixels"),
                 "lambda_gan": ("--lambda-gan", "the adversarial term's weight"),
                 "gan_mode": ("--gan-mode", "the adversarial loss"),
                 "lr": ("--lr", "the learning rate"),
                 "decay_start": ("--decay-start", "the share of the run before the rate decays"),
                 "batch_size": ("--batch-size", "pairs a step"),
                 "held_out": ("--held-out", "the share held out to choose the step kept"),
                 "limit": ("--limit", "training images"),
                 "seed": ("--seed", "the training seed"),
                 "ndf": ("--ndf", "the discriminator's width"),
                 "head": ("--head", "channels of the full-resolution head"),
                 "dropout_blocks": ("--dropout-blocks", "decoder blocks with dropout")}


def _photo_defaults() -> dict:
    """train-surrogate's default of each of :data:`PHOTO_OPTIONS`, as its run.json records them."""
    from saliencyssl.app.train_surrogate import TrainSurrogateConfig, surrogate_settings

    settings, _ = surrogate_settings(TrainSurrogateConfig(images=Path("."), cache=Path("."), out=Path(".")), "")
    return {key: settings[key] for key in PHOTO_OPTIONS}


def _photo_value(value) -> str:
    return "balanced" if value is None else value if isinstance(value, str) else f"{value:g}"


def _photo_options(settings: dict, defaults: dict) -> dict[str, str]:
    """Each of :data:`PHOTO_OPTIONS` a run set away from ``defaults``: its key and ``", --flag value"``."""
    out = {}
    for key, default in defaults.items():
        if key in settings and settings[key] != default:
            flag = PHOTO_OPTIONS[key][0]
            out[key] = f", {flag}" if isinstance(default, bool) else f", {flag} {_photo_value(settings[key])}"
    return out


#: The first note of the photo surrogate's table: of photo_surrogate.sh's and photo_surrogate_data.sh's runs, and of
#: photo_surrogate_domain.sh's, which score on the half of the horses no run trained on.
_PHOTO_NOTE = ("Trained on 1,295 photos without masks (clothing_parsing/unlabelled and bsds500_test) at {side} on one "
               "torch thread, for the optimiser steps in each row (15 minutes of wall time, or a step budget); scored "
               "at {side} on the centre crop against the human masks of three sets, no mask of which it trained on "
               "(one of the 1,003 street photos is also one of its training photos). Mask F-measure "
               "with beta^2 = 0.3, mask IoU, MAE of the saliency map (Cheng's conventions), means over the images.")
_PHOTO_DOMAIN_NOTE = ("Trained at 96 px on one torch thread for the optimiser steps in each row, on the 1,295 photos "
                      "without masks (clothing_parsing/unlabelled and bsds500_test) or on the data a row names; "
                      "scored at 96 px on the centre crop against human masks no surrogate trained on: the 164 "
                      "even-numbered Weizmann horses (experiments/link_folders.py --part 1/2), the street photos and "
                      "salbench. Mask F-measure with beta^2 = 0.3, mask IoU, MAE of the saliency map (Cheng's "
                      "conventions), means over the images.")


def photo_surrogate(args) -> None:
    from saliencyssl.surrogate.networks import Architecture

    root = Path(args.runs)
    runs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "run.json").is_file())
    records = {run: json.loads((run / "run.json").read_text()) for run in runs}
    defaults = _photo_defaults()
    optioned = any(_photo_options(record["settings"], defaults) for record in records.values())
    # experiments/labeller_at_input.py's folders: the labeller on the S px crop the surrogate is given
    at_input = sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"at_input_\d+", p.name)),
                      key=lambda p: int(p.name.rsplit("_", 1)[1]))
    sizes = {record["settings"].get("image_size", PHOTO_SIZE) for record in records.values()}
    sizes |= {int(p.name.rsplit("_", 1)[1]) for p in at_input}
    at_size = (lambda size: f", scored at {size} px") if sizes - {PHOTO_SIZE} else (lambda size: "")
    rows, commands = [], []  # commands: each run's training command
    exact_done = set()

    def add_references(name: str, label: str, scores: dict, size: int) -> None:
        if (name, size) not in exact_done:  # the labeller and the box once per set and size
            exact_done.add((name, size))
            for key, who in (("exact", "exact SaliencyCut"), ("centre_box", "centred box (image-blind)")):
                e = scores[key]
                rows.append([label, who + at_size(size), scores["n"], round(e["f"], 4), round(e["iou"], 4),
                             round(e["mae"], 4), size])

    for run in runs:
        record = records[run]
        history = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
        variants = record["settings"].get("variants", {}).get("count", 0)
        size = record["settings"].get("image_size", PHOTO_SIZE)
        commands.append("saliency-ssl " + " ".join(record["history"][0]["command"][1:]))
        steps = _steps_run(record, history)
        for name, label in PHOTO_SETS:
            path = run / f"{name}.json"
            if not path.is_file():
                continue
            scores = json.loads(path.read_text())["vs_masks"]
            add_references(name, label, scores, size)
            s = scores["surrogate"]
            data = Path(record["settings"].get("data", "")).name
            trained = "" if data in ("", "photos_unlabelled") else f", trained on {data}"
            ngf = record["settings"].get("ngf", Architecture.ngf)
            trained += "" if ngf == Architecture.ngf else f", ngf {ngf}"
            trained += "" if size == PHOTO_SIZE else f", {size} px"
            trained += "".join(_photo_options(record["settings"], defaults).values())
            rows.append([label, f"surrogate, {variants} variants a photo, {steps} steps{trained}", scores["n"],
                         round(s["f"], 4), round(s["iou"], 4), round(s["mae"], 4), size])
    for folder in at_input:
        size = int(folder.name.rsplit("_", 1)[1])
        for name, label in PHOTO_SETS:
            path = folder / f"{name}.json"
            if path.is_file():
                scores = json.loads(path.read_text())
                add_references(name, label, scores, size)
                s = scores["at_input"]
                rows.append([label, f"exact SaliencyCut on the {size} px input", scores["n"], round(s["f"], 4),
                             round(s["iou"], 4), round(s["mae"], 4), size])
    # by set, then by side (a row's last value, dropped here); in each, the references, the runs, the labeller on
    # the input
    rows.sort(key=lambda r: ([n for n, _ in PHOTO_SETS].index(next(n for n, l in PHOTO_SETS if l == r[0])), r[-1]))
    rows = [row[:-1] for row in rows]
    # which experiment made the runs: the domain one scores the held-out horses, the data one trains on CIFAR photos
    domain = any(row[0] == dict(PHOTO_SETS)["weizmann_horses_b"] for row in rows)
    script = ("photo_surrogate_domain.sh" if domain else "photo_surrogate_size.sh" if at_input or sizes - {PHOTO_SIZE}
              else "photo_surrogate_options.sh" if optioned
              else "photo_surrogate_data.sh" if any(", trained on photos_cifar5k" in row[1] for row in rows)
              else "photo_surrogate.sh")
    commands = [f"bash experiments/{script}", *commands,
                "saliency-ssl fidelity ../shared/data/SET/images --cache CACHE --surrogate RUN/surrogate.pt "
                "--masks ../shared/data/SET/masks --json RUN/SET.json"]
    commands += [f"python experiments/labeller_at_input.py ../shared/data/SET/images ../shared/data/SET/masks --cache "
                 f"CACHE --size {p.name.rsplit('_', 1)[1]} --json {p}/SET.json" for p in at_input]
    if domain:
        commands.append("saliency-ssl fidelity runs/data/horses_b --cache CACHE --surrogate RUN/surrogate.pt --masks "
                        "../shared/data/weizmann_horses/masks --json RUN/weizmann_horses_b.json")
    side = f"{PHOTO_SIZE} px" if not sizes - {PHOTO_SIZE} else f"the side each row names ({PHOTO_SIZE} px unless it says)"
    notes = [_PHOTO_DOMAIN_NOTE if domain else _PHOTO_NOTE.format(side=side)]
    if sizes - {PHOTO_SIZE}:
        notes.append(f"A row at another side than {PHOTO_SIZE} px is trained, or scored, at that side: images, "
                     f"targets and human masks brought to it on the centre crop, so the labeller's rows differ by "
                     f"side too.")
    used = [key for key in PHOTO_OPTIONS
            if any(key in _photo_options(record["settings"], defaults) for record in records.values())]
    if used:
        notes.append("Options away from train-surrogate's defaults: " + "; ".join(
            f"{PHOTO_OPTIONS[key][0]}, {PHOTO_OPTIONS[key][1]}"
            + ("" if isinstance(defaults[key], bool) else f" (default {_photo_value(defaults[key])})")
            for key in used) + ".")
    if at_input:
        notes.append("Exact SaliencyCut on the S px input: the same labeller (saliency-ssl label's defaults) run on "
                     "the very S x S centre crop the surrogate is given, instead of the whole photo "
                     "(experiments/labeller_at_input.py).")
    name_option = "" if args.name == "photo_surrogate" else f" --name {args.name}"
    collect = f"python experiments/collect_results.py photo_surrogate --runs {args.runs}{name_option}"
    for data, text in PHOTO_DATA.items():
        if any(f", trained on {data}" in row[1] for row in rows):
            notes.append(f"{data}: {text}")
    for ngf in sorted({int(m[1]) for row in rows if (m := re.search(r", ngf (\d+)", row[1]))}):
        notes.append(f"ngf {ngf}: the U-Net at {ngf / Architecture.ngf:g} times the default width (--ngf {ngf}; "
                     f"about {(ngf / Architecture.ngf) ** 2:g} times the multiply-adds), the same steps and data.")
    bench, labeller = root / "bench_surrogate.json", root / "bench_labeller.json"
    if rows:
        write(Path(args.out) / f"{args.name}.json", "The photo surrogate and the exact labeller against human masks",
              ["set", "segmenter", "images", "F (beta^2 = 0.3)", "IoU", "MAE"], rows,
              commands + [collect], notes, args.date, args.machine)
    elif not (bench.is_file() and labeller.is_file()):
        sys.exit(f"error: {root} holds no scored surrogate run (RUN/run.json beside RUN/SET.json) and no "
                 f"bench_surrogate.json with bench_labeller.json; run experiments/photo_surrogate.sh first")
    if bench.is_file() and labeller.is_file():
        b, lab = json.loads(bench.read_text()), json.loads(labeller.read_text())
        original = _labeller_ms(lab)
        surrogate = b["surrogate_ms_per_image"]
        speed = [["exact labeller, original photo (HC + RC + SaliencyCut, medians)", lab["images"], round(original, 1),
                  round(original / surrogate, 1)],
                 [f"exact labeller at {b['image_size']} px", b["labeller_images"], round(b["labeller_ms_per_image"], 2),
                  round(b["labeller_ms_per_image"] / surrogate, 1)],
                 [f"surrogate at {b['image_size']} px, batches of {b['batch_size']} ({b['autocast']} autocast), "
                  f"network + regions", b["num_images"], round(surrogate, 3), 1.0],
                 ["  of which the network", b["num_images"], round(b["surrogate_network_ms_per_image"], 3), None],
                 ["  of which the regions", b["num_images"], round(b["surrogate_regions_ms_per_image"], 3), None]]
        speed_file = Path(args.out) / f"{args.name}_speed.json"
        measured_on = b.get("date", args.date)  # the benchmark's own date where it records one
        before = _earlier_speed(speed_file, speed, measured_on)
        write(speed_file,
              "Time per image: the exact labeller against the photo surrogate, one CPU thread",
              ["labelling", "images", "ms per image", "x the surrogate's time"], speed,
              [f"python benchmarks/bench_surrogate.py --data ../shared/data/clothing_parsing/images --image-size "
               f"{b['image_size']} --num-images {b['num_images']} --batch-size {b['batch_size']} --labeller-images "
               f"{b['labeller_images']} --surrogate RUN/surrogate.pt --threads 1 --json {bench}",
               f"python benchmarks/bench_labeller.py ../shared/data/clothing_parsing/images --engines faithful "
               f"--limit {lab['images']} --json {labeller}",
               collect],
              ["Clothing Co-Parsing photos; the exact labeller one image at a time as a labelling worker runs it, "
               "the surrogate on batches. Medians"
               + (f"; one-minute load average {b['load_average_before_after'][0]:g} before the surrogate's timing and "
                  f"{b['load_average_before_after'][1]:g} after it (the benchmark's own thread counts 1)."
                  if "load_average_before_after" in b else "; measured while other jobs shared the machine.")]
              + ([f"The network does {b['network_mflop_per_image']:.0f} MFLOP per image (torch's FLOP counter, in "
                  f"float32), at {b['network_gflop_per_second']:.0f} GFLOP/s here."]
                 if "network_mflop_per_image" in b else [])
              + before,
              measured_on, args.machine)


_EARLIER = "The same commands on "


def _earlier_speed(path: Path, speed: list[list], date: str) -> list[str]:
    """A note keeping the measurement a speed file held before this one (another day's), so a new measurement on a
    machine whose speed varies does not silently replace the figures the docs cited: the labeller's and the
    surrogate's ms per image and their ratio, and how busy the machine was. Collected again on the same day, or
    from the same bench files, the file keeps the note it had; the earlier file's own earlier note is not kept (one
    measurement back)."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    rows = earlier.get("rows", [])
    notes = earlier.get("notes", [])
    same = len(rows) >= 3 and [rows[0][2], rows[2][2]] == [speed[0][2], speed[2][2]]  # the same bench files again
    if earlier.get("date") == date or len(rows) < 3 or same:  # a collection again keeps what it kept
        return [n for n in notes if n.startswith(_EARLIER)]
    load = next((m for n in notes if (m := re.search(r"load average ([\d.]+) before the surrogate's timing and "
                                                      r"([\d.]+) after", n))), None)
    context = (" (other jobs sharing the machine)" if any("other jobs shared the machine" in n for n in notes) else
               f" (load average {load[1]} to {load[2]})" if load else "")
    return [f"{_EARLIER}{earlier['date']}{context}: the labeller {rows[0][2]:g} ms on the original photo, the "
            f"surrogate {rows[2][2]:g} ms, {rows[0][3]:g} times."]


def _labeller_ms(bench: dict) -> float:
    """The exact labeller's ms per image in a bench_labeller.json: the medians of HC, RC and the faithful cut."""
    return sum(bench["seconds"][k]["median"] for k in ("hc", "rc", "cut_faithful")) * 1000


def _measured(bench: dict, args, how: str) -> tuple[str, str]:
    """The date and machine a benchmark recorded (the collection's, for files of older versions), unless --date or
    --machine say otherwise; ``how`` says how it ran."""
    cpu = bench.get("cpu") or bench.get("machine") or cpu_name()
    machine = args.machine_given or f"{cpu} ({bench.get('cores') or os.cpu_count()} cores), {how}, no GPU"
    return (args.date if args.date_given else bench.get("date", args.date)), machine


# -- the exact labeller against Cheng's C++ -------------------------------------------------------------
def labeller(args) -> None:
    """From ``bench_labeller.json`` of ``benchmarks/bench_labeller.py`` run with ``--reference`` and ``--gt`` on the
    salbench photos: agreement with the C++ outputs, time per stage beside the C++'s, F against the human masks."""
    root = Path(args.runs)
    bench = root / "bench_labeller.json"
    if not bench.is_file():
        sys.exit(f"error: no {bench}; run the benchmark first (the command is in results/labeller_cpp.json)")
    b = json.loads(bench.read_text())
    accuracy = b.get("accuracy_vs_gt", {})
    if "agreement_with_cpp" not in b or "ours" not in accuracy or "cpp" not in accuracy:
        sys.exit(f"error: {bench} was measured without --reference or --gt; both are needed")
    agree, ours, cpp = b["agreement_with_cpp"], accuracy["ours"], accuracy["cpp"]
    here = {k: b["seconds"][k]["median"] * 1000 for k in ("hc", "rc", "cut_faithful")}
    there = {k: v * 1000 for k, v in b["cpp_seconds_median"].items()}

    def map_agreement(diff: float) -> str:
        return "identical" if diff == 0 else f"mean difference {diff * 255:.1e} grey levels a pixel"

    rows = [["HC map", map_agreement(agree["hc_mean_abs_diff"]), round(here["hc"], 1), round(there["hc"], 1),
             round(ours["hc"]["max_f"], 3), round(cpp["hc"]["max_f"], 3)],
            ["RC map", map_agreement(agree["rc_mean_abs_diff"]), round(here["rc"], 1), round(there["rc"], 1),
             round(ours["rc"]["max_f"], 3), round(cpp["rc"]["max_f"], 3)],
            ["SaliencyCut mask", f"IoU {agree['cut_faithful_iou_mean']:.3f} (least {agree['cut_faithful_iou_min']:.3f})",
             round(here["cut_faithful"], 1), round(there["saliencycut"], 1), round(ours["cut_faithful"]["f"], 3),
             round(cpp["cut"]["f"], 3)],
            ["all three", "", round(_labeller_ms(b), 1), round(sum(there.values()), 1), None, None]]
    write(Path(args.out) / "labeller_cpp.json",
          f"The exact labeller against Cheng's C++ on the {b['images']} salbench photos",
          ["stage", "agreement with the C++", "ms here (median)", "ms, C++ (median)", "F against human masks",
           "F, C++"], rows,
          [f"python benchmarks/bench_labeller.py ../shared/data/salbench/images --reference "
           f"../shared/data/salbench/cheng_cpp --gt ../shared/data/salbench/masks --engines faithful --json {bench}",
           f"python experiments/collect_results.py labeller --runs {args.runs}"],
          ["The C++ outputs and times come with the data (salbench/cheng_cpp): Cheng's CmCode at its default "
           "parameters, built with OpenCV 4.6 and timed on a 2-core x86-64 machine its provenance does not name "
           "further (its HC time includes some start-up cost), so the two time columns may compare two machines. "
           "Here: one image at a time, the faithful cut engine, after one untimed image.",
           "F with beta^2 = 0.3 (Cheng's CmEvaluation): for the maps the largest over 256 thresholds, for the mask "
           "from its precision and recall averaged over the images."],
          *_measured(b, args, "one image at a time on one core"))


# -- the surrogate's network at narrower widths, against the labeller on the original photos -----------------
def surrogate_width(args) -> None:
    """From ``bench_surrogate_ngf<N>.json`` (``benchmarks/bench_surrogate.py --ngf N``, fresh networks at 96 px, one
    thread, the labeller not timed) and ``bench_labeller.json`` (the labeller on the original street photos) of one
    folder, measured one after the other: the network's time per image at each width against the labeller's."""
    from saliencyssl.surrogate.networks import Architecture

    root = Path(args.runs)
    benches = sorted(root.glob("bench_surrogate_ngf*.json"), key=lambda p: int(p.stem.rsplit("ngf", 1)[1]))
    labeller_file = root / "bench_labeller.json"
    if not benches or not labeller_file.is_file():
        sys.exit(f"error: {root} needs bench_surrogate_ngf<N>.json files and bench_labeller.json (the commands are in "
                 f"results/surrogate_width.json)")
    lab = json.loads(labeller_file.read_text())
    original = _labeller_ms(lab)
    rows, commands, size = [], [], None
    for path in benches:
        b = json.loads(path.read_text())
        ngf, size = b["arch"]["ngf"], b["image_size"]
        net = b["surrogate_network_ms_per_image"]
        rows.append([f"ngf {ngf}" + (" (the default)" if ngf == Architecture.ngf else ""),
                     round(b["network_mflop_per_image"], 1), round(b["network_gflop_per_second"], 1), round(net, 3),
                     round(original / net, 1)])
        commands.append(f"python benchmarks/bench_surrogate.py --data ../shared/data/clothing_parsing/images "
                        f"--image-size {size} --num-images {b['num_images']} --batch-size {b['batch_size']} "
                        f"--labeller-images 0 --ngf {ngf} --threads 1 --json {path}")
        autocast = b["autocast"]
    commands += [f"python benchmarks/bench_labeller.py ../shared/data/clothing_parsing/images --engines faithful "
                 f"--limit {lab['images']} --json {labeller_file}",
                 f"python experiments/collect_results.py surrogate_width --runs {args.runs}"]
    write(Path(args.out) / "surrogate_width.json",
          f"The surrogate's network at {size} px by width, against the exact labeller on the original photo, "
          f"one CPU thread",
          ["generator width", "MFLOP per image", "GFLOP/s", "network ms per image",
           "x the labeller's time (network alone)"],
          rows, commands,
          [f"Fresh generators of each width (their cost does not depend on their weights), batches of "
           f"{b['batch_size']}, {autocast} autocast, medians; the labeller: HC + RC + SaliencyCut on {lab['images']} "
           f"original Clothing Co-Parsing photos one by one, {original:.0f} ms (medians), measured after them.",
           "The last column leaves the regions out (0.3 ms an image at 96 px for the trained default surrogate, "
           "results/photo_surrogate_speed.json): it bounds what a width can give from above."],
          *_measured(b, args, "one thread"))


# -- the speed benchmarks on a CPU: scale-out, the router, the epoch ---------------------------------------------
def _bench(root: Path, name: str) -> dict:
    path = root / name
    if not path.is_file():
        sys.exit(f"error: no {path}; run the experiment that writes it first (experiments/cpu_speed.sh or "
                 f"experiments/gpu_speed.sh run)")
    return json.loads(path.read_text())


def cpu_speed(args) -> None:
    """From the JSON files of ``experiments/cpu_speed.sh OUT``: results/scale_cpu.json (the pool against Dask),
    results/pack_cpu.json (a cache folder against a pack file), results/router_cpu.json (augmentation per batch by
    target source) and results/epoch_cpu.json (SimCLR's epoch by target source)."""
    root = Path(args.runs)
    scale, epoch = _bench(root, "bench_scale.json"), _bench(root, "bench_epoch.json")
    routers = {size: _bench(root, f"bench_router{size}.json") for size in (32, 96)}
    script = f"bash experiments/cpu_speed.sh {args.runs}"
    collect = f"python experiments/collect_results.py cpu_speed --runs {args.runs}"
    machine = _measured(scale, args, "nothing else running")

    rates = scale["labelling_images_per_second"]
    rows = [["process pool", 1, round(rates["pool_1"], 2), 1.0],
            ["process pool", 2, round(rates["pool_2"], 2), round(rates["pool_2_vs_1"], 2)],
            ["Dask LocalCluster", 1, round(rates["dask_1"], 2), round(rates["dask_1"] / rates["pool_1"], 2)],
            ["Dask LocalCluster", 2, round(rates["dask_2"], 2), round(rates["dask_2"] / rates["pool_1"], 2)]]
    write(Path(args.out) / "scale_cpu.json", f"Labelling throughput by executor, {rates['images']} salbench photos",
          ["executor", "workers", "images per second", "x the pool with 1 worker"], rows,
          [script, collect],
          [f"Dask against the pool at equal workers: {rates['dask_vs_pool_1']:.2f} (1 worker), "
           f"{rates['dask_vs_pool_2']:.2f} (2 workers). Each executor labels the same photos into an empty cache "
           f"with warm workers (benchmarks/bench_scale.py); one run, one after the other."],
          *machine)

    pack = scale["pack_vs_cache"]
    rows = [["cache folder (diskcache)", round(pack["cache_dir_bytes"] / 1e6, 1),
             round(pack["frozen_pack_from_cache_seconds"], 2)],
            ["pack file (cache export)", round(pack["pack_bytes"] / 1e6, 1),
             round(pack["frozen_pack_from_pack_file_seconds"], 3)]]
    write(Path(args.out) / "pack_cpu.json",
          f"The targets of {pack['images']:,} CIFAR-10 images at 32 px: a cache folder against a pack",
          ["held in", "MB on disk", "seconds to a frozen pack"], rows, [script, collect],
          ["The cache folder holds each target as labelled, compressed; the pack holds them at 32 px, raw and "
           "memory-mapped. From the cache every entry is read and decoded; from the pack the rows are mapped "
           "(its checksum verified)."],
          *machine)

    sources = [s for s in ("none", "cache", "surrogate", "exact") if s in routers[32]["seconds_per_batch"]]
    rows = []
    for source in sources:
        row = [source]
        for size in (32, 96):
            b = routers[size]
            row += [round(b["seconds_per_batch"][source] * 1000, 1), round(b["ratio_to_none"][source], 2)]
        rows.append(row)
    r32 = routers[32]
    write(Path(args.out) / "router_cpu.json",
          f"Targets and views per batch of {r32['batch_size']} by target source ({r32['policy']}, two views)",
          ["source", "ms per batch, 32 px", "x none, 32 px", "ms per batch, 96 px", "x none, 96 px"], rows,
          [script, collect],
          [f"Medians over the timed batches (exact: 3), sources interleaved, on {r32['num_images']:,} CIFAR-10 "
           f"train images (brought to 96 px for the second pair of columns; exact labels the 32 px originals); "
           f"none is the policy without its "
           f"saliency view. The surrogate is a fresh one of the default architecture. Frozen-pack gathers: "
           f"{r32['pack_gather_images_per_second'] / 1e6:.1f} M images/s at 32 px, "
           f"{routers[96]['pack_gather_images_per_second'] / 1e6:.1f} M at 96 px. {r32['device']}."],
          *machine)

    rows = []
    for source in epoch["sources"]:
        split = epoch["seconds_split"][source]
        rows.append([source, round(epoch["seconds_per_epoch"][source], 2), round(split["data"], 2),
                     round(split["augmentation"], 2), round(split["compute"], 2),
                     round(epoch["ratio_to_none"][source], 2) if "ratio_to_none" in epoch else None])
    write(Path(args.out) / "epoch_cpu.json",
          f"An epoch of pretraining (--method {epoch['method']}) by target source: {epoch['num_images']} CIFAR-10 "
          f"images at "
          f"{epoch['image_size']} px, batch {epoch['batch_size']}",
          ["source", "seconds per epoch", "data", "augmentation", "compute", "x none"], rows, [script, collect],
          [f"Policy {epoch['policy']} (none: without its saliency view); each source {epoch['epochs']} epochs a "
           f"round, the first a warm-up, {len(epoch['rounds'])} rounds in rotated order; medians over the rounds, "
           f"the ratio taken within each round. exact labels each batch in {epoch['workers']} worker processes; the "
           f"surrogate is a fresh one of the default architecture. The sources differ in the augmentation column; "
           f"the compute column drifts with the machine between epochs. {epoch['device']}."],
          *_measured(epoch, args, "nothing else running"))


# -- the speed aims on a GPU: experiments/gpu_speed.sh ------------------------------------------------------------
def _met(value: float, limit: float, at_most: bool) -> str:
    return "yes" if (value <= limit if at_most else value >= limit) else "no"


def gpu_speed(args) -> None:
    """From the OUT folder of ``experiments/gpu_speed.sh run``: the issue's speed aims, measured and met or not, in
    results/speed_gpu.json (``--name`` another stem, e.g. for a CPU smoke run)."""
    root = Path(args.runs)
    sal, detcon = _bench(root, "epoch_sal.json"), _bench(root, "epoch_detcon.json")
    speed = {size: _bench(root, f"speed{size}.json") for size in (32, 96)}
    labeller_ms = _labeller_ms(_bench(root, "labeller.json"))
    ratio = sal["ratio_to_none"]
    detcon_ratio = float(np.median([rd["surrogate"]["epoch"] / rd["cache"]["epoch"] for rd in detcon["rounds"]]))
    rows = [[f"SimCLR ({sal['policy']}) epoch from the cache / without targets", round(ratio["cache"], 3),
             "at most 1.05", _met(ratio["cache"], 1.05, True)],
            [f"SimCLR ({sal['policy']}) epoch from the surrogate / without targets", round(ratio["surrogate"], 3),
             "at most 1.15", _met(ratio["surrogate"], 1.15, True)],
            ["DetCon-S epoch from the surrogate / from the cache", round(detcon_ratio, 3), "", ""]]
    for size in (32, 96):
        b = speed[size]
        over = b["surrogate_regions_ms_per_image"] / b["surrogate_network_ms_per_image"]
        rows.append([f"the surrogate's regions / its network at {size} px", round(over, 3), "at most 1",
                     _met(over, 1.0, True)])
    photo = labeller_ms / speed[96]["surrogate_ms_per_image"]
    rows.append(["labelling an original street photo / the surrogate at 96 px", round(photo, 1), "at least 1,000",
                 _met(photo, 1000, False)])
    card = speed[32].get("device_name") or speed[32]["device"]
    write(Path(args.out) / f"{args.name}.json", f"The speed aims on {card}",
          ["measure", "measured", "aim", "met"], rows,
          ["bash experiments/gpu_speed.sh stage", f"OUT={args.runs} bash experiments/gpu_speed.sh run",
           f"python experiments/collect_results.py gpu_speed --runs {args.runs}"],
          [f"Epochs: {sal['num_images']:,} CIFAR-10 images at {sal['image_size']} px, batch {sal['batch_size']}, "
           f"{'float16 autocast' if sal['amp'] else 'float32'}, {len(sal['rounds'])} rounds of {sal['epochs']} "
           f"epochs (the first a warm-up), sources in rotated order, medians of the ratios within rounds; trained "
           f"surrogates ({sal['surrogate']}). Surrogate time per image: batches of {speed[32]['batch_size']} at "
           f"32 px and {speed[96]['batch_size']} at 96 px, medians. The labeller: HC + RC + SaliencyCut on the "
           f"original photos one by one on the CPU ({labeller_ms:.0f} ms), against the surrogate's "
           f"{speed[96]['surrogate_ms_per_image']:.3f} ms at 96 px on the device. torch {speed[32]['torch']}."],
          args.date if args.date_given else speed[32].get("date", args.date),
          args.machine_given or f"{card}; CPU {speed[32].get('cpu', '')}")


# -- the test suite: how long it takes --------------------------------------------------------------------
def test_suite(args) -> None:
    """From pytest's own summary line (``pytest -q | tee pytest.log``), or from a JUnit XML file."""
    import re

    root = Path(args.runs)
    log = root / "pytest.log"
    text = log.read_text(errors="replace")
    summary = [line for line in text.splitlines() if re.search(r"\d+ passed.* in [\d.]+s", line)][-1]

    def count(word: str) -> int:
        found = re.search(rf"(\d+) {word}", summary)
        return int(found.group(1)) if found else 0

    seconds = float(re.search(r" in ([\d.]+)s", summary).group(1))
    passed, skipped, failed = count("passed"), count("skipped"), count("failed") + count("error")
    reasons = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.+)", text)))
    rows = [["whole suite", passed + skipped + failed, passed, skipped, failed, f"{seconds / 60:.1f}"]]
    notes = [f"Skipped: {'; '.join(reasons)}." if reasons else "Nothing skipped.",
             "The time is pytest's own, of the whole suite on a fresh clone with the data folder beside it, slow "
             "tests included; the machine line says what else ran."]
    write(Path(args.out) / "test_suite.json", "The test suite on a fresh clone",
          ["suite", "tests", "passed", "skipped", "failed", "minutes"], rows,
          [f".venv/bin/python -m pytest -q -rs | tee {log}",
           f"python experiments/collect_results.py test_suite --runs {args.runs}"], notes, args.date, args.machine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("mask_aware_cifar10", "photos", "surrogate_curve", "surrogate_shapes",
                                               "baseline_stats", "photo_surrogate", "test_suite",
                                               "mask_aware_controls", "parity", "surrogate_gpu",
                                               "surrogate_regions", "labeller", "surrogate_width", "cpu_speed",
                                               "gpu_speed"))
    parser.add_argument("--runs", default=None, help="the experiment's run folder")
    parser.add_argument("--config", nargs="+", default=None,
                        help="mask_aware_cifar10 (required): its grid config(s); several configs that differ only "
                             "in their pretraining seeds are pooled")
    parser.add_argument("--steps", choices=tuple(PARITY_BUDGETS), default="624",
                        help="parity: the pretraining budget whose configs are compared (default %(default)s)")
    parser.add_argument("--carry", action="store_true",
                        help="parity: an arm whose run folders are absent keeps its rows from the result file this "
                             "collection replaces (the notes say which, and their date)")
    parser.add_argument("--name", default=None,
                        help="mask_aware_cifar10: the result files' stem, NAME_linear.json, NAME_knn_gap.json, ... "
                             "(default mask_aware_cifar10); photo_surrogate: NAME.json and NAME_speed.json (default "
                             "photo_surrogate)")
    parser.add_argument("--out", default="results", help="where the result files go (default %(default)s)")
    parser.add_argument("--date", default=None,
                        help="default: the date a benchmark recorded (labeller, surrogate_width), else today")
    parser.add_argument("--machine", default=None, help="default: this CPU, 2 cores, one torch thread per run")
    args = parser.parse_args(argv)
    if args.experiment == "mask_aware_cifar10" and not args.config:
        parser.error("mask_aware_cifar10 needs --config: the grid configs whose cells it tabulates (the commands in "
                     "results/mask_aware_cifar10_linear.json name them)")
    args.name = args.name or {"photo_surrogate": "photo_surrogate", "gpu_speed": "speed_gpu"}.get(args.experiment,
                                                                                                  "mask_aware_cifar10")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        parser.error(f"--name {args.name!r}: a file stem of letters, digits, '_', '.' and '-' (no folder)")
    args.machine_given = args.machine
    args.date_given, args.date = args.date is not None, args.date or time.strftime("%Y-%m-%d")
    args.machine = args.machine or f"{cpu_name()} ({os.cpu_count()} cores), one torch thread per run, no GPU"
    {"mask_aware_cifar10": mask_aware_cifar10, "photos": photos, "surrogate_curve": surrogate_curve,
     "surrogate_shapes": surrogate_shapes, "baseline_stats": baseline_stats,
     "photo_surrogate": photo_surrogate, "test_suite": test_suite,
     "mask_aware_controls": mask_aware_controls, "parity": parity,
     "surrogate_gpu": surrogate_gpu, "surrogate_regions": surrogate_regions,
     "labeller": labeller, "surrogate_width": surrogate_width, "cpu_speed": cpu_speed,
     "gpu_speed": gpu_speed}[args.experiment](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
