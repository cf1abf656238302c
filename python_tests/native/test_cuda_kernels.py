"""The CUDA kernels (fastcert._core_cuda) against the CPU kernels, on a CUDA GPU only (skipped elsewhere).

Same Philox counters and the same branch-free float polynomials on both sides, so the noisy batches agree
to float rounding (FMA contraction may differ) and exactly for discrete noise; the counting kernel agrees
exactly with the CPU one for every logits dtype, including NaN rows, ties (lower index) and the per-sample
score/margin; the device-side sample offset and the CUDA-graph path reproduce the eager path. Run also
under compute-sanitizer: scripts/cuda_sanitize.sh.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import fastcert
from fastcert import _core, _native

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU", allow_module_level=True)
if importlib.util.find_spec("fastcert._core_cuda") is None:
    pytest.skip("fastcert._core_cuda was not built (no nvcc at build time; see fastcert.build_info())",
                allow_module_level=True)
from fastcert import _core_cuda  # noqa: E402  (built: a failing import is an error, not a skip)
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def _stream():
    return torch.cuda.current_stream().cuda_stream


@pytest.mark.parametrize("noise", [fastcert.Gaussian(0.5), fastcert.Laplace(0.3), fastcert.Uniform(0.4),
                                   fastcert.Discrete(0.8, 255)])
@pytest.mark.parametrize("D,B,start", [(1, 1, 0), (7, 33, 5), (784, 1000, 2**40 + 3), (3072, 257, 17)])
def test_sample_matches_cpu(noise, D, B, start):
    g = torch.Generator().manual_seed(D)
    x = torch.randint(0, 256, (D,), generator=g).float() / 255
    ntype, scale, keep, K = noise.kernel_params()
    cpu = np.empty((B, D), np.float32)
    _core.sample(x.numpy(), cpu, 11, 3, start, ntype, scale, keep, K)
    xd = x.cuda()
    out = torch.full((B, D), float("nan"), device="cuda")
    _core_cuda.sample(xd.data_ptr(), D, out.data_ptr(), B, 11, 3, start, ntype, scale, keep, K, _stream())
    got = out.cpu().numpy()
    assert np.isfinite(got).all()
    if isinstance(noise, fastcert.Discrete):
        np.testing.assert_array_equal(got, cpu)
    else:
        np.testing.assert_allclose(got, cpu, rtol=1e-5, atol=1e-5)
    # the device-side offset: start_dev adds to start (what CUDA-graph replays advance)
    off = torch.tensor([B], dtype=torch.int64, device="cuda")
    _core_cuda.sample(xd.data_ptr(), D, out.data_ptr(), B, 11, 3, start, ntype, scale, keep, K, _stream(),
                      off.data_ptr())
    _core.sample(x.numpy(), cpu, 11, 3, start + B, ntype, scale, keep, K)
    if isinstance(noise, fastcert.Discrete):
        np.testing.assert_array_equal(out.cpu().numpy(), cpu)
    else:
        np.testing.assert_allclose(out.cpu().numpy(), cpu, rtol=1e-5, atol=1e-5)
    _core_cuda.advance(off.data_ptr(), 7, _stream())
    assert int(off.item()) == B + 7


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("B,C", [(1, 1), (5, 3), (1000, 10), (300, 100)])
def test_count_matches_cpu(dtype, B, C):
    g = torch.Generator().manual_seed(B * C)
    logits = torch.randn(B, C, generator=g).to(dtype)
    if B >= 5 and C >= 3:
        logits[0] = 1.0  # full tie: class 0
        logits[1, 1:] = 2.0  # tie between 1..C-1: class 1
        logits[2, 1] = float("nan")
        logits[3] = float("-inf")  # all -inf: class 0, as on the CPU
    ref = logits.double().numpy()
    cls = C - 1
    counts = np.zeros(C, np.int64)
    sc, mg = np.empty(B, np.float32), np.empty(B, np.float32)
    nan_cpu = _core.count(ref, counts, cls, sc, mg)
    d = logits.cuda().contiguous()
    cd = torch.zeros(C, dtype=torch.int64, device="cuda")
    nd = torch.zeros(1, dtype=torch.int64, device="cuda")
    scd = torch.empty(B, device="cuda")
    mgd = torch.empty(B, device="cuda")
    _core_cuda.count(d.data_ptr(), DTYPES[dtype], B, C, cd.data_ptr(), nd.data_ptr(), cls, scd.data_ptr(),
                     mgd.data_ptr(), _stream())
    np.testing.assert_array_equal(cd.cpu().numpy(), counts)
    assert int(nd.item()) == nan_cpu
    ok = ~np.isnan(sc)
    np.testing.assert_array_equal(np.isnan(scd.cpu().numpy()), ~ok)
    np.testing.assert_allclose(scd.cpu().numpy()[ok], sc[ok], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mgd.cpu().numpy()[ok], mg[ok], rtol=1e-5, atol=1e-6)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def test_smooth_cuda_matches_cpu_and_cuda_graph_matches_eager():
    x = torch.rand(1, 8, 8)
    cpu = fastcert.Smooth(_mlp(), 10, fastcert.Gaussian(0.5))
    gpu = fastcert.Smooth(_mlp().cuda(), 10, fastcert.Gaussian(0.5), device="cuda")
    graph = fastcert.Smooth(_mlp().cuda(), 10, fastcert.Gaussian(0.5), device="cuda", cuda_graph=True)
    c_cpu, _ = cpu.sample_counts(x, 20_000, 1000, seed=5)
    c_gpu, _ = gpu.sample_counts(x, 20_000, 1000, seed=5)
    c_graph, _ = graph.sample_counts(x, 20_500, 1000, seed=5)  # 20 replays + an eager remainder
    c_eager, _ = gpu.sample_counts(x, 20_500, 1000, seed=5)
    np.testing.assert_array_equal(c_graph, c_eager)
    assert c_gpu.sum() == 20_000
    # the same samples on both devices: counts differ only where float rounding moves a near-tie
    assert np.abs(c_gpu - c_cpu).sum() <= 20
    assert graph.certify(x, 100, 5000, 0.001, 1000, seed=2) == gpu.certify(x, 100, 5000, 0.001, 1000, seed=2)


def test_autocast_on_cuda_runs_in_half_precision():
    lin = torch.nn.Linear(8, 2, bias=False).cuda()
    with torch.no_grad():
        lin.weight[0] = 1.0
        lin.weight[1] = 1.0 + 1e-4
    x = torch.full((8,), 0.5)
    c32, _ = fastcert.Smooth(lin, 2, fastcert.Gaussian(0.01), device="cuda").sample_counts(x, 500, 100, seed=1)
    c16, _ = fastcert.Smooth(lin, 2, fastcert.Gaussian(0.01), device="cuda",
                             autocast=torch.bfloat16).sample_counts(x, 500, 100, seed=1)
    assert list(c32) == [0, 500] and list(c16) == [500, 0]


def test_key_dev_replaces_seed_and_stream():
    D, B = 300, 64
    x = torch.rand(D, device="cuda")
    ntype, scale, keep, K = fastcert.Gaussian(0.5).kernel_params()
    want = torch.empty(B, D, device="cuda")
    _native.sample_cuda(x, want, 2**64 - 3, 5, 1000, ntype, scale, keep, K)
    got = torch.empty(B, D, device="cuda")
    key = torch.tensor([2**64 - 3 - 2**64, 5], dtype=torch.int64, device="cuda")  # same 64 bits
    ctr = torch.tensor([1000], dtype=torch.int64, device="cuda")
    _native.sample_cuda(x, got, 0, 0, 0, ntype, scale, keep, K, start_dev=ctr, key_dev=key)
    assert torch.equal(got, want)


def test_cuda_graph_is_captured_once_and_serves_every_point():
    graph = fastcert.Smooth(_mlp().cuda(), 10, fastcert.Gaussian(0.5), device="cuda", cuda_graph=True)
    eager = fastcert.Smooth(_mlp().cuda(), 10, fastcert.Gaussian(0.5), device="cuda")
    for i in range(3):
        x = torch.rand(1, 8, 8)
        assert graph.certify(x, 100, 5000, 0.001, 1000, seed=i) == eager.certify(x, 100, 5000, 0.001, 1000, seed=i)
    assert len(graph._graphs) == 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device_samples_on_its_own_device():
    with torch.cuda.device(0):  # cuda:0 current, model and data on cuda:1
        cpu = fastcert.Smooth(_mlp(), 10, fastcert.Gaussian(0.5))
        for cuda_graph in (False, True):
            s = fastcert.Smooth(_mlp().to("cuda:1"), 10, fastcert.Gaussian(0.5), device="cuda:1",
                                cuda_graph=cuda_graph)
            x = torch.rand(1, 8, 8)
            c1, _ = s.sample_counts(x, 5000, 1000, seed=3)
            c0, _ = cpu.sample_counts(x, 5000, 1000, seed=3)
            assert c1.sum() == 5000 and np.abs(c1 - c0).sum() <= 10
