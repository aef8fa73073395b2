#!/usr/bin/env bash
# Experiment: CIFAR-10 surrogate fidelity against the amount of training data, at an equal number of optimiser
# steps (STEPS of batch 64, default 6,000), one torch thread each, then fidelity against the exact targets of the
# 10,000 test images. Up to 25,000 images come from the 40,000 CIFAR-10 training images outside the pretraining set
# (experiments/cifar_split.py), so those surrogates never saw a pretraining image; 50,000 is the whole training set.
#
#   bash experiments/surrogate_curve.sh        (labels train50k and the test images into runs/caches/cifar first)
#
# experiments/collect_results.py surrogate_curve writes results/surrogate_cifar10_data.json from the run folders.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
CACHE=${CACHE:-runs/caches/cifar}
OUT=${OUT:-runs/exp/surrogate_curve}
STEPS=${STEPS:-6000}
export OMP_NUM_THREADS=1
python experiments/cifar_split.py "$SHARED/cifar10/train50k" runs/data/cifar40k --skip 1000
saliency-ssl label "$SHARED/cifar10/train50k" --cache "$CACHE" --quiet
saliency-ssl label "$SHARED/cifar10/test" --cache "$CACHE" --quiet
for spec in "5000 runs/data/cifar40k" "10000 runs/data/cifar40k" "25000 runs/data/cifar40k" \
            "50000 $SHARED/cifar10/train50k"; do
  set -- $spec
  n=$1; data=$2
  limit=(); [ "$n" != 50000 ] && limit=(--limit "$n")
  saliency-ssl train-surrogate "$data" --cache "$CACHE" --out "$OUT/n$n" "${limit[@]}" --max-steps "$STEPS" \
      --threads 1 --seed 0 --quiet
  saliency-ssl fidelity "$SHARED/cifar10/test" --cache "$CACHE" --surrogate "$OUT/n$n/surrogate.pt" \
      --json "$OUT/n${n}_test.json" --quiet
done
