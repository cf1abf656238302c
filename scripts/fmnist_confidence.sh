#!/usr/bin/env bash
# Certified confidence (Kumar et al. 2020) of a Gaussian Fashion-MNIST model with both measures, and
# the figure of the certified bound against the radius.
# Usage: bash scripts/fmnist_confidence.sh [OUT_DIR=runs/confidence] [SIGMA=0.25] [EPOCHS=3] [SKIP=50] [N=10000]
set -euo pipefail
OUT=${1:-runs/confidence}; SIGMA=${2:-0.25}; EPOCHS=${3:-3}; SKIP=${4:-50}; N=${5:-10000}
mkdir -p "$OUT"
if [ ! -f "$OUT/fm_gaussian.pt" ]; then
  fastcert train --dataset fashion-mnist --arch lenet --method gaussian --sigma "$SIGMA" \
    --epochs "$EPOCHS" --batch 256 --quiet --out "$OUT/fm_gaussian.pt"
fi
for measure in score margin; do
  fastcert certify --model "$OUT/fm_gaussian.pt" --dataset fashion-mnist --sigma "$SIGMA" \
    --confidence-measure $measure --radii 0,0.25,0.5,0.75,1.0,1.25,1.5 --n0 100 --n "$N" --alpha 0.001 \
    --skip "$SKIP" --quiet --out "$OUT/fm_$measure.tsv"
  fastcert analyze "$OUT/fm_$measure.tsv" --confidence-measure $measure --plot "$OUT/fm_confidence_$measure.png"
done
