"""Workloads shared by ``benchmarks/`` (pytest-benchmark) and ``python -m fastcert.cli bench`` (a short
table of ratios). Each workload returns (ours, reference) zero-argument callables doing the same
work, so both measure exactly the same thing."""
from __future__ import annotations

import time

import numpy as np
import torch


def noise_workload(shape=(1, 28, 28), batch: int = 1000, sigma: float = 0.25, kind: str = "gaussian"):
    """Noisy batch generation: fused kernel into a preallocated buffer vs repeat + randn_like + add."""
    from fastcert import _native
    from fastcert.smoothing.noise import Gaussian, Laplace, Uniform
    from fastcert.smoothing.reference import reference_noise

    x = torch.rand(shape)
    noise = {"gaussian": Gaussian, "laplace": Laplace, "uniform": Uniform}[kind](sigma)
    ntype, scale, keep, K = noise.kernel_params()
    buf = torch.empty((batch, x.numel()))
    xv, bv = x.view(-1).numpy(), buf.numpy()
    counter = [0]

    def ours():
        _native.sample_cpu(xv, bv, 1, 1, counter[0], ntype, scale, keep, K)
        counter[0] += batch
        return buf

    def ref():
        return reference_noise(x, batch, kind, sigma)

    return ours, ref, batch * x.numel()


def certify_workload(arch: str = "cnn_small", shape=(1, 28, 28), n: int = 10_000, batch: int = 1000,
                     sigma: float = 0.25, seed: int = 0):
    """End-to-end Gaussian certification of one input at equal n: fastcert.Smooth vs the reference."""
    from fastcert.models.zoo import build_model
    from fastcert.smoothing.noise import Gaussian
    from fastcert.smoothing.reference import ReferenceSmooth
    from fastcert.smoothing.smooth import Smooth

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
    from fastcert.models.zoo import build_model

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


def run_table(quick: bool = True, log=print, gpu: bool = False) -> list[dict]:
    """The short benchmark table of ``fastcert.cli bench``: one row per kernel vs its reference (CPU
    paths; with ``gpu`` also the GPU rows, which need CUDA and fastcert._core_cuda)."""
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
    for extra in _optional_workloads(quick, gpu):
        rows.append(extra)
        log(_fmt(extra))
    return rows


def _optional_workloads(quick: bool, gpu: bool = False):
    """Rows for the other capabilities (each skipped where its module is absent), then the GPU rows
    where a CUDA device and fastcert._core_cuda exist."""
    yield from _stratified_rows(quick)
    yield from _ibp_rows(quick)
    yield from _distance_rows(quick)
    if gpu:
        yield from gpu_rows(quick)


def naive_ibp(model, x, eps):
    """Textbook interval arithmetic (the straightforward reference): lower/upper through every layer
    with W+ / W- products; linf ball clipped to [0, 1] (:func:`fastcert.ibp.reference.reference_bounds`)."""
    from fastcert.ibp.reference import reference_bounds

    return reference_bounds(model, x, eps)


