#!/usr/bin/env bash
# Experiment: the paper's painted-view policies against SimCLR default on a GPU, the epoch time per target source and
# two surrogates' speed, in one run of fixed length on any CUDA machine (an H100 or H200).
# Found (NVIDIA H200, SimCLR at 1,365 steps of batch 256 on the 10,000 CIFAR-10 train images, default's colour
# jitter then kornia's ColorJiggle; docs/findings.md, "The baseline is SimCLR's"): sal+default ended below default
# by 9.6 points (linear probe) and 15.8 (kNN) with all labels, sal0.5+default by less. experiments/gpu_speed.sh and
# configs/mask_aware_cifar10_gpu.json are the GPU runs of the current policies.
#
#   DATA=.gpudata OUT=/tmp/gpu BUDGET=480 bash experiments/gpu_suite.sh
#
# DATA holds cifar_train/ and cifar_test/ (CIFAR-10 images in class folders) and cache/ (the exact targets of at least
# the train images, from saliency-ssl label). Where the transfer to the GPU machine is small, carry the image folders as
# one file and unpack it first: `tar czf .gpudata/images.tgz -C .gpudata cifar_train cifar_test`, then on the GPU
# machine `tar xzf .gpudata/images.tgz -C .gpudata && DATA=.gpudata OUT=$OUT bash experiments/gpu_suite.sh`.
# What runs, side by side on the one GPU:
#   1. two surrogates trained on every train image for SURROGATE_MINUTES: train_surrogate.py's defaults (ngf 16) and
#      twice their width (ngf 32), both at rate 1e-3, 10% held out by content hash to pick the epoch;
#   2. SimCLR with each of SSL_POLICIES on the train images: one epoch of each, side by side, measures the epoch time,
#      then every policy runs the same number of epochs, as many as end by BUDGET - 150 s; the random-initialisation
#      baseline is evaluated meanwhile;
#   3. each backbone evaluated (linear probe and kNN at 1/5/10/50/100% labels, 3 seeds, on the test images);
#   4. on the quiet GPU: each surrogate's fidelity on the test images (with TEST_CACHED=1, when the cache holds their
#      targets) and its inference speed at 32 and 96 px; then the 790-image epoch benchmark if time is left.
# Results land in OUT as log.txt, results.tgz (every JSON, history and results table) and surrogate_{a,b}.pt.gz.
# Each stage is cut off by the budget, so the run ends on time; SURROGATE_MINUTES=0.5 BUDGET=200 DEVICE=cpu with a
# small DATA is a smoke test of this script.
set -u
DATA=${DATA:-.gpudata}
OUT=${OUT:-/tmp/gpu}
WORK=${WORK:-/tmp/gpu_work}   # run folders (checkpoints, TensorBoard) stay here, out of OUT
BUDGET=${BUDGET:-480}
SURROGATE_MINUTES=${SURROGATE_MINUTES:-5}
SSL_POLICIES=${SSL_POLICIES:-"default sal+default sal0.5+default"}
SSL_BATCH=${SSL_BATCH:-256}
SSL_MAX_EPOCHS=${SSL_MAX_EPOCHS:-200}
FRACTIONS=${FRACTIONS:-0.01,0.05,0.1,0.5,1.0}
DEVICE=${DEVICE:-cuda}
AMP=--amp; [ "$DEVICE" = cpu ] && AMP=
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( BUDGET - $(elapsed) )); }
say() { echo "[$(elapsed)s] $*"; }
# run NAME SECONDS CMD...: a stage with its own log, killed after SECONDS; its exit status is logged
run() {
  local name=$1 limit=$2; shift 2
  if [ "$limit" -le 5 ]; then say "skip $name (budget spent)"; return 0; fi
  say "start $name (limit ${limit}s)"
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  say "end $name rc=$rc"; tail -n 4 "$WORK/$name.log" | sed "s/^/    $name| /"
  return $rc
}
evaluate() {   # evaluate NAME BACKBONE-ARGS...
  local name=$1; shift
  run "eval_$name" $(( $(left) - 30 )) python3 scripts/evaluate.py "$@" --train "$DATA/cifar_train" \
      --test "$DATA/cifar_test" --fractions "$FRACTIONS" --seeds 3 --protocol linear,knn --device "$DEVICE" \
      --quiet --out "$WORK/eval_$name"
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 10 > "$WORK/gpu_utilisation.log" 2>&1 &
  smi=$!

  # 1. surrogates, in the background for the whole of stage 2
  surrogate() {   # surrogate NAME EXTRA-OPTIONS...
    local name=$1; shift
    run "$name" "$(python3 -c "print(int($SURROGATE_MINUTES * 60) + 120)")" python3 scripts/train_surrogate.py \
        "$DATA/cifar_train" --cache "$DATA/cache" --out "$WORK/$name" --size 32 --device "$DEVICE" $AMP \
        --batch-size 256 --held-out 0.1 --max-minutes "$SURROGATE_MINUTES" --quiet "$@"
  }
  surrogate sur_a &
  surrogates=($!)
  surrogate sur_b --ngf 32 --lr 1e-3 &
  surrogates+=($!)
  evaluate random --backbone random --backbone-seed 0 --random-stem cifar --image-size 32 &
  random_eval=$!

  # 2. SimCLR per policy: one epoch side by side to time it, then the same epoch count for all
  pretrain() {   # pretrain POLICY EPOCHS RUN_DIR LIMIT
    local source=cache; [ "$1" = default ] && source=none
    run "$(basename "$3")" "$4" python3 scripts/pretrain.py --data "$DATA/cifar_train" --method simclr \
        --aug-source $source --policy "$1" --cache "$DATA/cache" --epochs "$2" --batch-size "$SSL_BATCH" \
        --image-size 32 --device "$DEVICE" $AMP --seed 0 --quiet --out "$3"
  }
  t0=$(elapsed)
  pids=()
  for p in $SSL_POLICIES; do pretrain "$p" 1 "$WORK/time_${p//+/_}" 150 & pids+=($!); done
  wait "${pids[@]}"
  wall=$(( $(elapsed) - t0 ))
  epochs=$(python3 - "$WORK" "$wall" "$(( BUDGET - 150 - $(elapsed) ))" "$SSL_MAX_EPOCHS" $SSL_POLICIES <<'EOF'
import json, sys
work, wall, avail, cap, policies = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
epoch = max(json.load(open(f"{work}/time_{p.replace('+', '_')}/history.json"))[0]["seconds"]["epoch"] for p in policies)
startup = max(wall - epoch, 0.0)
print(max(1, min(cap, int((avail - startup) / (1.15 * epoch)))))
EOF
  ) || epochs=1
  say "one epoch took up to the slowest policy's time, the whole timing run ${wall}s: ${epochs} epochs each"
  pids=()
  for p in $SSL_POLICIES; do pretrain "$p" "$epochs" "$WORK/ssl_${p//+/_}" $(( $(left) - 120 )) & pids+=($!); done
  wait "${pids[@]}"

  # 3. evaluations of the pretrained backbones, side by side
  pids=()
  for p in $SSL_POLICIES; do
    [ -f "$WORK/ssl_${p//+/_}/backbone.pt" ] || continue
    evaluate "simclr_${p//+/_}" --backbone "$WORK/ssl_${p//+/_}/backbone.pt" & pids+=($!)
  done
  wait "${pids[@]}" "$random_eval"   # not a bare wait: the nvidia-smi logger runs until the end
  wait "${surrogates[@]}"              # their own time limit ends them: stage 4 reads finished files on a quiet GPU

  # 4. on the quiet GPU: surrogate fidelity and speed, then the epoch benchmark
  for s in a b; do
    [ -f "$WORK/sur_$s/surrogate.pt" ] || continue
    gzip -c "$WORK/sur_$s/surrogate.pt" > "$OUT/surrogate_$s.pt.gz"   # under 16 MB, small enough to copy back
    if [ -n "${TEST_CACHED:-}" ]; then   # set it when DATA/cache holds the test images' targets too
      run "fidelity_$s" $(( $(left) - 20 )) python3 scripts/eval_fidelity.py "$DATA/cifar_test" --cache "$DATA/cache" \
          --surrogate "$WORK/sur_$s/surrogate.pt" --json "$WORK/fidelity_$s.json" --device "$DEVICE"
    fi
    run "speed_$s" $(( $(left) - 20 )) python3 benchmarks/bench_surrogate.py --data "$DATA/cifar_test" --device "$DEVICE" \
        --surrogate "$WORK/sur_$s/surrogate.pt" --batch-size 512 --num-images 2048 --labeller-images 0 \
        --json "$WORK/speed_$s.json"
  done
  if [ "$(left)" -gt 70 ]; then
    run epoch_bench $(( $(left) - 15 )) python3 benchmarks/bench_epoch.py --data "$DATA/cifar_train" --cache "$DATA/cache" \
        --num-images 790 --image-size 32 --batch-size 128 --sources none,cache,surrogate --epochs 2 --rounds 3 \
        --device "$DEVICE" $AMP --surrogate "$WORK/sur_a/surrogate.pt" --json "$WORK/epoch.json"
  fi
  kill $smi 2>/dev/null
  (cd "$WORK" && tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='tb' --exclude='tensorboard' --exclude='*.npy' \
      ./*.log ./*.json sur_*/history.json sur_*/heldout_fidelity.json ssl_*/history.json time_*/history.json \
      eval_*/results.json eval_*/results.md 2>/dev/null)
  say "done"
} 2>&1 | tee "$OUT/log.txt"
