"""Sound IBP (``ibp_bounds(..., sound=True)``) vs the plain float32 IBP on the CPU torch path: cost and
tightness at eps = 2/255, batch 128 (issue 18: time within 1.5x; average relative width increase <= 1%).

* pytest-benchmark timings: ``pytest benchmarks/bench_ibp_sound.py --benchmark-enable``
* the study: ``python benchmarks/bench_ibp_sound.py [--batch 128] [--rounds 3] [--threads N]``: per model
  (cnn_small, CNN-7 with random weights and BatchNorm statistics away from 0/1, inputs in [0, 1]),
  the median time of each mode over interleaved rounds, their ratio, and the mean / max over outputs of
  (width_sound / width_plain - 1).
"""
from __future__ import annotations

import argparse
import statistics
import time

import pytest
import torch
from torch import nn

import fastcert
from fastcert.models.zoo import build_model

EPS = 2 / 255
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def make(arch: str, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    m = build_model(arch, (3, 32, 32), 10, MEAN, STD).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 0.5 + 0.75)
    return m, torch.rand(batch, 3, 32, 32, generator=g)


def study(arch: str, batch: int, rounds: int) -> dict:
    m, x = make(arch, batch)
    times = {False: [], True: []}
    with torch.no_grad():
        for s in (False, True):  # warm-up (memoized weights)
            fastcert.ibp_bounds(m, x, EPS, backend="torch", sound=s)
        for _ in range(rounds):
            for s in (False, True):
                t0 = time.perf_counter()
                lo, hi = fastcert.ibp_bounds(m, x, EPS, backend="torch", sound=s)
                times[s].append(time.perf_counter() - t0)
                if s:
                    slo, shi = lo, hi
                else:
                    plo, phi = lo, hi
    rel = (shi - slo) / (phi - plo) - 1
    tp, ts = statistics.median(times[False]), statistics.median(times[True])
    return {"arch": arch, "batch": batch, "plain_s": tp, "sound_s": ts, "ratio": ts / tp,
            "width_mean": float(rel.mean()), "width_max": float(rel.max())}


@pytest.fixture(scope="module", params=["cnn_small", "cnn7"])
def model(request):
    return make(request.param, 128)


@pytest.mark.benchmark(group="IBP sound vs plain, batch 128 (CPU)")
@pytest.mark.parametrize("sound", [False, True])
def test_ibp_sound_vs_plain(benchmark, model, sound):
    m, x = model
    with torch.no_grad():
        lo, hi = benchmark.pedantic(fastcert.ibp_bounds, args=(m, x, EPS), kwargs={"backend": "torch", "sound": sound},
                                    rounds=3, iterations=1, warmup_rounds=1)
    assert bool((lo <= hi).all())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--arch", default="cnn_small,cnn7")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print("| model | batch | plain (s) | sound (s) | time ratio | mean width increase | max width increase |")
    print("|---|---|---|---|---|---|---|")
    for arch in a.arch.split(","):
        r = study(arch, a.batch, a.rounds)
        print(f"| {arch} | {r['batch']} | {r['plain_s']:.3f} | {r['sound_s']:.3f} | {r['ratio']:.2f}x | "
              f"{100 * r['width_mean']:.3f}% | {100 * r['width_max']:.3f}% |", flush=True)


if __name__ == "__main__":
    main()
