#!/usr/bin/env python
"""Seconds per batch of the augmentation pipeline for each target source, in one run.

For one policy (default ``sal+default``), times what a training step spends before the model:
gather the batch's images, get its targets (``none``: no saliency view; ``cache``: the frozen
pack; ``surrogate``: one batched surrogate call; ``exact``: the exact labeller in worker
processes), render the saliency view and apply the Kornia augmentations, twice (two views).
Also the frozen pack's raw gather rate (images per second).

Without --cache it labels the images it needs into a temporary cache; without --surrogate it
uses a freshly initialised surrogate of the default architecture (timing does not depend on
its weights).

Example (a CPU run's figures: results/router_cpu.json, made by experiments/cpu_speed.sh):
  python benchmarks/bench_router.py --data ../shared/data/cifar10/train --cache runs/cifar_cache --num-images 1024 \\
      --image-size 32 --batches 10 --json runs/bench_router32.json
  python benchmarks/bench_router.py --data ../shared/data/cifar10/train --cache runs/cifar_cache --num-images 1024 \\
      --image-size 96 --batches 10 --json runs/bench_router96.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import device_name, emit, saliency_policy, sync
from saliencyssl.augment import FrozenPack, SSLAugmentation, TargetRouter, TrainingImages, parse_policy
from saliencyssl.cache import TargetCache
from saliencyssl.cache.executors import default_workers, make_executor
from saliencyssl.cache.labelling import label_folder
from saliencyssl.datasets import open_image_set
from saliencyssl.saliency import Labeller, LabellerConfig


def time_sources(setups: dict, images: torch.Tensor, batches: list, device: torch.device) -> dict[str, float]:
    """Median seconds per batch for each source, the sources interleaved batch by batch (so drift in
    the machine's speed hits them alike), after one untimed warm-up batch each."""
    times: dict[str, list[float]] = {name: [] for name in setups}
    for i, index in enumerate(batches):
        for name, (router, augment, limit) in setups.items():
            if i > limit:
                continue
            sync(device)
            start = time.perf_counter()
            x = images.index_select(0, index.to(images.device))
            targets = router.targets(index, x)
            v1, v2 = augment(x, targets), augment(x, targets)
            sync(device)
            if i > 0:
                times[name].append(time.perf_counter() - start)
            del v1, v2
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="image folder or CIFAR-10 python batches")
    parser.add_argument("--num-images", type=int, default=1024, help="images used (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=32, help="training side length (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per source (exact: at most 3)")
    parser.add_argument("--policy", default="sal+default", help="policy for every source (default %(default)s)")
    parser.add_argument("--sources", default="none,cache,surrogate,exact")
    parser.add_argument("--cache", type=Path, help="a cache holding the images' targets (default: label into a temp one)")
    parser.add_argument("--surrogate", type=Path, help="surrogate checkpoint (default: a fresh one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=default_workers(), help="exact-labelling processes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    config = saliency_policy(parser, args.policy)  # before any labelling
    device = torch.device(args.device)
    torch.manual_seed(0)
    image_set = open_image_set(args.data)
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(image_set), size=min(args.num_images, len(image_set)), replace=False))
    image_set = image_set.subset(chosen.tolist())
    images = TrainingImages(image_set, args.image_size)
    stack = images.stack(device)
    labeller = Labeller(LabellerConfig())
    sources = args.sources.split(",")

    tmp = None
    cache_dir = args.cache
    if cache_dir is None and ("cache" in sources or "surrogate" in sources):
        tmp = tempfile.TemporaryDirectory()
        cache_dir = Path(tmp.name)
    pack = None
    if cache_dir is not None:
        with TargetCache(cache_dir, labeller.fingerprint, params=labeller.config.params()) as cache:
            missing = [i for i, h in enumerate(images.hashes) if h not in cache]
            if missing:
                paths = image_set.paths
                if paths is not None:
                    print(f"labelling {len(missing)} images into {cache_dir} ...", flush=True)
                    with make_executor(args.workers) as executor:
                        label_folder(args.data, cache, labeller.config, executor=executor,
                                     paths=[paths[i] for i in missing], progress=False)
                else:  # CIFAR batches: no files, label in process
                    for i in missing:
                        cache.put(images.hashes[i], labeller(image_set.image(i)))
            pack = FrozenPack.build(images.hashes, cache, args.image_size).to(device)
        print(pack.report.line())

    from saliencyssl.surrogate import Surrogate

    if args.surrogate:
        try:
            surrogate = Surrogate.load(args.surrogate, device=device, expect_image_size=args.image_size)
        except (FileNotFoundError, ValueError) as error:  # another image size: the router would refuse it
            parser.error(str(error))
    else:
        surrogate = Surrogate.fresh(args.image_size, labeller.fingerprint, device=device)

    augment = SSLAugmentation(config, args.image_size).to(device)
    augment_plain = SSLAugmentation(parse_policy(f"{config.name},saliency=0"), args.image_size).to(device)
    n = len(images)
    order = torch.randperm(n)
    batches = [order[(i * args.batch_size) % n:][: args.batch_size] for i in range(args.batches + 1)]
    batches = [b if len(b) == args.batch_size else order[: args.batch_size] for b in batches]

    result = {"device": device_name(device), "torch": torch.__version__, "image_size": args.image_size,
              "batch_size": args.batch_size, "policy": config.name, "num_images": n}
    setups = {}
    for source in sources:
        if source == "none":
            setups[source] = (TargetRouter("none", args.image_size), augment_plain, len(batches))
        elif source == "cache":
            setups[source] = (TargetRouter("cache", args.image_size, pack=pack), augment, len(batches))
        elif source == "surrogate":
            setups[source] = (TargetRouter("surrogate", args.image_size, surrogate=surrogate), augment, len(batches))
        elif source == "exact":
            router = TargetRouter("exact", args.image_size, labeller=labeller, image_set=image_set,
                                  exact_workers=args.workers)
            setups[source] = (router, augment, 3)  # the slow baseline: three timed batches
        else:
            parser.error(f"unknown source {source}")
    result["seconds_per_batch"] = time_sources(setups, stack, batches, device)
    for source, (router, _, _) in setups.items():
        router.close()
        print(f"{source:10s} {result['seconds_per_batch'][source] * 1000:9.1f} ms per batch of {args.batch_size}",
              flush=True)
    base = result["seconds_per_batch"].get("none")
    if base:
        result["ratio_to_none"] = {k: v / base for k, v in result["seconds_per_batch"].items()}

    if pack is not None:
        index = torch.randint(0, n, (args.batch_size,), device=device)
        for _ in range(10):
            pack.gather_raw(index)
        sync(device)
        reps = 2000
        start = time.perf_counter()
        for _ in range(reps):
            pack.gather_raw(index)
        sync(device)
        result["pack_gather_images_per_second"] = reps * args.batch_size / (time.perf_counter() - start)
        print(f"frozen-pack gather: {result['pack_gather_images_per_second']:,.0f} images/s")
    emit(result, args.json)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
