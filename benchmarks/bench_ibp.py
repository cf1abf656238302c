"""IBP on the CIFAR CNN-7 (17M parameters, batch 128): fastcert's torch path (center-radius, BN folded
into memoized weights, in-place interval ReLU) against the straightforward lower/upper implementation
with W+ / W- splits, and against one plain forward pass (the floor); the autograd path (what
certified training differentiates); on a CUDA GPU also the Triton path against torch and against two
forward passes. And an ACERT training step against an IBP training step. On the small CNN cnn_ibp, the fused
CPU kernels (csrc/ibp: interval ReLU, CROWN ReLU step and concretization) against the torch ops they replace.

Run: pytest benchmarks/bench_ibp.py --benchmark-enable --benchmark-group-by=group
Targets (issue 6): CPU torch path within 2.5x of one forward pass; GPU Triton path >= 1.3x faster
than the straightforward implementation and within 1.2x of two forward passes. Issue 7: ACERT step
<= 4x an IBP step.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcert
from fastcert.bench.workloads import naive_ibp
from fastcert.training.certified import robust_loss
from fastcert.ibp.radius import certified_radius, margin_lower_bounds, spec_matrix
from fastcert.models.zoo import build_model

BATCH = 128


@pytest.fixture(scope="module")
def cnn7():
    torch.manual_seed(0)
    m = build_model("cnn7", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval()
    return m, torch.rand(BATCH, 3, 32, 32)


@pytest.mark.benchmark(group="IBP CNN-7 batch 128 (CPU)")
def test_forward_floor(benchmark, cnn7):
    m, x = cnn7
    with torch.no_grad():
        benchmark.pedantic(m, args=(x,), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="IBP CNN-7 batch 128 (CPU)")
def test_ibp_fastcert_torch(benchmark, cnn7):
    m, x = cnn7
    with torch.no_grad():
        lo, hi = benchmark.pedantic(fastcert.ibp_bounds, args=(m, x, 2 / 255), kwargs={"backend": "torch"},
                                    rounds=3, iterations=1, warmup_rounds=1)
        nlo, nhi = naive_ibp(m, x, 2 / 255)
    assert torch.allclose(lo, nlo, rtol=1e-4, atol=1e-3 * float(nhi.abs().max()))


@pytest.mark.benchmark(group="IBP CNN-7 batch 128 (CPU)")
def test_ibp_naive_reference(benchmark, cnn7):
    m, x = cnn7
    with torch.no_grad():
        benchmark.pedantic(naive_ibp, args=(m, x, 2 / 255), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="IBP CNN-7 batch 128 (CPU)")
def test_ibp_fastcert_torch_autograd(benchmark, cnn7):
    """Bounds with the graph kept for backward (parameters require grad): the training-time path."""
    m, x = cnn7
    lo, _ = benchmark.pedantic(fastcert.ibp_bounds, args=(m, x, 2 / 255), kwargs={"backend": "torch"},
                               rounds=3, iterations=1, warmup_rounds=1)
    assert lo.requires_grad


def _cuda_cnn7():
    torch.manual_seed(0)
    m = build_model("cnn7", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval().cuda()
    return m, torch.rand(BATCH, 3, 32, 32, device="cuda")


def _cuda_bench(benchmark, fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return benchmark.pedantic(run, rounds=20, iterations=5, warmup_rounds=3)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@needs_gpu
@pytest.mark.parametrize("impl", ["forward_x2", "triton", "torch", "naive"])
def test_ibp_cnn7_gpu(benchmark, impl):
    benchmark.group = "IBP CNN-7 batch 128 (GPU)"
    pytest.importorskip("triton")
    m, x = _cuda_cnn7()
    with torch.no_grad():
        fns = {
            "forward_x2": lambda: (m(x), m(x)),
            "triton": lambda: fastcert.ibp_bounds(m, x, 2 / 255, backend="triton"),
            "torch": lambda: fastcert.ibp_bounds(m, x, 2 / 255, backend="torch"),
            "naive": lambda: naive_ibp(m, x, 2 / 255),
        }
        _cuda_bench(benchmark, fns[impl])
        if impl == "triton":
            a = fastcert.ibp_bounds(m, x, 2 / 255, backend="torch")
            b = fastcert.ibp_bounds(m, x, 2 / 255, backend="triton")
            assert all(torch.allclose(p, q, rtol=1e-4, atol=1e-4 * float(p.abs().max())) for p, q in zip(a, b))


@pytest.fixture(scope="module")
def small_train():
    torch.manual_seed(0)
    m = build_model("cnn_ibp", (1, 28, 28), 10)
    x = torch.rand(256, 1, 28, 28)
    y = torch.randint(0, 10, (256,))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    return m, x, y, opt


def _ibp_step(m, x, y, opt):
    loss = robust_loss(margin_lower_bounds(m, x, y, 0.1, 10)) + F.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _acert_step(m, x, y, opt):
    m.eval()
    eps_i = certified_radius(m, x, y, 10, cap=0.1, tol=1e-3)
    m.train()
    loss = robust_loss(margin_lower_bounds(m, x, y, eps_i, 10)) + F.cross_entropy(m(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.benchmark(group="training step cnn_ibp 28x28 batch 256 (CPU)")
def test_ibp_step(benchmark, small_train):
    benchmark.pedantic(_ibp_step, args=small_train, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="training step cnn_ibp 28x28 batch 256 (CPU)")
def test_acert_step(benchmark, small_train):
    benchmark.pedantic(_acert_step, args=small_train, rounds=5, iterations=1, warmup_rounds=1)


# ---- the fused CPU kernels (csrc/ibp) against the torch ops they replace (issue 20)
@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    m = build_model("cnn_ibp", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval()
    x = torch.rand(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))
    return m, x, spec_matrix(y, 10)


@pytest.mark.parametrize("kernels", ["fused", "torch ops"])
@pytest.mark.parametrize("method", ["crown-ibp", "ibp"])
def test_fused_vs_torch_ops(benchmark, small_cnn, method, kernels, monkeypatch):
    """CROWN-IBP (fused ReLU step and concretization; bounds equal to rounding) and IBP (fused interval ReLU;
    bounds bit-identical) with and without the kernels."""
    from fastcert.ibp import fused
    m, x, C = small_cnn
    benchmark.group = f"{method} cnn_ibp batch 128 (CPU): fused kernels vs torch ops"
    kw = {"C": C, "method": "crown-ibp"} if method == "crown-ibp" else {}
    rounds = 5 if method == "crown-ibp" else 20
    monkeypatch.setattr(fused, "FUSED", kernels == "fused")
    with torch.no_grad():
        lo, hi = benchmark.pedantic(fastcert.ibp_bounds, args=(m, x, 2 / 255), kwargs=kw, rounds=rounds,
                                    iterations=1, warmup_rounds=1)
        monkeypatch.setattr(fused, "FUSED", kernels != "fused")
        lo2, hi2 = fastcert.ibp_bounds(m, x, 2 / 255, **kw)
    if method == "crown-ibp":
        assert torch.allclose(lo, lo2, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(lo, lo2) and torch.equal(hi, hi2)
