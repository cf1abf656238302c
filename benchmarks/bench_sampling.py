"""Fused noise-sample-and-count vs the reference PyTorch path (Cohen et al.'s core.py style).

Run: pytest benchmarks/bench_sampling.py --benchmark-enable --benchmark-group-by=group
Targets (issue 2, CPU): noise generation into the batch >= 5x the reference's numbers per second;
end-to-end certification of a small Fashion-MNIST CNN >= 1.5x faster at equal n.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastcert import _core
from fastcert.bench.workloads import certify_workload, forward_workload, noise_workload


@pytest.mark.parametrize("kind", ["gaussian", "laplace", "uniform"])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_noise_into_batch(benchmark, kind, impl):
    """1000 noisy copies of a 28x28 input (784k numbers)."""
    benchmark.group = f"noise {kind} 1000x784"
    ours, ref, work = noise_workload(kind=kind)
    fn = ours if impl == "fused" else ref
    benchmark.extra_info["numbers"] = work
    out = benchmark(fn)
    assert out.shape == (1000, 784) or out.shape == (1000, 1, 28, 28)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_count(benchmark, impl, rng=np.random.default_rng(0)):
    """Argmax counting of 10,000 x 10 logits: compiled kernel vs argmax + bincount."""
    benchmark.group = "count 10000x10"
    logits = rng.normal(size=(10_000, 10)).astype(np.float32)
    counts = np.zeros(10, np.int64)
    t = torch.from_numpy(logits)
    if impl == "fused":
        benchmark(lambda: _core.count(logits, counts))
    else:
        benchmark(lambda: np.bincount(t.argmax(1).numpy(), minlength=10))


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_certify_fmnist_cnn(benchmark, impl):
    """End-to-end CERTIFY of one 28x28 input with the cnn_small zoo model, n0 = 100, n = 10,000."""
    benchmark.group = "certify cnn_small 28x28 n=10k"
    ours, ref, _ = certify_workload(n=10_000, batch=1000)
    benchmark.pedantic(ours if impl == "fused" else ref, rounds=3, iterations=1, warmup_rounds=1)


def test_forward_floor(benchmark):
    """The model's own forward pass on a batch of 1000: the floor for certification."""
    benchmark.group = "certify cnn_small 28x28 n=10k"
    benchmark(forward_workload())