def ibp_workload(batch: int = 128, device="cpu", backend="torch"):
    """IBP bounds of the CIFAR CNN-7 (17M parameters): fastcert (``backend``) vs :func:`naive_ibp`, and
    the forward-pass floor. Returns (ours, reference, forward)."""
    from fastcert.ibp import ibp_bounds
    from fastcert.models.zoo import build_model

    torch.manual_seed(0)
    m = build_model("cnn7", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval().to(device)
    x = torch.rand(batch, 3, 32, 32, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def ours():
        with torch.no_grad():
            out = ibp_bounds(m, x, 2 / 255, backend=backend)
        sync()
        return out

    def reference():
        with torch.no_grad():
            out = naive_ibp(m, x, 2 / 255)
        sync()
        return out

    def forward():
        with torch.no_grad():
            out = m(x)
        sync()
        return out

    return ours, reference, forward


def _ibp_rows(quick: bool):
    batch = 32 if quick else 128
    ours, ref, fwd = ibp_workload(batch)
    lo, hi = ours()
    nlo, nhi = ref()
    if not torch.allclose(lo, nlo, rtol=1e-4, atol=1e-3 * float(nhi.abs().max())):
        raise AssertionError("fastcert and naive IBP bounds differ")
    reps = 2 if quick else 5
    to, tr, tf = best_of(ours, reps, 0.0), best_of(ref, reps, 0.0), best_of(fwd, reps, 0.0)
    yield {"benchmark": f"IBP CNN-7 batch {batch} (vs naive W+/W-)", "ours_s": to, "ref_s": tr,
           "ours_rate": batch / to, "ref_rate": batch / tr, "unit": "points/s"}
    yield {"benchmark": f"IBP CNN-7 batch {batch} (vs 1 forward)", "ours_s": to, "ref_s": tf,
           "ours_rate": batch / to, "ref_rate": batch / tf, "unit": "points/s", "floor": True}


def _distance_rows(quick: bool):
    from fastcert.robustness.distances import class_distances, class_distances_torch
    from fastcert.data import load_dataset

    try:
        te, tr = load_dataset("fashion-mnist", "test"), load_dataset("fashion-mnist", "train")
        name, nq, nr = "Fashion-MNIST", (300 if quick else 1000), (2000 if quick else 6000)
    except (FileNotFoundError, ValueError, OSError):
        te, tr = load_dataset("digits", "test"), load_dataset("digits", "train")
        name, nq, nr = "digits", len(te), len(tr)
    x, y, ref = te.x[:nq], te.y[:nq], (tr.x[:nr], tr.y[:nr])
    for norm in ("l1", "linf"):
        ours = lambda: class_distances(x, y, (norm,), ref)  # noqa: E731
        theirs = lambda: class_distances_torch(x, y, (norm,), ref)  # noqa: E731
        a, b = ours(), theirs()
        if not np.allclose(a[norm]["inter"], b[norm]["inter"], rtol=1e-5):
            raise AssertionError(f"class distances ({norm}) differ from torch.cdist")
        to, tr_ = best_of(ours, 2, 0.0), best_of(theirs, 1, 0.0)
        yield {"benchmark": f"class distances {norm} {name} {nq}x{nr} (vs cdist)", "ours_s": to, "ref_s": tr_,
               "ours_rate": nq * nr / to, "ref_rate": nq * nr / tr_, "unit": "pairs/s"}


def gpu_certify_workload(arch: str = "resnet110", shape=(3, 32, 32), n: int = 100_000, batch: int = 1000,
                         sigma: float = 0.25, seed: int = 0, cuda_graph: bool = False, autocast=None):
    """End-to-end Gaussian certification of one input on the GPU at equal n: fastcert.Smooth (device-side
    noise and counts; optionally a CUDA graph / autocast) vs the reference loop, and the model's own
    forward passes over the same n + 100 samples (the floor). Returns (ours, reference, forward)."""
    from fastcert.models.zoo import build_model
    from fastcert.smoothing.noise import Gaussian
    from fastcert.smoothing.reference import ReferenceSmooth
    from fastcert.smoothing.smooth import Smooth

    torch.manual_seed(seed)
    model = build_model(arch, shape, 10).eval().cuda()
    x = torch.rand(shape, device="cuda")
    smooth = Smooth(model, 10, Gaussian(sigma), device="cuda", cuda_graph=cuda_graph, autocast=autocast)
    ref = ReferenceSmooth(model, 10, sigma)
    xb = torch.rand(batch, *shape, device="cuda")

    def ours():
        return smooth.certify(x, 100, n, 0.001, batch, seed=seed)

    def reference():
        return ref.certify(x, 100, n, 0.001, batch, seed=seed)

    def forward():
        with torch.inference_mode():
            for _ in range(-(-(n + 100) // batch)):
                model(xb)
        torch.cuda.synchronize()

    return ours, reference, forward


def gpu_rows(quick: bool):
    """GPU rows: noise on the device, end-to-end certification, IBP Triton vs torch (needs CUDA)."""
    if not torch.cuda.is_available():
        raise RuntimeError("the GPU rows need a CUDA device (torch sees none)")
    from fastcert import _native

    _native.require_cuda("the GPU rows")
    n = 10_000 if quick else 100_000
    reps = 2 if quick else 3
    ours, ref, fwd = gpu_certify_workload(n=n)
    to, tr, tf = best_of(ours, reps, 0.0), best_of(ref, reps, 0.0), best_of(fwd, reps, 0.0)
    yield {"benchmark": f"GPU certify resnet110 n={n} (vs reference)", "ours_s": to, "ref_s": tr,
           "ours_rate": n / to, "ref_rate": n / tr, "unit": "samples/s"}
    yield {"benchmark": f"GPU certify resnet110 n={n} (vs forwards)", "ours_s": to, "ref_s": tf,
           "ours_rate": n / to, "ref_rate": n / tf, "unit": "samples/s", "floor": True}
    og, _, _ = gpu_certify_workload(n=n, cuda_graph=True)
    tg = best_of(og, reps, 0.0)
    yield {"benchmark": f"GPU certify resnet110 n={n} cuda-graph (vs ref)", "ours_s": tg, "ref_s": tr,
           "ours_rate": n / tg, "ref_rate": n / tr, "unit": "samples/s"}
    try:
        import triton  # noqa: F401
    except ImportError:
        return
    ours, ref, fwd = ibp_workload(128, device="cuda", backend="triton")
    torch_path, _, _ = ibp_workload(128, device="cuda", backend="torch")
    to, tt, tf = best_of(ours, 5, 0.2), best_of(torch_path, 5, 0.2), best_of(fwd, 5, 0.2)
    yield {"benchmark": "GPU IBP CNN-7 b128 triton (vs torch path)", "ours_s": to, "ref_s": tt,
           "ours_rate": 128 / to, "ref_rate": 128 / tt, "unit": "points/s"}
    yield {"benchmark": "GPU IBP CNN-7 b128 triton (vs 2 forwards)", "ours_s": to, "ref_s": 2 * tf,
           "ours_rate": 128 / to, "ref_rate": 64 / tf, "unit": "points/s", "floor": True}


def _stratified_rows(quick: bool):
    try:
        from fastcert.smoothing import stratified
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
    if r.get("floor"):  # the reference is a floor (forward passes): report what we cost on top of it
        ratio = r["ours_s"] / r["ref_s"] if r["ref_s"] > 0 else float("nan")
        return (f"{r['benchmark']:<56} ours {r['ours_s'] * 1e3:9.2f} ms   floor     {r['ref_s'] * 1e3:9.2f} ms   "
                f"cost     {ratio:6.2f}x the floor")
    ratio = r["ref_s"] / r["ours_s"] if r["ours_s"] > 0 else float("nan")
    return (f"{r['benchmark']:<56} ours {r['ours_s'] * 1e3:9.2f} ms   reference {r['ref_s'] * 1e3:9.2f} ms   "
            f"speed-up {ratio:6.2f}x")


