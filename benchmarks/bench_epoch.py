#!/usr/bin/env python
"""Seconds per epoch of real pretraining for each target source, in one run (the paper's headline).

The paper measured about 50 minutes per epoch on a K80 for 790 images with SaliencyCut computed
on the fly, and about 30 with its Pix2Pix surrogate. This script prepares what it needs (labels
the images into a temporary cache; without --surrogate, a freshly initialised surrogate of the
default architecture, as timing does not depend on its weights), then runs whole epochs of
scripts/pretrain.py's loop for each source and reports seconds per epoch and the ratio to
``none``. Sources other than ``none`` use --policy (default ``sal+default``); ``none`` uses the
same policy without the saliency view, so the difference is the cost of getting and rendering
targets. ``exact`` labels every batch from scratch in --workers processes. A method that trains on
the targets (``--method detcon-simclr``, ``detcon-byol``) takes any --policy and has no ``none``
run: compare its sources with each other.

A shared machine's speed drifts during a run, and a source timed only after another would inherit
the drift as cost. --rounds R times every source R times, in a rotated order each round (round r
starts with the r-th source), and reports the median over rounds: seconds per epoch per source, and
the ratio to ``none`` measured within each round (its sources ran minutes apart, not a whole run).
The compute column (forward, backward, step) of one epoch still moves by several percent from epoch
to epoch on a shared CPU; benchmarks/bench_view_compute.py tells whether a difference there is the
saliency views' own cost.

Example (a CPU run's figures: results/epoch_cpu.json, made by experiments/cpu_speed.sh):
  python benchmarks/bench_epoch.py --data ../shared/data/cifar10/train --cache runs/cifar_cache --num-images 790 \\
      --image-size 32 --batch-size 128 --sources none,cache,surrogate,exact --epochs 2 --rounds 3 \\
      --json runs/bench_epoch.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench_common import device_name, emit, label_missing, saliency_policy
from saliencyssl.cache import TargetCache
from saliencyssl.cache.executors import default_workers
from saliencyssl.datasets import open_image_set
from saliencyssl.saliency import Labeller
from saliencyssl.app.pretrain import PretrainConfig, Pretrainer
from saliencyssl.augment import parse_policy
from saliencyssl.ssl.registry import method_class


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=790)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sources", default="none,cache,surrogate,exact")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--policy", default="sal+default")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per source and round; the first is a warm-up when > 1")
    parser.add_argument("--rounds", type=int, default=3,
                        help="time every source this many times, in a rotated order, and report medians (default 3)")
    parser.add_argument("--surrogate", type=Path, help="surrogate checkpoint (default: a fresh one)")
    parser.add_argument("--cache", type=Path, help="a cache holding the images' targets (default: label into a temp one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--workers", type=int, default=default_workers(), help="exact-labelling processes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be at least 1")
    sources = [s for s in args.sources.split(",") if s]
    if method_class(args.method).needs_targets:  # DetCon: the targets feed the loss whatever the policy draws
        policy = parse_policy(args.policy)
        if "none" in sources:
            parser.error(f"--method {args.method} trains on targets, so it has no run without them: leave 'none' "
                         f"out of --sources and compare the sources with each other")
    else:
        policy = saliency_policy(parser, args.policy)
    image_set = open_image_set(args.data)
    image_set = image_set.spread(args.num_images)
    n = len(image_set)
    labeller = Labeller()
    result = {"device": device_name(args.device), "torch": torch.__version__, "num_images": n,
              "image_size": args.image_size, "batch_size": args.batch_size, "method": args.method,
              "policy": policy.name, "epochs": args.epochs, "sources": sources, "amp": args.amp,
              "threads": torch.get_num_threads(), "workers": args.workers,
              "surrogate": str(args.surrogate) if args.surrogate else "fresh default",
              "seconds_per_epoch": {}, "seconds_split": {}}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache_dir = args.cache or tmp / "cache"
        if "cache" in sources:
            with TargetCache(cache_dir, labeller.fingerprint, params=labeller.config.params()) as cache:
                label_missing(cache, image_set, args.image_size, labeller)
        surrogate = args.surrogate
        if surrogate is None and "surrogate" in sources:
            from saliencyssl.surrogate import Surrogate

            surrogate = Surrogate.fresh(args.image_size, labeller.fingerprint).save(tmp / "fresh_surrogate.pt")
        rounds = []
        for r in range(args.rounds):
            order = sources[r % len(sources):] + sources[:r % len(sources)]
            split = {}
            for source in order:
                config = PretrainConfig(
                    data=str(args.data), out=str(tmp / f"run_{source}_{r}"), method=args.method, aug_source=source,
                    policy=policy.name if source != "none" else f"{policy.name},saliency=0",
                    epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                    cache=str(cache_dir) if source == "cache" else None,
                    surrogate=str(surrogate) if source == "surrogate" else None, device=args.device, amp=args.amp,
                    workers=args.workers if source == "exact" else 0, limit=n, progress=False, tensorboard=False)
                history = Pretrainer(config).run().history
                timed = history[1:] if len(history) > 1 else history
                split[source] = {k: float(np.mean([h.seconds[k] for h in timed]))
                                 for k in ("epoch", "data", "augmentation", "compute")}
                seconds = split[source]["epoch"]
                print(f"round {r + 1}/{args.rounds}  {source:10s} {seconds:8.2f} s per epoch", flush=True)
            rounds.append({source: split[source] for source in sources})
    result["rounds"] = rounds
    for source in sources:
        result["seconds_per_epoch"][source] = float(np.median([rd[source]["epoch"] for rd in rounds]))
        result["seconds_split"][source] = {k: float(np.median([rd[source][k] for rd in rounds]))
                                           for k in ("data", "augmentation", "compute")}
    if "none" in sources:
        by_round = [{source: rd[source]["epoch"] / rd["none"]["epoch"] for source in sources} for rd in rounds]
        result["ratio_to_none_by_round"] = by_round
        result["ratio_to_none"] = {source: float(np.median([r[source] for r in by_round])) for source in sources}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
