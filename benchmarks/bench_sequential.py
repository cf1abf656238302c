"""Sequential / adaptive certification vs fixed-n CERTIFY on a Fashion-MNIST Gaussian model.

Two parts:

* pytest-benchmark timings (``pytest benchmarks/bench_sequential.py --benchmark-enable``): one
  easy Fashion-MNIST input certified at radii 0.25/0.5/0.75 by the sequential procedure and by the
  straightforward fixed-n reference (Cohen et al. CERTIFY), both with n (max_n) = 100,000.
* the study (``python benchmarks/bench_sequential.py --points 50 [--arch cnn_small]``): trains a
  small model (default ``mlp`` 784-256-256-10, because cnn_small runs at ~650 samples/s on the
  2-core dev machine; ``--arch cnn_small`` works the same way), with Gaussian noise augmentation
  sigma = 0.25, one short epoch on 20,000 images, cached under build/seq/, then on the first ``--points`` test images compares
  - certified accuracy at 0.25 / 0.5 / 0.75 and total forward passes: fixed n = 100,000 vs sequential
    (max_n = 100,000), alpha = 0.001, n0 = 100;
  - the adaptive mode's average certified radius (ACR) vs fixed-n at the same total number of samples.
  Results go to build/seq/study.json and a figure build/seq/study.png.
"""
from __future__ import annotations

import argparse
import json
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
from fastcert.models.zoo import build_model  # noqa: E402
from fastcert.models.checkpoint import load_checkpoint, save_checkpoint

OUT = ROOT / "build" / "seq"
SIGMA = 0.25
RADII = (0.25, 0.5, 0.75)
ALPHA = 0.001
N0 = 100
N_FIXED = 100_000


def trained_model(arch: str = "cnn_small", train_size: int = 20_000, epochs: int = 1, seed: int = 0):
    """``arch`` trained with Gaussian noise augmentation (sigma 0.25); cached checkpoint."""
    ckpt = OUT / f"fmnist_{arch}_s025.pt"
    if ckpt.exists():
        return load_checkpoint(ckpt)[0]
    torch.manual_seed(seed)
    ds = fastcert.load_dataset("fashion-mnist", "train")
    idx = torch.randperm(len(ds.y))[:train_size]
    x, y = ds.x[idx], ds.y[idx]
    model = build_model(arch, (1, 28, 28), 10, ds.mean, ds.std)
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
    save_checkpoint(ckpt, model, arch=arch, input_shape=(1, 28, 28), num_classes=10, mean=ds.mean,
                    std=ds.std, config={"sigma": SIGMA, "train_size": train_size, "epochs": epochs})
    return model


def _acc(rows, key):
    return {r: float(np.mean([row[key][str(r)] for row in rows])) for r in RADII}


