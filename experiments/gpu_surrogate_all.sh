#!/usr/bin/env bash
# Experiment: the CIFAR-10 surrogate trained on all 50,000 train images on a CUDA machine, scored against the exact
# targets of the 10,000 test images, in one run of fixed length (at most MINUTES + 5 minutes). Two runs side by side
# on the one GPU, both on train-surrogate's defaults otherwise:
#   steps6000   6,000 steps of batch 64: the budget of the CPU curve (results/surrogate_cifar10_data.json, whose
#               50,000-image row took 10.8 minutes on one CPU thread), so the two machines' times compare;
#   minutesM    MINUTES of wall time at batch BATCH (default 256) with fp16 autocast: what the GPU buys.
#
# On a machine with the data (from the project root), once CACHE holds the exact targets of train50k and the test
# images (saliency-ssl label, as experiments/surrogate_curve.sh does):
#   bash experiments/gpu_surrogate_all.sh stage     # replaces .gpudata/all/ (git-ignored, about 50 MB)
# then on the CUDA machine, from a copy of the project with .gpudata/all/ in it, once the packages the project needs
# are importable there (`pip install -e .`, or wheels installed with --target into a folder on PYTHONPATH):
#   OUT=/tmp/gpu_all bash experiments/gpu_surrogate_all.sh run
# and back here:
#   python experiments/collect_results.py surrogate_gpu --runs OUT        (results/surrogate_cifar10_gpu.json)
# The exact targets travel in the cache, so the CUDA machine needs no numba (the labeller's SaliencyCut does).
# DEVICE=cpu MINUTES=0.2 STEPS=20 with a small SHARED (class folders of a few images) is a smoke test.
set -uo pipefail
mode=${1:-}
DATA=${DATA:-.gpudata/all}
case "$mode" in
stage)
    set -e
    SHARED=${SHARED:-../shared/data}
    CACHE=${CACHE:-runs/caches/cifar}
    [ -d "$CACHE" ] || { echo "error: $CACHE is missing: label $SHARED/cifar10/train50k and test into it" >&2; exit 2; }
    rm -rf "$DATA" && mkdir -p "$DATA"
    tar czhf "$DATA/images.tgz" -C "$SHARED/cifar10" train50k test    # h: the files behind links
    for set in train50k test; do
        python experiments/partial_cache.py "$CACHE" "$SHARED/cifar10/$set" "$DATA/cache" --share 1.0
    done
    du -sh "$DATA"
    ;;
run)
    OUT=${OUT:-/tmp/gpu_all}
    WORK=${WORK:-/tmp/gpu_all_work}   # the unpacked images stay here, out of OUT
    DEVICE=${DEVICE:-cuda}
    MINUTES=${MINUTES:-5}
    BATCH=${BATCH:-256}
    STEPS=${STEPS:-6000}
    AMP=--amp; [ "$DEVICE" = cpu ] && AMP=
    mkdir -p "$OUT" "$WORK"
    export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the project, installed or not
    source "$(dirname "${BASH_SOURCE[0]}")/gpu_stages.sh"   # say, stage NAME SECONDS CMD...
    train() {   # train NAME BUDGET-OPTIONS...: a surrogate on every train image, then its fidelity on the test set
        local name=$1; shift
        stage "$name" "$(python3 -c "print(int($MINUTES * 60) + 150)")" python3 -m saliencyssl train-surrogate \
            "$WORK/train50k" --cache "$DATA/cache" --out "$OUT/$name" --device "$DEVICE" --seed 0 --quiet "$@"
        rm -f "$OUT/$name/last.pt" "$OUT/$name/best.pt"   # surrogate.pt is what is scored
        stage "${name}_fidelity" 120 python3 -m saliencyssl fidelity "$WORK/test" --cache "$DATA/cache" \
            --surrogate "$OUT/$name/surrogate.pt" --device "$DEVICE" --json "$OUT/${name}_test.json" --quiet
    }
    {
        { nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true; } > "$OUT/device.txt"
        [ -s "$OUT/device.txt" ] || echo "no GPU ($DEVICE)" > "$OUT/device.txt"
        say "device: $(cat "$OUT/device.txt")"
        python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
        tar xzf "$DATA/images.tgz" -C "$WORK"
        say "images: $(find "$WORK/train50k" -type f | wc -l) train, $(find "$WORK/test" -type f | wc -l) test"
        train steps6000 --max-steps "$STEPS" --max-minutes "$MINUTES" --batch-size 64 &
        train "minutes$MINUTES" --max-minutes "$MINUTES" --batch-size "$BATCH" $AMP &
        wait
        say "done"
    } 2>&1 | tee "$OUT/log.txt"
    ;;
*)
    echo "usage: bash experiments/gpu_surrogate_all.sh stage|run (see the header)" >&2; exit 2 ;;
esac
