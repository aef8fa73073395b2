#!/usr/bin/env bash
# Experiment: the photo surrogate at 96 px, judged against human masks, with and without variants.
#
# Trains `saliency-ssl train-surrogate` on the 1,295 photos without masks (clothing_parsing/unlabelled and
# bsds500_test/images, linked into one folder) for MINUTES of wall time on one torch thread, twice: with no variants
# and with 8 variants of every training photo (crops, rescales, mirrors at 96 px, each labelled as an image of its
# own; the held-out photos give none). Then each surrogate and the exact labeller are scored side by side against the
# human masks of three sets never trained on (clothing_parsing/images, weizmann_horses, salbench), at 96 px on the
# centre crop (`saliency-ssl fidelity --masks`, key vs_masks), and the surrogate's time per image at 96 px on one CPU
# thread is measured beside the exact labeller's on the original photos.
#
#   bash experiments/photo_surrogate.sh                   (labels what the cache lacks first: hours on 2 cores)
#   MINUTES=30 OUT=runs/exp/photo_surrogate_30 bash experiments/photo_surrogate.sh
#   python experiments/collect_results.py photo_surrogate --runs "$OUT"
#
# Outputs in $OUT: v0/ and v8/ (run folders: surrogate.pt, run.json, history.json, variants/; and clothing_parsing.json,
# weizmann_horses.json, salbench.json: fidelity with vs_masks), bench_surrogate.json, bench_labeller.json.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
CACHE=${CACHE:-runs/caches/photos}
OUT=${OUT:-runs/exp/photo_surrogate}
MINUTES=${MINUTES:-15}
PY=${PY:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# 1. exact targets (saliency-ssl label's defaults; a rerun labels nothing)
for set in clothing_parsing/unlabelled bsds500_test/images clothing_parsing/images weizmann_horses/images \
           salbench/images; do
  nice -n 10 $PY -m saliencyssl label "$SHARED/$set" --cache "$CACHE" --quiet
done
$PY experiments/link_folders.py runs/data/photos_unlabelled "$SHARED/clothing_parsing/unlabelled" \
    "$SHARED/bsds500_test/images"

# 2. the surrogates at 96 px, one torch thread, equal wall time
for k in 0 8; do
  nice -n 10 $PY -m saliencyssl train-surrogate runs/data/photos_unlabelled --cache "$CACHE" --out "$OUT/v$k" \
      --size 96 --max-minutes "$MINUTES" --variants "$k" --threads 1 --quiet
done

# 3. surrogates and exact labeller against human masks
for k in 0 8; do
  for set in clothing_parsing weizmann_horses salbench; do
    nice -n 10 $PY -m saliencyssl fidelity "$SHARED/$set/images" --cache "$CACHE" --surrogate "$OUT/v$k/surrogate.pt" \
        --masks "$SHARED/$set/masks" --json "$OUT/v$k/$set.json" --quiet
  done
done

# 4. time per image: the surrogate at 96 px on one thread; the exact labeller on the original photos (one by one,
#    faithful engine, as saliency-ssl label's workers run it)
$PY benchmarks/bench_surrogate.py --data "$SHARED/clothing_parsing/images" --image-size 96 --num-images 512 \
    --batch-size 128 --labeller-images 16 --surrogate "$OUT/v0/surrogate.pt" --threads 1 \
    --json "$OUT/bench_surrogate.json"
$PY benchmarks/bench_labeller.py "$SHARED/clothing_parsing/images" --engines faithful --limit 32 --json "$OUT/bench_labeller.json"
