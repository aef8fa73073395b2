#!/usr/bin/env python
"""Run an experiment grid (methods x policies x label fractions) from one JSON config, resumably.

Every cell is pretrained with scripts/pretrain.py's loop and evaluated with scripts/evaluate.py's
protocols; finished cells are skipped, so an interrupted grid continues where it stopped. The
results table (grid_results.csv / .md) and the paper-style plots (one line per policy, accuracy
against label fraction; grid_<method>_<protocol>.png) are written to the config's "out" folder;
a config with an "evaluation_name" names them after it instead of "grid".

Configs shipped in configs/:
  grid_cifar10_cpu.json            the paper's CIFAR-10 comparison, SimCLR x 4 policies, 114 steps
                                   (about 25 min on 2 free CPU cores)
  grid_cifar10_cpu_long.json       the same at 312 steps on all 10,000 train images (about 40 min)
  grid_cifar10_cpu_8ep.json        default vs sal+default at 1,248 steps (about an hour per cell)
  grid_cifar10_gpu.json            the same at the paper's budget (100 epochs) for a GPU
  learning_cifar10_cpu.json        each of the six methods, 114 steps, kNN and linear probe
  learning_cifar10_cpu_long.json   each of the six methods, 312 steps (about 11 min per method)
  learning_cifar10_gpu.json        each of the six methods, 100 epochs, for a GPU

Examples:
  python scripts/run_grid.py configs/grid_cifar10_cpu.json
  python scripts/run_grid.py configs/grid_cifar10_cpu.json --collect-only     (table and plots from finished cells)
"""

from __future__ import annotations

import argparse
import sys

from saliencyssl.eval.grid import GridConfig, collect, run_grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="grid JSON file")
    parser.add_argument("--collect-only", action="store_true", help="only gather finished cells into the table and plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        config = GridConfig.load(args.config)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = collect(config) if args.collect_only else run_grid(config, progress=not args.quiet)
    print(f"\n{len(rows)} result rows; table: {config.out}/{config.results_stem}_results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
