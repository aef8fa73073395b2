#!/usr/bin/env python
"""Run an experiment grid (methods x policies x label fractions) from one JSON config, resumably.

Every cell is pretrained with scripts/pretrain.py's loop and evaluated with scripts/evaluate.py's
protocols; finished cells are skipped, so an interrupted grid continues where it stopped. The
results table (grid_results.csv / .md) and the paper-style plots (one line per policy, accuracy
against label fraction; grid_<method>_<protocol>.png) are written to the config's "out" folder;
a config with an "evaluation_name" names them after it instead of "grid", one with a "results_name"
after that. Config keys: docs/evaluation.md, "Grid config files".

Configs shipped in configs/:
  grid_cifar10_cpu.json            the paper's CIFAR-10 comparison, SimCLR x 4 policies, 114 steps
                                   (about 25 min on 2 free CPU cores)
  grid_cifar10_cpu_long.json       the same plus BYOL with default, at 312 steps on all 10,000 train
                                   images (about 10 min a cell)
  grid_cifar10_cpu_8ep.json        default, sal+default and sal0.5+default at 1,248 steps, pretraining
                                   seeds 0 and 1 (six runs of about 55 min)
  grid_cifar10_cpu_cutview.json    the cut view against the painted segments at 312 steps (shares
                                   grid_cifar10_cpu_long.json's folder; its table is grid_cutview_*)
  grid_cifar10_cpu_8ep_cutview.json  default, sal+default and the cut view at 1,248 steps, pretraining
                                   seeds 0 and 1
  grid_cifar10_gpu.json            grid_cifar10_cpu.json's four policies at the paper's budget
                                   (100 epochs) for a GPU
  learning_cifar10_cpu.json        each of the six methods, 114 steps, kNN and linear probe
  learning_cifar10_cpu_long.json   each of the six methods, 312 steps (about 11 min per method)
  learning_cifar10_gpu.json        each of the six methods, 100 epochs, for a GPU

Examples:
  python scripts/run_grid.py configs/grid_cifar10_cpu.json
  python scripts/run_grid.py configs/grid_cifar10_cpu.json --collect-only     (table and plots from finished cells)
  python scripts/run_grid.py configs/grid_cifar10_cpu.json --list             (the cells and how far each got)

Cells in parallel (two processes of one thread each on a 2-core machine, then one plain run for the
baselines and the table):
  OMP_NUM_THREADS=1 python scripts/run_grid.py CONFIG --only simclr__default &
  OMP_NUM_THREADS=1 python scripts/run_grid.py CONFIG --only simclr__sal_plus_default &
  wait; python scripts/run_grid.py CONFIG
"""

from __future__ import annotations

import argparse
import sys

from saliencyssl.augment import MissingPieceError
from saliencyssl.eval.grid import GridConfig, cell_state, cells, collect, run_grid, select_cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="grid JSON file")
    parser.add_argument("--collect-only", action="store_true", help="only gather finished cells into the table and plots")
    parser.add_argument("--only", metavar="CELL[,CELL...]",
                        help="run only these cells (names as --list shows them, e.g. simclr__default__seed1), "
                             "without the baselines and the table: for running a grid's cells in parallel")
    parser.add_argument("--list", action="store_true", help="list the cells' names and whether each is done")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        config = GridConfig.load(args.config)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list:
        from pathlib import Path

        for name, folder in (("out", config.out), ("train", config.train), ("test", config.test),
                             ("cache", config.cache)):  # relative paths are read from this working folder
            where = Path(folder).resolve()
            missing = name in ("train", "test") and not where.exists()
            print(f"{name:<6}{where}" + ("   MISSING (the config's paths are relative to the working folder)"
                                         if missing else ""))
        width = max((len(cell.name) for cell in cells(config)), default=0) + 2
        for cell in cells(config):
            print(f"{cell.name:<{width}}{cell_state(config, cell)}")
        return 0
    if args.collect_only:
        rows = collect(config)
    else:
        only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
        try:
            select_cells(config, only or [])
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        try:
            rows = run_grid(config, progress=not args.quiet, only=only)
        except (MissingPieceError, OSError, ValueError) as error:  # StaleCellError too: it names the fix
            print(f"error: {error}", file=sys.stderr)
            return 2
        if only is not None:
            print(f"\nran {', '.join(only)}; run {args.config} without --only for the baselines and the table")
            return 0
    print(f"\n{len(rows)} result rows; table: {config.out}/{config.results_stem}_results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
