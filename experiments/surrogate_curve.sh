#!/usr/bin/env bash
# Experiment: CIFAR-10 surrogate fidelity against the amount of training data, at an equal number of optimiser
# steps (about 12,000 of batch 64; the epochs per size below give that), one torch thread each, then fidelity
# against the exact targets of the 10,000 test images. Up to 25,000 images come from the 40,000 CIFAR-10 training
# images outside the pretraining set (experiments/cifar_split.py), so those surrogates never saw a pretraining image;
# 50,000 is the whole training set.
#
#   bash experiments/surrogate_curve.sh        (needs the train50k and test images labelled into runs/caches/cifar)
set -euo pipefail
SHARED=${SHARED:-../shared/data}
CACHE=${CACHE:-runs/caches/cifar}
OUT=${OUT:-runs/exp/surrogate_curve}
export OMP_NUM_THREADS=1
python experiments/cifar_split.py "$SHARED/cifar10/train50k" runs/data/cifar40k --skip 1000
for spec in "5000 162 runs/data/cifar40k" "10000 81 runs/data/cifar40k" "25000 32 runs/data/cifar40k" \
            "50000 16 $SHARED/cifar10/train50k"; do
  set -- $spec
  n=$1; epochs=$2; data=$3
  limit=(); [ "$n" != 50000 ] && limit=(--limit "$n")
  python scripts/train_surrogate.py "$data" --cache "$CACHE" --out "$OUT/n$n" "${limit[@]}" --epochs "$epochs" \
      --threads 1 --quiet
  python scripts/eval_fidelity.py "$SHARED/cifar10/test" --cache "$CACHE" --surrogate "$OUT/n$n/surrogate.pt" \
      --json "$OUT/n${n}_test.json" --quiet
done
