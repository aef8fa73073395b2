#!/usr/bin/env bash
# Experiment: does the surrogate serve pretraining as well as the exact targets? DetCon-S (the mask-aware recipe
# that gained most on CIFAR-10) pretrained with every target predicted by a surrogate that never saw a pretraining
# image, against the same recipe on exact cached targets (configs/mask_aware_cifar10_short.json and
# configs/mask_aware_cifar10_short_seed1.json: two pretraining seeds, whose spread is the yardstick), and the same
# recipe from a cache that holds the exact targets of only half the pretraining images, the surrogate filling in
# the rest (--aug-source cache,surrogate).
#
#   bash experiments/surrogate_parity.sh      (needs train50k labelled into runs/caches/cifar: saliency-ssl label)
#
# The surrogate trains for 25 minutes of wall time on one torch thread on 10,000 of the 40,000 CIFAR-10 training
# images outside the pretraining set; experiments/collect_results.py parity writes results/surrogate_parity.json.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
CACHE=${CACHE:-runs/caches/cifar}
export OMP_NUM_THREADS=1
python experiments/cifar_split.py "$SHARED/cifar10/train50k" runs/data/cifar40k --skip 1000
saliency-ssl label runs/data/cifar40k --cache "$CACHE" --quiet
saliency-ssl train-surrogate runs/data/cifar40k --cache "$CACHE" --out runs/exp/parity/surrogate --limit 10000 \
    --max-minutes 25 --threads 1 --seed 0 --quiet
saliency-ssl fidelity "$SHARED/cifar10/test" --cache "$CACHE" --surrogate runs/exp/parity/surrogate/surrogate.pt \
    --json runs/exp/parity/surrogate/test.json --quiet
saliency-ssl grid configs/mask_aware_cifar10_short.json --quiet
saliency-ssl grid configs/mask_aware_cifar10_short_seed1.json --only simclr__default,detcon-simclr__default --quiet
saliency-ssl grid configs/surrogate_parity_cifar10_short.json --quiet
python experiments/partial_cache.py "$CACHE" "$SHARED/cifar10/train" runs/caches/cifar_half --share 0.5
saliency-ssl grid configs/surrogate_parity_half_cifar10_short.json --quiet
