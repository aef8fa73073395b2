#!/usr/bin/env bash
# Experiment: the mask-aware recipes on real photos with real masks (the paper's protocol): pretrain a ResNet-18
# on unlabelled photos, then fine-tune an FPN segmenter on human person masks (Clothing Co-Parsing) and horse masks
# (Weizmann) at label fractions, 3 seeds, against `default`, the paper's painted views and a random backbone.
#
#   bash experiments/photo_judgement.sh [RECIPE ...]       (default: every recipe, one after another)
#   SEED=1 bash experiments/photo_judgement.sh default=simclr:default sal=simclr:sal+default
#
# RECIPE is NAME=METHOD:POLICY, e.g. salcrop=simclr:salcrop+default. Pretraining data: the 1,095 unlabelled
# street photos and the 200 BSDS500 photos, linked into one folder; targets from the exact cache of those photos
# (saliency-ssl label, defaults). Everything lands in runs/exp/photos/; experiments/collect_results.py photos
# writes results/mask_aware_photos_*.json from it. SEED (default 0) is the pretraining seed; a seed other than
# 0 writes to pretrain_sSEED/, clothing_sSEED/ and horses_sSEED/ (the fine-tuning seeds stay 0, 1, 2), which
# collect_results pools with seed 0.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
OUT=${OUT:-runs/exp/photos}
CACHE=${CACHE:-runs/caches/photos}
DATA=runs/data/photos_unlabelled
SIZE=${SIZE:-96}
EPOCHS=${EPOCHS:-30}
SEED=${SEED:-0}
if ! [[ "$SEED" =~ ^[0-9]+$ ]]; then echo "SEED must be a whole number, not '$SEED'" >&2; exit 2; fi
SEED=$((10#$SEED))
if [ "$SEED" = 0 ]; then suffix=""; else suffix="_s$SEED"; fi
RECIPES=("$@")
if [ ${#RECIPES[@]} -eq 0 ]; then
  RECIPES=(default=simclr:default salcrop=simclr:salcrop+default comp=simclr:comp0.3+default
           detcon=detcon-simclr:default sal=simclr:sal+default sal0.5=simclr:sal0.5+default random=random:)
fi
python experiments/link_folders.py "$DATA" "$SHARED/clothing_parsing/unlabelled" "$SHARED/bsds500_test/images"
saliency-ssl label "$DATA" --cache "$CACHE" --quiet
for recipe in "${RECIPES[@]}"; do
  name=${recipe%%=*}; spec=${recipe#*=}; method=${spec%%:*}; policy=${spec#*:}
  if [ "$method" = random ]; then
    backbone=random  # its initialisation seed is the pretraining seed
  else
    saliency-ssl pretrain --data "$DATA" --method "$method" --policy "$policy" --aug-source cache --cache "$CACHE" \
        --image-size "$SIZE" --epochs "$EPOCHS" --batch-size 64 --seed "$SEED" --out "$OUT/pretrain$suffix/$name" \
        --resume --quiet
    backbone="$OUT/pretrain$suffix/$name/backbone.pt"
  fi
  # 300 of the 1,003 labelled street photos and 100 of the 328 horses are the fixed test splits (by content hash)
  saliency-ssl segment --backbone "$backbone" --backbone-seed "$SEED" --image-size "$SIZE" \
      --images "$SHARED/clothing_parsing/images" \
      --masks "$SHARED/clothing_parsing/masks" --test-split 0.2991 --fractions 0.1,0.25,0.5,1.0 --seeds 3 --epochs 5 \
      --out "$OUT/clothing$suffix/$name"
  saliency-ssl segment --backbone "$backbone" --backbone-seed "$SEED" --image-size "$SIZE" \
      --images "$SHARED/weizmann_horses/images" \
      --masks "$SHARED/weizmann_horses/masks" --test-split 0.3049 --fractions 0.1,0.25,0.5,1.0 --seeds 3 --epochs 10 \
      --out "$OUT/horses$suffix/$name"
done
