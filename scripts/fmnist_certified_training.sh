#!/usr/bin/env bash
# Certified training on Fashion-MNIST at eps = 0.1 (linf): a normally trained CNN vs IBP, and an ACERT
# sweep over kappa whose accuracy / average-certified-radius trade-off is plotted.
# Usage: bash scripts/fmnist_certified_training.sh [OUT_DIR=runs/certtrain] [EPOCHS=4] [SKIP=10]
set -euo pipefail
OUT=${1:-runs/certtrain}; EPOCHS=${2:-4}; SKIP=${3:-10}
mkdir -p "$OUT"
fastcert train --dataset fashion-mnist --arch cnn_ibp --method none --epochs "$EPOCHS" --lr 3e-3 --quiet --out "$OUT/normal.pt"
fastcert train --dataset fashion-mnist --arch cnn_ibp --method ibp --eps 0.1 --kappa 0.5 --epochs "$EPOCHS" --lr 3e-3 --quiet --out "$OUT/ibp.pt"
for k in 0.2 0.5 0.8; do
  fastcert train --dataset fashion-mnist --arch cnn_ibp --method acert --eps 0.1 --kappa $k --epochs "$EPOCHS" --lr 3e-3 --quiet --out "$OUT/acert_$k.pt"
done
for m in normal ibp acert_0.2 acert_0.5 acert_0.8; do
  fastcert certify --method ibp --model "$OUT/$m.pt" --dataset fashion-mnist --eps 0.05,0.1 --skip "$SKIP" --batch 500 --quiet --out "$OUT/$m.tsv"
done
fastcert certify --method crown-ibp --model "$OUT/ibp.pt" --dataset fashion-mnist --eps 0.05,0.1 --skip "$SKIP" --batch 500 --quiet --out "$OUT/ibp_crown.tsv"
fastcert analyze "$OUT"/normal.tsv "$OUT"/ibp.tsv "$OUT"/ibp_crown.tsv "$OUT"/acert_0.2.tsv "$OUT"/acert_0.5.tsv "$OUT"/acert_0.8.tsv \
  --labels normal,ibp,ibp-crown,acert-k0.2,acert-k0.5,acert-k0.8 --radii 0,0.05,0.1
fastcert analyze "$OUT"/acert_0.2.tsv "$OUT"/acert_0.5.tsv "$OUT"/acert_0.8.tsv "$OUT"/ibp.tsv \
  --labels kappa=0.2,kappa=0.5,kappa=0.8,ibp --tradeoff "$OUT/tradeoff.png"