def study(points: int, batch: int, adaptive_tol: float, fixed_points: int | None, arch: str = "mlp"):
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = trained_model(arch)
    test = fastcert.load_dataset("fashion-mnist", "test")
    smooth = fastcert.Smooth(model, 10, fastcert.Gaussian(SIGMA))
    rows = []
    t_seq = t_fix = t_ad = 0.0
    for i in range(points):
        x, y = test.x[i], int(test.y[i])
        row = {"idx": i, "label": y}
        t = time.perf_counter()
        s = smooth.certify(x, N0, N_FIXED, ALPHA, batch, seed=i, radii=list(RADII), sequential=True)
        t_seq += time.perf_counter() - t
        row["seq"] = {str(r): bool(s.certified[r] and s.prediction == y) for r in RADII}
        row["seq_n"] = s.n_used
        t = time.perf_counter()
        a = smooth.certify(x, N0, N_FIXED, ALPHA, batch, seed=i, sequential=True, mode="adaptive", tol=adaptive_tol)
        t_ad += time.perf_counter() - t
        row["ad_radius"] = float(a.radius) if a.prediction == y else 0.0
        row["ad_n"] = a.n_used
        if fixed_points is None or i < fixed_points:
            t = time.perf_counter()
            f = smooth.certify(x, N0, N_FIXED, ALPHA, batch, seed=i, radii=list(RADII))
            t_fix += time.perf_counter() - t
            row["fix"] = {str(r): bool(f.certified[r] and f.prediction == y) for r in RADII}
            row["fix_n"] = f.n_used
            row["fix_radius"] = float(f.radius) if f.prediction == y else 0.0
        rows.append(row)
        print(f"[{i}] label {y} seq_n {row['seq_n']} ad_n {row['ad_n']} ad_r {row['ad_radius']:.3f} "
              f"fix {row.get('fix')} seq {row['seq']}", flush=True)
    # adaptive vs fixed-n at equal total samples: per-point n = mean adaptive estimation samples
    n_eq = int(round(np.mean([r["ad_n"] for r in rows]))) - N0
    eq_radius = []
    t = time.perf_counter()
    for i in range(points):
        x, y = test.x[i], int(test.y[i])
        f = smooth.certify(x, N0, max(n_eq, 1), ALPHA, batch, seed=i)
        eq_radius.append(float(f.radius) if f.prediction == y else 0.0)
    t_eq = time.perf_counter() - t
    both = [r for r in rows if "fix" in r]
    res = {
        "arch": arch, "points": points, "fixed_points": len(both), "sigma": SIGMA, "alpha": ALPHA, "n0": N0, "n_fixed": N_FIXED,
        "certified_accuracy_fixed": _acc(both, "fix"),
        "certified_accuracy_seq_same_points": _acc(both, "seq"),
        "certified_accuracy_seq_all_points": _acc(rows, "seq"),
        "passes_fixed_same_points": int(sum(r["fix_n"] for r in both)),
        "passes_seq_same_points": int(sum(r["seq_n"] for r in both)),
        "passes_seq_all_points": int(sum(r["seq_n"] for r in rows)),
        "seconds_fixed": t_fix, "seconds_seq": t_seq, "seconds_adaptive": t_ad, "seconds_fixed_equal": t_eq,
        "adaptive_tol": adaptive_tol,
        "acr_adaptive": float(np.mean([r["ad_radius"] for r in rows])),
        "passes_adaptive": int(sum(r["ad_n"] for r in rows)),
        "acr_fixed_equal_samples": float(np.mean(eq_radius)), "n_fixed_equal_samples": n_eq,
        "passes_fixed_equal_samples": int(points * (N0 + n_eq)),
        "acr_fixed_100k_same_points": float(np.mean([r["fix_radius"] for r in both])) if both else None,
        "acr_adaptive_same_points": float(np.mean([r["ad_radius"] for r in both])) if both else None,
        "rows": rows,
    }
    res["speedup_passes"] = res["passes_fixed_same_points"] / max(res["passes_seq_same_points"], 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "study.json").write_text(json.dumps(res, indent=1))
    _figure(res, rows)
    summary = {k: v for k, v in res.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    return res


def _figure(res, rows):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    xs = np.arange(len(RADII))
    ax[0].bar(xs - 0.2, [res["certified_accuracy_fixed"][r] for r in RADII], 0.4, label="fixed n=100k")
    ax[0].bar(xs + 0.2, [res["certified_accuracy_seq_same_points"][r] for r in RADII], 0.4, label="sequential")
    ax[0].set_xticks(xs, [str(r) for r in RADII])
    ax[0].set_xlabel("l2 radius")
    ax[0].set_ylabel("certified accuracy")
    ax[0].legend()
    ax[1].hist([r["seq_n"] for r in rows], bins=np.logspace(2, 5.1, 20))
    ax[1].set_xscale("log")
    ax[1].set_xlabel("samples used per input (sequential)")
    fig.tight_layout()
    fig.savefig(OUT / "study.png", dpi=100)


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
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--fixed-points", type=int, default=None, help="run fixed n=100k only on the first K points")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--tol", type=float, default=0.05)
    p.add_argument("--arch", default="mlp", help="mlp (default: ~30x cheaper on CPU) or cnn_small")
    p.add_argument("--train-only", action="store_true")
    a = p.parse_args()
    if a.train_only:
        t = time.perf_counter()
        trained_model(a.arch)
        print(f"trained in {time.perf_counter() - t:.1f}s")
    else:
        study(a.points, a.batch, a.tol, a.fixed_points, a.arch)
