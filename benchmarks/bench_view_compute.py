#!/usr/bin/env python
"""Does a training step cost the same on saliency views as on plain views? (the compute column of bench_epoch)

bench_epoch.py times whole epochs per source, and its compute column (forward, backward and step)
should not depend on where the views came from. When it does differ between sources, this script
tells the views' own cost from the machine's noise: one model and one optimizer; --batches batches
of each kind of view rendered once and stored (``sal`` with --policy from the cache's targets,
``plain`` with the same policy without the saliency view); then --rounds rounds that each train one
step on every stored batch of both kinds, the kind that goes first alternating between rounds.
Both kinds share every step's machine state, the weights' trajectory included, so the ratio of
their median step times is the views' cost alone. The first round is a warm-up and is not counted.

Example (no result file holds its figures yet):
  python benchmarks/bench_view_compute.py --data ../shared/data/cifar10/train --cache runs/cifar_cache \\
      --image-size 32 --batch-size 128 --batches 6 --rounds 6 --amp --json runs/bench_view_compute.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import device_name, emit, label_missing, saliency_policy
from saliencyssl.augment import SSLAugmentation, parse_policy
from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.saliency import Labeller
from saliencyssl.app.pretrain import PretrainConfig, Pretrainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True,
                        help="a cache holding the images' targets (the images it lacks are labelled into it)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=6, help="stored batches of each kind (default 6)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of steps over all stored batches (default 6)")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--policy", default="sal+default")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.batches < 1 or args.rounds < 2:
        parser.error("--batches must be at least 1 and --rounds at least 2 (the first is a warm-up)")
    policy = saliency_policy(parser, args.policy)
    n = args.batches * args.batch_size
    image_set = open_image_set(args.data)
    if len(image_set) < n:
        parser.error(f"--batches {args.batches} of {args.batch_size} need {n} images; {args.data} has "
                     f"{len(image_set)}")
    labeller = Labeller()
    with TargetCache(args.cache, labeller.fingerprint, params=labeller.config.params()) as cache:
        label_missing(cache, image_set.spread(n), args.image_size, labeller)

    with tempfile.TemporaryDirectory() as tmp:  # an epoch per kind and round: one step per stored batch
        trainer = Pretrainer(PretrainConfig(
            data=str(args.data), out=tmp, method=args.method, aug_source="cache", policy=policy.name,
            epochs=2 * args.rounds, batch_size=args.batch_size, image_size=args.image_size,
            cache=str(args.cache), device=args.device, amp=args.amp, limit=n, seed=args.seed, progress=False,
            tensorboard=False))
        seconds = time_steps(trainer, render_batches(trainer, policy, args.batches, args.batch_size), args.rounds)

    result = {"device": device_name(args.device), "torch": torch.__version__, "image_size": args.image_size,
              "batch_size": args.batch_size, "method": args.method, "policy": policy.name, "amp": args.amp,
              "threads": torch.get_num_threads(),
              "steps_per_kind": len(seconds["sal"]),
              "median_seconds_per_step": {k: float(np.median(s)) for k, s in seconds.items()},
              "mean_seconds_per_step": {k: float(np.mean(s)) for k, s in seconds.items()}}
    medians = result["median_seconds_per_step"]
    result["ratio_sal_to_plain"] = medians["sal"] / medians["plain"]
    emit(result, args.json)
    return 0


def render_batches(trainer: Pretrainer, policy, batches: int, batch_size: int) -> dict[str, list]:
    """``batches`` pairs of views of each kind, rendered once: ``sal`` by the trainer's policy from its cache,
    ``plain`` by the same policy without the saliency view."""
    plain = SSLAugmentation(parse_policy(f"{policy.name},saliency=0"), trainer.config.image_size).to(trainer.device)
    views = {"sal": [], "plain": []}
    for b in range(batches):
        index = torch.arange(b * batch_size, (b + 1) * batch_size)
        x = trainer.batch_images(index)
        views["sal"].append(trainer.make_views(index, x))
        views["plain"].append((plain(x, None), plain(x, None)))
    return views


def time_steps(trainer: Pretrainer, views: dict[str, list], rounds: int) -> dict[str, list[float]]:
    """Seconds of each training step per kind of view, over ``rounds`` rounds (the first not counted), the kind
    that goes first alternating between rounds."""
    trainer.model.train()
    seconds = {kind: [] for kind in views}
    step = 0
    for r in range(rounds):
        for kind in (("plain", "sal") if r % 2 == 0 else ("sal", "plain")):
            for view_a, view_b in views[kind]:
                trainer.synchronize()
                start = time.perf_counter()
                trainer.train_step(view_a, view_b, step // trainer.steps_per_epoch, step % trainer.steps_per_epoch)
                trainer.synchronize()
                if r > 0:
                    seconds[kind].append(time.perf_counter() - start)
                step += 1
        if r > 0:
            per_kind = len(views["sal"])
            print(f"round {r}/{rounds - 1}  " + "  ".join(f"{kind} {np.mean(s[-per_kind:]):.3f} s/step"
                                                          for kind, s in seconds.items()), flush=True)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
