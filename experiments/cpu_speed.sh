#!/usr/bin/env bash
# Experiment: the speed benchmarks that have no GPU run yet, on this machine's CPU, one after the other (about
# 15 minutes on 2 cores; nothing else should run beside them):
#   1. benchmarks/bench_scale.py: labelling throughput with the process pool and Dask at 1 and 2 workers (the 36
#      salbench photos), and a frozen pack from a cache folder against one from a pack file (CIFAR-10 train, 32 px);
#   2. benchmarks/bench_router.py: augmentation time per batch by target source, at 32 and 96 px;
#   3. benchmarks/bench_epoch.py: SimCLR's epoch time per target source at 32 px, the paper's 790 images.
# Then `python experiments/collect_results.py cpu_speed --runs OUT` writes results/scale_cpu.json,
# results/pack_cpu.json, results/router_cpu.json and results/epoch_cpu.json.
#
#   bash experiments/cpu_speed.sh [OUT]      # OUT defaults to results/raw/cpu_speed
# SHARED (default ../shared/data) holds the data; CACHE (default runs/caches/cifar) is the exact cache of the
# CIFAR-10 train images (the missing targets are labelled into it first). The surrogate is a fresh one of the default
# architecture: its weights do not change the network's cost.
set -euo pipefail
OUT=${1:-results/raw/cpu_speed}
SHARED=${SHARED:-../shared/data}
CACHE=${CACHE:-runs/caches/cifar}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
# labels every CIFAR-10 train image into CACHE first when it lacks them (about 2 minutes with 2 workers)
"$PYTHON" benchmarks/bench_scale.py --label-images "$SHARED/salbench/images" --pack-data "$SHARED/cifar10/train" \
    --cache "$CACHE" --image-size 32 --json "$OUT/bench_scale.json"
for size in 32 96; do
    "$PYTHON" benchmarks/bench_router.py --data "$SHARED/cifar10/train" --cache "$CACHE" --num-images 1024 \
        --image-size "$size" --batches 10 --json "$OUT/bench_router$size.json"
done
"$PYTHON" benchmarks/bench_epoch.py --data "$SHARED/cifar10/train" --cache "$CACHE" --num-images 790 \
    --image-size 32 --batch-size 128 --sources none,cache,surrogate,exact --epochs 2 --rounds 3 \
    --json "$OUT/bench_epoch.json"
