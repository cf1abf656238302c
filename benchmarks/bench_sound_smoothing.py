"""Sound smoothing (``Smooth(..., sound=True)``, lattice sampler) vs the ordinary float32 mode: cost and
tightness (issue 18: time within 1.2x; radii within 2% of the ordinary ones for >= 90% of points).

* pytest-benchmark timings (``pytest benchmarks/bench_sound_smoothing.py --benchmark-enable``): one
  digits input certified with n = 10,000 by each mode, and the two samplers alone on a (1000, 784) batch.
* the study (``python benchmarks/bench_sound_smoothing.py --points 100 --n 10000``): digits (cnn_small,
  6 epochs, levels 17) and Fashion-MNIST (lenet, one epoch on 10,000 images, levels 256), sigma 0.25,
  alpha 0.001, n0 100. Per point: both modes with the same seed, plus the ordinary mode with another
  seed (the Monte Carlo noise floor: the two modes draw different samples, so their radii differ by
  sampling noise even when the base classifier sees the same law; ``--no-noise-floor`` skips it).
  Results: build/sound/study_<dataset>.json.
* the deterministic cost of soundness, isolated from Monte Carlo noise: the SAME counts (and selected
  class) fed to both certificate computations, the ordinary one (Clopper-Pearson, sigma Phi^{-1}) and the
  sound one (TV correction, verified Clopper-Pearson bound, outward-rounded radius); done for the counts
  of both modes' runs of every point ("det_*" keys: fraction within 2%, largest relative radius
  difference, points whose decision (abstain or not) differs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fastcert
from fastcert import _native
from fastcert.models.checkpoint import load_checkpoint
from fastcert.smoothing.sound import lattice_table
from fastcert.training.loop import train

OUT = ROOT / "build" / "sound"
SIGMA = 0.25
ALPHA = 0.001
N0 = 100


def trained(dataset: str):
    """cnn_small on digits (6 epochs) or lenet on 10,000 Fashion-MNIST images (1 epoch); cached."""
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = OUT / f"{dataset}.pt"
    if not ckpt.exists():
        ds = fastcert.load_dataset(dataset, "train")
        if dataset == "digits":
            arch, epochs = "cnn_small", 6
        else:
            arch, epochs = "lenet", 1
            torch.manual_seed(0)
            idx = torch.randperm(len(ds.y))[:10_000]
            ds.x, ds.y = ds.x[idx], ds.y[idx]
        train(arch, ds, method="gaussian", sigma=SIGMA, epochs=epochs, batch_size=128, seed=0, out=ckpt,
              progress=False, log=lambda *_: None)
    return load_checkpoint(ckpt)[0]


def _det_pair(plain, sound, cert, d: int, n_used: int) -> dict:
    """Ordinary and sound certificates from the same counts and selected class (no sampling)."""
    counts = np.asarray(cert.counts, dtype=np.int64)
    c_a = int(cert.prediction) if cert.prediction != -1 else int(np.argmax(counts))
    a = plain.certificate_from_counts(c_a, counts, ALPHA, d, n_used)
    b = sound.certificate_from_counts(c_a, counts, ALPHA, d, n_used)
    return {"c_a": c_a, "k": int(counts[c_a]), "plain": [a.prediction, a.radius], "sound": [b.prediction, b.radius]}


def study(dataset: str, points: int, n: int, batch: int, noise_floor: bool = True) -> dict:
    model = trained(dataset)
    levels = 17 if dataset == "digits" else 256
    test = fastcert.load_dataset(dataset, "test")
    plain = fastcert.Smooth(model, 10, fastcert.Gaussian(SIGMA))
    sound = fastcert.Smooth(model, 10, fastcert.Gaussian(SIGMA), sound=True, levels=levels)
    sound.certify(test.x[0], N0, 100, ALPHA, batch, seed=0)  # builds the lattice table once (cached)
    rows, t_plain, t_sound = [], 0.0, 0.0
    for i in range(points):
        x, y = test.x[i], int(test.y[i])
        t = time.perf_counter()
        a = plain.certify(x, N0, n, ALPHA, batch, seed=i)
        t_plain += time.perf_counter() - t
        t = time.perf_counter()
        b = sound.certify(x, N0, n, ALPHA, batch, seed=i)
        t_sound += time.perf_counter() - t
        c = plain.certify(x, N0, n, ALPHA, batch, seed=i + 10**6) if noise_floor else None
        d = int(torch.as_tensor(x).numel())
        rows.append({"idx": i, "label": y, "plain": [a.prediction, a.radius], "sound": [b.prediction, b.radius],
                     "plain2": [c.prediction, c.radius] if c is not None else None, "tv": b.extra["tv_correction"],
                     "det": [_det_pair(plain, sound, a, d, N0 + n), _det_pair(plain, sound, b, d, N0 + n)]})
        if (i + 1) % 10 == 0:
            print(f"{dataset}: {i + 1}/{points} points, {t_plain:.0f} s / {t_sound:.0f} s", file=sys.stderr, flush=True)

    def within(u, v, tol=0.02):
        if u[0] != v[0]:
            return False
        if u[0] == -1:
            return True
        return abs(u[1] - v[1]) <= tol * max(u[1], 1e-12)

    dets = [dp for r in rows for dp in r["det"]]
    det_rel = [abs(dp["sound"][1] - dp["plain"][1]) / dp["plain"][1] for dp in dets
               if dp["plain"][0] != -1 and dp["sound"][0] != -1]
    res = {"dataset": dataset, "points": points, "n": n, "levels": levels, "sigma": SIGMA,
           "time_plain_s": t_plain, "time_sound_s": t_sound, "time_ratio": t_sound / t_plain,
           "sound_within_2pct_of_plain": float(np.mean([within(r["plain"], r["sound"]) for r in rows])),
           "plain_within_2pct_of_plain_other_seed": (float(np.mean([within(r["plain"], r["plain2"]) for r in rows]))
                                                     if noise_floor else None),
           "det_pairs": len(dets),
           "det_within_2pct": float(np.mean([within(dp["plain"], dp["sound"]) for dp in dets])),
           "det_max_rel_radius_diff": max(det_rel) if det_rel else 0.0,
           "det_median_rel_radius_diff": float(np.median(det_rel)) if det_rel else 0.0,
           "det_decision_differs": int(sum(dp["plain"][0] != dp["sound"][0] for dp in dets)),
           "mean_radius_plain": float(np.mean([r["plain"][1] for r in rows])),
           "mean_radius_sound": float(np.mean([r["sound"][1] for r in rows])),
           "certified_acc_plain": float(np.mean([r["plain"][0] == r["label"] for r in rows])),
           "certified_acc_sound": float(np.mean([r["sound"][0] == r["label"] for r in rows])),
           "max_tv_correction": max(r["tv"] for r in rows), "rows": rows}
    return res


# ----------------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def digits_setup():
    model = trained("digits")
    x = fastcert.load_dataset("digits", "test").x[0]
    return model, x


@pytest.mark.parametrize("sound", [False, True], ids=["ordinary", "sound"])
def test_certify_digits(benchmark, digits_setup, sound):
    model, x = digits_setup
    sm = fastcert.Smooth(model, 10, fastcert.Gaussian(SIGMA), sound=sound, levels=17)
    benchmark.group = "sound smoothing: certify digits n=10,000"
    cert = benchmark(lambda: sm.certify(x, N0, 10_000, ALPHA, 1000, seed=0))
    assert cert.prediction != -1


@pytest.mark.parametrize("sampler", ["ordinary", "lattice"])
def test_sampler_only(benchmark, sampler):
    out = np.empty((1000, 784), dtype=np.float32)
    x = (np.arange(784) % 256 / 255).astype(np.float32)
    base = (np.arange(784) % 256 * 2).astype(np.int64)
    thr, j_min, _ = lattice_table(SIGMA, 510)
    benchmark.group = "sound smoothing: sample (1000, 784)"
    if sampler == "ordinary":
        benchmark(lambda: _native.sample_cpu(x, out, 0, 1, 0, _native.NOISE_GAUSSIAN, SIGMA))
    else:
        benchmark(lambda: _native.lattice_sample_cpu(base, out, 0, 1, 0, thr, j_min, 510))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--datasets", default="digits,fashion-mnist")
    ap.add_argument("--no-noise-floor", action="store_true",
                    help="skip the third run (the ordinary mode with another seed)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets.split(","):
        res = study(ds, args.points, args.n, args.batch, noise_floor=not args.no_noise_floor)
        (OUT / f"study_{ds}_n{args.n}.json").write_text(json.dumps(res, indent=1))
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1), flush=True)


if __name__ == "__main__":
    main()
