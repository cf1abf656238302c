"""End-to-end Gaussian certification on a CUDA GPU (issue 9): a CIFAR ResNet-110 (Cohen et al.'s base
model) at n = 100,000, fastcert.Smooth (noise written into the batch buffer and counts kept on the device,
no per-batch host synchronization; eager and CUDA-graph variants; bf16 autocast) against the reference
loop (repeat + randn_like + forward + host bincount per batch), and the model's own forward passes over
the same samples: the floor, from which the sample + count overhead is read.

Run (GPU): pytest benchmarks/bench_gpu_certify.py --benchmark-enable --benchmark-group-by=group
Targets: >= 2x faster than the reference at fp32; sample + count overhead < 5% of the forward time.
Skipped without CUDA or without fastcert._core_cuda.
"""
from __future__ import annotations

import pytest
import torch

from fastcert import _native
from fastcert.bench.workloads import gpu_certify_workload

needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and _native.HAVE_CUDA),
                               reason="no CUDA GPU, or fastcert._core_cuda not built")
N = 100_000


@needs_gpu
@pytest.mark.parametrize("impl", ["fastcert", "fastcert_cuda_graph", "fastcert_bf16", "reference", "forward_floor"])
def test_certify_resnet110_gpu(benchmark, impl):
    benchmark.group = f"GPU certify resnet110 n={N}"
    kw = {"cuda_graph": impl == "fastcert_cuda_graph",
          "autocast": torch.bfloat16 if impl == "fastcert_bf16" else None}
    ours, ref, fwd = gpu_certify_workload(n=N, **kw)
    fn = {"reference": ref, "forward_floor": fwd}.get(impl, ours)
    out = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    if impl == "fastcert_cuda_graph":
        eager, _, _ = gpu_certify_workload(n=N)
        assert out == eager()  # same samples, same counts -> the same certificate
