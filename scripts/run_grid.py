#!/usr/bin/env python
"""Run an experiment grid (methods x policies x label fractions) from one JSON config, resumably.

Every cell is pretrained with scripts/pretrain.py's loop and evaluated with scripts/evaluate.py's
protocols; finished cells are skipped, so an interrupted grid continues where it stopped. The
results table (grid_results.csv / .md) and the paper-style plots (one line per policy, accuracy
against label fraction; grid_<method>_<protocol>.png) are written to the config's "out" folder.

Configs shipped in configs/:
  grid_cifar10_cpu.json   the paper's CIFAR-10 comparison sized for under an hour on 2 CPU cores
  grid_cifar10_gpu.json   the same at the paper's budget (100 epochs) for a GPU

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
    print(f"\n{len(rows)} result rows; table: {config.out}/grid_results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
