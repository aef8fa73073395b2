#!/usr/bin/env bash
# Experiment: the speed figures only a CUDA machine can give, in one run of fixed length (at most 8 minutes):
#   1. the epoch time per target source at 32 px on 5,000 CIFAR-10 images: SimCLR with sal+default from none (the
#      same policy without its saliency view), cache and surrogate (aim: cache <= 1.05x, surrogate <= 1.15x the time
#      of `none`), and DetCon-S from cache and surrogate (it has no run without targets);
#   2. the surrogate's network and region-labelling time at 32 and 96 px (aim: regions <= the network's time);
#   3. the photo surrogate per image at 96 px against the exact labeller on the original photos, on the same
#      machine (aim: >= 1,000x less time per image).
#
# On a machine with the data (from the project root):
#   bash experiments/gpu_speed.sh stage        # replaces .gpudata/speed/ (git-ignored, about 30 MB)
# then on the CUDA machine, from a copy of the project with .gpudata/speed/ in it, once the packages the project
# needs are importable there (`pip install -e .`, or wheels installed with --target into a folder on PYTHONPATH):
#   OUT=/tmp/gpu_speed bash experiments/gpu_speed.sh run
# Each stage has a time limit, so the run ends on time; results land in OUT as JSON files and log.txt.
# Then `python experiments/collect_results.py gpu_speed --runs OUT` writes results/speed_gpu.json: each aim, measured
# and met or not (tested on the outputs of the CPU smoke run below).
# DEVICE=cpu EPOCH_IMAGES=64 EPOCH_BATCH=32 EPOCH_ROUNDS=1 bash experiments/gpu_speed.sh run: a smoke test on a CPU.
#
# stage reads SHARED (default ../shared/data), the exact cache CACHE (default runs/caches/cifar, holding the
# CIFAR-10 train images' targets: saliency-ssl label), and the surrogates SUR32 (CIFAR-10, 32 px) and SUR96 (photos,
# 96 px) from experiments/surrogate_parity.sh and experiments/photo_surrogate.sh.
set -uo pipefail
mode=${1:-}
DATA=${DATA:-.gpudata/speed}
case "$mode" in
stage)
    set -e
    SHARED=${SHARED:-../shared/data}
    CACHE=${CACHE:-runs/caches/cifar}
    SUR32=${SUR32:-runs/exp/parity/surrogate/surrogate.pt}
    SUR96=${SUR96:-runs/exp/photo_surrogate/v0_steps/surrogate.pt}
    for f in "$SUR32" "$SUR96"; do [ -f "$f" ] || { echo "error: $f is missing (see the header)" >&2; exit 2; }; done
    rm -rf "$DATA" && mkdir -p "$DATA/cifar_train" "$DATA/photos"
    for class in "$SHARED"/cifar10/train/*/; do   # 500 images per class: 5,000
        name=$(basename "$class"); mkdir -p "$DATA/cifar_train/$name"
        find "$class" -maxdepth 1 -type f | sort | sed -n 1,500p | xargs cp -t "$DATA/cifar_train/$name"
    done
    find "$SHARED/clothing_parsing/images" -maxdepth 1 -type f | sort | sed -n 1,256p | xargs cp -t "$DATA/photos"
    python experiments/partial_cache.py "$CACHE" "$DATA/cifar_train" "$DATA/cache" --share 1.0
    cp "$SUR32" "$DATA/sur32.pt" && cp "$SUR96" "$DATA/sur96.pt"
    du -sh "$DATA"
    ;;
run)
    OUT=${OUT:-/tmp/gpu_speed}
    DEVICE=${DEVICE:-cuda}
    EPOCH_IMAGES=${EPOCH_IMAGES:-5000}
    EPOCH_BATCH=${EPOCH_BATCH:-256}
    EPOCH_ROUNDS=${EPOCH_ROUNDS:-3}
    AMP=--amp; [ "$DEVICE" = cpu ] && AMP=
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the project, installed or not
    source "$(dirname "${BASH_SOURCE[0]}")/gpu_stages.sh"   # say, stage NAME SECONDS CMD...
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
        python3 -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cpu', platform.processor() or platform.machine(), torch.get_num_threads(), 'threads')"
        stage speed32 60 python3 benchmarks/bench_surrogate.py --data "$DATA/cifar_train" --device "$DEVICE" \
            --surrogate "$DATA/sur32.pt" --batch-size 512 --num-images 4096 --labeller-images 0 \
            --json "$OUT/speed32.json"
        stage speed96 90 python3 benchmarks/bench_surrogate.py --data "$DATA/photos" --image-size 96 \
            --device "$DEVICE" --surrogate "$DATA/sur96.pt" --batch-size 128 --num-images 256 --labeller-images 16 \
            --json "$OUT/speed96.json"
        stage labeller 60 python3 benchmarks/bench_labeller.py "$DATA/photos" --engines faithful --limit 32 \
            --json "$OUT/labeller.json"
        stage epoch_sal 100 python3 benchmarks/bench_epoch.py --data "$DATA/cifar_train" --cache "$DATA/cache" \
            --num-images "$EPOCH_IMAGES" --image-size 32 --batch-size "$EPOCH_BATCH" --sources none,cache,surrogate \
            --policy sal+default --epochs 2 --rounds "$EPOCH_ROUNDS" --device "$DEVICE" $AMP --surrogate "$DATA/sur32.pt" \
            --json "$OUT/epoch_sal.json"
        stage epoch_detcon 100 python3 benchmarks/bench_epoch.py --data "$DATA/cifar_train" --cache "$DATA/cache" \
            --num-images "$EPOCH_IMAGES" --image-size 32 --batch-size "$EPOCH_BATCH" --sources cache,surrogate \
            --method detcon-simclr --policy default --epochs 2 --rounds "$EPOCH_ROUNDS" --device "$DEVICE" $AMP \
            --surrogate "$DATA/sur32.pt" --json "$OUT/epoch_detcon.json"
        say "done"
    } 2>&1 | tee "$OUT/log.txt"
    ;;
*)
    echo "usage: bash experiments/gpu_speed.sh stage|run (see the header)" >&2; exit 2 ;;
esac
