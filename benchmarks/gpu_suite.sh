#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one short run (a lent H100/H200 here; any CUDA machine elsewhere).
#
#   DATA=.gpudata OUT=/tmp/gpu BUDGET=300 bash benchmarks/gpu_suite.sh
#
# DATA holds cifar_train/ (CIFAR-10 train images in class folders), cifar_test/ (a labelled test subset) and
# cache/ (their exact targets, from scripts/label.py). Results land in OUT as at most 8 files: log.txt,
# surrogate.pt, fidelity.json, surrogate_speed.json, router32.json, router96.json, epoch.json, ssl.json.
# Stages run in order and each is skipped once BUDGET seconds have passed, so the run ends on time.
# The GPU machine has no numba, so nothing here runs the exact labeller (sources none, cache, surrogate).
set -u
DATA=${DATA:-.gpudata}
OUT=${OUT:-/tmp/gpu}
WORK=${WORK:-/tmp/gpu_work}   # run folders (checkpoints, TensorBoard) stay here, out of OUT
BUDGET=${BUDGET:-300}
SURROGATE_MINUTES=${SURROGATE_MINUTES:-2}
SSL_EPOCHS=${SSL_EPOCHS:-6}
DEVICE=${DEVICE:-cuda}        # DEVICE=cpu for a smoke test of this script
AMP=--amp; [ "$DEVICE" = cpu ] && AMP=
ROUTER_IMAGES=${ROUTER_IMAGES:-2048}
SSL_LIMIT=${SSL_LIMIT:-10000}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
step() { echo; echo "== $1 ($(left)s of the budget left)"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

  step "surrogate: train on the CIFAR-10 train images"
  python3 scripts/train_surrogate.py "$DATA/cifar_train" --cache "$DATA/cache" --out "$WORK/surrogate" \
      --size 32 --device $DEVICE $AMP --batch-size 256 --max-minutes "$SURROGATE_MINUTES" --quiet
  cp "$WORK/surrogate/surrogate.pt" "$OUT/surrogate.pt"

  step "surrogate fidelity on test images it never saw"
  python3 scripts/eval_fidelity.py "$DATA/cifar_test" --cache "$DATA/cache" --surrogate "$OUT/surrogate.pt" \
      --json "$OUT/fidelity.json" --device $DEVICE

  step "surrogate speed"
  python3 benchmarks/bench_surrogate.py --data "$DATA/cifar_test" --device $DEVICE --batch-size 512 \
      --num-images $ROUTER_IMAGES --labeller-images 0 --json "$OUT/surrogate_speed.json"

  for size in 32 96; do
    [ "$(left)" -gt 60 ] || break
    step "router at ${size}px"
    python3 benchmarks/bench_router.py --data "$DATA/cifar_train" --cache "$DATA/cache" --num-images $ROUTER_IMAGES \
        --image-size $size --sources none,cache,surrogate --device $DEVICE --json "$OUT/router$size.json"
  done

  if [ "$(left)" -gt 60 ]; then
    step "epoch time (790 images, the paper's set size)"
    python3 benchmarks/bench_epoch.py --data "$DATA/cifar_train" --cache "$DATA/cache" --num-images 790 \
        --image-size 32 --batch-size 128 --sources none,cache,surrogate --epochs 3 --device $DEVICE $AMP \
        --surrogate "$OUT/surrogate.pt" --json "$OUT/epoch.json"
  fi

  echo "[" > "$OUT/ssl.json.tmp"
  for policy in default sal+default sal; do
    [ "$(left)" -gt 45 ] || break
    step "SimCLR, policy $policy, $SSL_EPOCHS epochs on 10,000 images"
    source=cache; [ "$policy" = default ] && source=none
    python3 scripts/pretrain.py --data "$DATA/cifar_train" --method simclr --aug-source $source --policy "$policy" \
        --cache "$DATA/cache" --epochs "$SSL_EPOCHS" --batch-size 256 --image-size 32 --device $DEVICE $AMP --limit $SSL_LIMIT \
        --knn-train "$DATA/cifar_train" --knn-test "$DATA/cifar_test" --knn-every "$SSL_EPOCHS" --quiet \
        --out "$WORK/ssl_$policy" && python3 -c "import json,sys; h=json.load(open('$WORK/ssl_$policy/history.json')); print(json.dumps({'policy': '$policy', 'epochs': len(h), 'knn_accuracy': h[-1]['knn_accuracy'], 'seconds_per_epoch': sum(e['seconds']['epoch'] for e in h)/len(h)}) + ',')" >> "$OUT/ssl.json.tmp"
  done
  echo "{}]" >> "$OUT/ssl.json.tmp" && mv "$OUT/ssl.json.tmp" "$OUT/ssl.json"
  echo; echo "done in $(( $(date +%s) - start ))s"
} 2>&1 | tee "$OUT/log.txt"
