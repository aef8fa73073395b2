#!/usr/bin/env python
"""Scale-out figures: labelling throughput on the process pool vs Dask, and packs vs cache directories.

1. Images per second labelled into an empty cache with the local process pool and with a Dask
   LocalCluster, each at 1 and 2 workers, on the same images (warm workers; the clock starts at
   the first task). The Dask path should be within 10% of the pool at equal workers.
2. For a data set whose targets are cached (--cache, or labelled here first): the size of the
   cache directory against an exported pack, and the time to get a frozen pack from each
   (building from the cache reads and decodes every entry; a pack at the training size is
   memory-mapped).

Example (a CPU run's figures: results/scale_cpu.json and pack_cpu.json, made by experiments/cpu_speed.sh):
  python benchmarks/bench_scale.py --label-images ../shared/data/salbench/images \\
      --pack-data ../shared/data/cifar10/train --cache runs/cifar_cache --image-size 32 --json runs/bench_scale.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import emit, labelling_rate
from saliencyssl.augment import FrozenPack, TrainingImages
from saliencyssl.cache import TargetCache
from saliencyssl.cache.executors import DaskExecutor, PoolExecutor
from saliencyssl.augment.pack import load_pack
from saliencyssl.cache.packfile import write_pack
from saliencyssl.imageio import list_images
from saliencyssl.saliency import LabellerConfig


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label-images", type=Path, help="folder to label for the throughput comparison")
    parser.add_argument("--limit", type=int, default=None, help="label only the first N images")
    parser.add_argument("--pack-data", type=Path, help="data set for the pack-vs-cache comparison")
    parser.add_argument("--cache", type=Path, help="cache holding --pack-data's targets (labelled here if missing)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result: dict = {}

    if args.label_images:
        files = list_images(args.label_images)[: args.limit]
        rates = {}
        for name, make in (("pool_1", lambda: PoolExecutor(1)), ("pool_2", lambda: PoolExecutor(2)),
                           ("dask_1", lambda: DaskExecutor("local:1")), ("dask_2", lambda: DaskExecutor("local:2"))):
            rates[name] = labelling_rate(args.label_images, files, make())
            print(f"{name:8s} {rates[name]:.3f} images/s", flush=True)
        rates["dask_vs_pool_1"] = rates["dask_1"] / rates["pool_1"]
        rates["dask_vs_pool_2"] = rates["dask_2"] / rates["pool_2"]
        rates["pool_2_vs_1"] = rates["pool_2"] / rates["pool_1"]
        result["labelling_images_per_second"] = {**rates, "images": len(files)}

    if args.pack_data:
        config = LabellerConfig()
        cache_dir = args.cache or Path(tempfile.mkdtemp())
        data = TrainingImages(str(args.pack_data), args.image_size)
        with TargetCache(cache_dir, config.fingerprint(), params=config.params()) as cache:
            missing = [i for i, h in enumerate(data.hashes) if h not in cache]
        if missing:  # a folder or CIFAR batches, as `saliency-ssl label` labels them
            from saliencyssl.app.label import label_images

            print(f"labelling {len(missing)} images into {cache_dir} first ...", flush=True)
            label_images(args.pack_data, cache_dir, config, image_set=data.images.subset(missing), workers=2)
        with TargetCache(cache_dir, config.fingerprint(), params=config.params()) as cache:
            start = time.perf_counter()
            from_cache = FrozenPack.build(data.hashes, cache, args.image_size)
            build_seconds = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as tmp:
                pack_path = Path(tmp) / "data.pack"
                from saliencyssl.datasets import target_at_size

                targets = [(h, target_at_size(cache.get(h), args.image_size)) for h in dict.fromkeys(data.hashes)]
                write_pack(pack_path, targets, config.fingerprint(), config.params())
                start = time.perf_counter()
                mapped = load_pack(pack_path, data.hashes, args.image_size)
                load_seconds = time.perf_counter() - start
                assert mapped.report.hits == from_cache.report.hits
                result["pack_vs_cache"] = {
                    "images": len(data), "cache_dir_bytes": du(cache_dir), "pack_bytes": pack_path.stat().st_size,
                    "frozen_pack_from_cache_seconds": build_seconds, "frozen_pack_from_pack_file_seconds": load_seconds}
        print(json.dumps(result["pack_vs_cache"], indent=2), flush=True)

    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
