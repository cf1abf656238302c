"""Workloads shared by ``benchmarks/`` (pytest-benchmark) and ``python -m fastcert.cli bench`` (a short
table of ratios). Each workload returns (ours, reference) zero-argument callables doing the same
work, so both measure exactly the same thing."""
from __future__ import annotations

import time

import numpy as np
import torch


def noise_workload(shape=(1, 28, 28), batch: int = 1000, sigma: float = 0.25, kind: str = "gaussian"):
    """Noisy batch generation: fused kernel into a preallocated buffer vs repeat + randn_like + add."""
    from . import _core
    from .noise import Gaussian, Laplace, Uniform
    from .reference.smoothing import reference_noise

    x = torch.rand(shape)
    noise = {"gaussian": Gaussian, "laplace": Laplace, "uniform": Uniform}[kind](sigma)
    ntype, scale, keep, K = noise.kernel_params()
    buf = torch.empty((batch, x.numel()))
    xv, bv = x.view(-1).numpy(), buf.numpy()
    counter = [0]

    def ours():
        _core.sample(xv, bv, 1, 1, counter[0], ntype, scale, keep, K)
        counter[0] += batch
        return buf

    def ref():
        return reference_noise(x, batch, kind, sigma)

    return ours, ref, batch * x.numel()


def certify_workload(arch: str = "cnn_small", shape=(1, 28, 28), n: int = 10_000, batch: int = 1000,
                     sigma: float = 0.25, seed: int = 0):
    """End-to-end Gaussian certification of one input at equal n: fastcert.Smooth vs the reference."""
    from .models import build_model
    from .noise import Gaussian
    from .reference.smoothing import ReferenceSmooth
    from .smoothing import Smooth

    torch.manual_seed(seed)
    model = build_model(arch, shape, 10).eval()
    x = torch.rand(shape)
    smooth = Smooth(model, 10, Gaussian(sigma))
    ref = ReferenceSmooth(model, 10, sigma)

    def ours():
        return smooth.certify(x, 100, n, 0.001, batch, seed=seed)

    def reference():
        return ref.certify(x, 100, n, 0.001, batch, seed=seed)

    return ours, reference, n + 100


def forward_workload(arch="cnn_small", shape=(1, 28, 28), batch=1000):
    """The model's own forward pass on a batch (the floor of certification)."""
    from .models import build_model

    model = build_model(arch, shape, 10).eval()
    xb = torch.rand(batch, *shape)

    def fwd():
        with torch.inference_mode():
            return model(xb)

    return fwd


def best_of(fn, repeats: int = 5, min_time: float = 0.2) -> float:
    """Best-of-``repeats`` seconds per call (each repeat loops until ``min_time`` has passed)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        best = min(best, dt / calls)
    return best


def run_table(quick: bool = True, log=print) -> list[dict]:
    """The short benchmark table of ``fastcert.cli bench``: one row per kernel vs its reference."""
    rows = []
    reps = 3 if quick else 7
    for kind in ("gaussian", "laplace", "uniform"):
        ours, ref, work = noise_workload(kind=kind)
        to, tr = best_of(ours, reps), best_of(ref, reps)
        rows.append({"benchmark": f"noise into batch ({kind}, 1000x784)", "ours_s": to, "ref_s": tr,
                     "ours_rate": work / to, "ref_rate": work / tr, "unit": "numbers/s"})
        log(_fmt(rows[-1]))
    n = 2000 if quick else 10_000
    ours, ref, work = certify_workload(n=n)
    to, tr = best_of(ours, reps, 0.0), best_of(ref, reps, 0.0)
    rows.append({"benchmark": f"certify cnn_small 28x28, n={n}", "ours_s": to, "ref_s": tr, "ours_rate": work / to,
                 "ref_rate": work / tr, "unit": "samples/s"})
    log(_fmt(rows[-1]))
    for extra in _optional_workloads(quick):
        rows.append(extra)
        log(_fmt(extra))
    return rows


def _optional_workloads(quick: bool):
    """Rows for the other capabilities (each skipped where its module is absent)."""
    yield from _stratified_rows(quick)


def _stratified_rows(quick: bool):
    try:
        from . import stratified
    except ImportError:
        return
    R = 40 if quick else 100
    radii = range(R + 1)
    ours = lambda: stratified.threshold("0.8", 255, radii)  # noqa: E731
    ref = lambda: stratified.threshold("0.8", 255, radii, backend="reference")  # noqa: E731
    if ours() != ref():
        raise AssertionError("compiled and reference thresholds differ")
    to, tr = best_of(ours, 3, 0.2), best_of(ref, 1, 0.0)
    yield {"benchmark": f"l0 thresholds K=255 r=0..{R} (vs gmpy2)", "ours_s": to, "ref_s": tr,
           "ours_rate": (R + 1) / to, "ref_rate": (R + 1) / tr, "unit": "radii/s"}


def _fmt(r: dict) -> str:
    ratio = r["ref_s"] / r["ours_s"] if r["ours_s"] > 0 else float("nan")
    return (f"{r['benchmark']:<44} ours {r['ours_s'] * 1e3:9.2f} ms   reference {r['ref_s'] * 1e3:9.2f} ms   "
            f"speed-up {ratio:6.2f}x")


