#!/usr/bin/env bash
# Stratified discrete (l0) smoothing on Fashion-MNIST end to end: exact thresholds, a model trained
# with discrete noise, certification, and ACC@r for r = 0..5.
# Usage: bash scripts/fmnist_discrete.sh [OUT_DIR=runs/discrete] [KEEP=0.2] [EPOCHS=3] [SKIP=50] [N=10000]
set -euo pipefail
OUT=${1:-runs/discrete}; A=${2:-0.2}; EPOCHS=${3:-3}; SKIP=${4:-50}; N=${5:-10000}
mkdir -p "$OUT"
fastcert threshold --keep "$A" --K 255 --max-radius 20 --exact --out "$OUT/thresholds.tsv"
fastcert train --dataset fashion-mnist --arch lenet --method discrete --keep "$A" --K 255 \
  --epochs "$EPOCHS" --batch 256 --quiet --out "$OUT/fm_discrete.pt"
fastcert certify --model "$OUT/fm_discrete.pt" --dataset fashion-mnist --noise discrete \
  --keep "$A" --K 255 --n0 100 --n "$N" --alpha 0.001 --skip "$SKIP" --quiet --out "$OUT/fm_discrete.tsv"
fastcert analyze "$OUT/fm_discrete.tsv" --thresholds "$OUT/thresholds.tsv" --radii 0,1,2,3,4,5
fastcert analyze "$OUT/fm_discrete.tsv" --radii 0,1,2,3,4,5
