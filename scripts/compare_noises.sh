#!/usr/bin/env bash
# Gaussian vs Laplace vs uniform smoothing on Fashion-MNIST, certified accuracy against radius in l1,
# l2 and linf (one figure per norm). Noise scales are matched in variance (sigma^2): Laplace scale
# sigma/sqrt(2), uniform half-width sigma*sqrt(3).
# Usage: bash scripts/compare_noises.sh [OUT_DIR=runs/noises] [SIGMA=0.25] [EPOCHS=3] [SKIP=50] [N=10000]
set -euo pipefail
OUT=${1:-runs/noises}; SIGMA=${2:-0.25}; EPOCHS=${3:-3}; SKIP=${4:-50}; N=${5:-10000}
mkdir -p "$OUT"
declare -A SCALE=(
  [gaussian]=$SIGMA
  [laplace]=$(python3 -c "print($SIGMA / 2 ** 0.5)")
  [uniform]=$(python3 -c "print($SIGMA * 3 ** 0.5)")
)
for m in gaussian laplace uniform; do
  fastcert train --dataset fashion-mnist --arch lenet --method $m --sigma "${SCALE[$m]}" \
    --epochs "$EPOCHS" --batch 256 --quiet --out "$OUT/fm_$m.pt"
  fastcert certify --model "$OUT/fm_$m.pt" --dataset fashion-mnist --noise $m --sigma "${SCALE[$m]}" \
    --n0 100 --n "$N" --alpha 0.001 --skip "$SKIP" --quiet --out "$OUT/fm_$m.tsv"
done
fastcert analyze "$OUT"/fm_gaussian.tsv "$OUT"/fm_laplace.tsv "$OUT"/fm_uniform.tsv \
  --labels gaussian,laplace,uniform --column radius_l2 --compare "$OUT/fm_noises"
