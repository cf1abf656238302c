"""The Triton IBP kernels under TRITON_INTERPRET=1 against the torch path: in process (every layer type,
odd tile sizes, the epilogue and input-box kernels), in a fresh interpreter with the flag set before
anything is imported (the way a user runs it), and the dispatch rules (CPU tensors never reach a real
Triton launch).

fastcert.ibp.triton.kernels.build() sets TRITON_INTERPRET itself while it decorates the kernels, so the
in-process tests work whatever ran before them in the same process; the env var set here is what
ibp_bounds checks before it lets CPU tensors reach a Triton launch."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fastcert
from fastcert.ibp import Residual
from fastcert.ibp.radius import spec_matrix
from fastcert.models.zoo import BasicBlock, CifarResNet, Normalize

pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from fastcert.ibp.triton.kernels import build

    return build(True)


def _bn_random(net, seed):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 1.5 - 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def _nets():
    torch.manual_seed(3)
    return {
        "mlp_norm_bn1d": (nn.Sequential(Normalize(torch.rand(37) * 0.5 + 0.2, torch.rand(37) * 0.3 + 0.2),
                                        nn.Linear(37, 70), nn.BatchNorm1d(70), nn.ReLU(), nn.Linear(70, 33),
                                        nn.ReLU(), nn.Linear(33, 7)), (37,)),
        "cnn_bn2d_pool": (nn.Sequential(Normalize((0.5, 0.4), (0.25, 0.3)), nn.Conv2d(2, 4, 3, 1, 1),
                                        nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                                        nn.Conv2d(4, 6, 3, 1, 1, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                        nn.Flatten(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 5)), (2, 6, 6)),
        "conv_no_norm": (nn.Sequential(nn.Conv2d(1, 3, 3, 2, 1), nn.BatchNorm2d(3), nn.Identity(), nn.ReLU(),
                                       nn.Flatten(), nn.Linear(27, 4), nn.ReLU()), (1, 6, 6)),
        "basic_blocks": (nn.Sequential(Normalize((0.5,), (0.3,)), nn.Conv2d(1, 4, 3, 1, 1), nn.ReLU(),
                                       BasicBlock(4, 4, 1), BasicBlock(4, 6, 2), nn.Flatten(),
                                       nn.Linear(6 * 3 * 3, 5)), (1, 6, 6)),
        "cifar_resnet8": (CifarResNet(8, (3, 4, 4), 5), (3, 4, 4)),
        "residual_container": (nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ReLU(),
                                             Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))),
                                             nn.ReLU(), Residual(nn.Sequential(), nn.Linear(8, 8)), nn.ReLU(),
                                             Residual(nn.Linear(8, 8)), nn.Linear(8, 3)), (5,)),
        "mlp_wide": (nn.Sequential(nn.Flatten(), nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 33), nn.ReLU(),
                                   nn.Linear(33, 7)), (50,)),
        "conv_linear_bn1d": (nn.Sequential(nn.Conv2d(1, 3, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 20),
                                           nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 7)), (1, 4, 4)),
    }


def _rel(a, b):
    return float(((a - b).abs() / (1 + a.abs())).max())


@pytest.mark.parametrize("name", list(_nets()))
@pytest.mark.parametrize("train_bn", [False, True])
def test_backends_agree(interpret, name, train_bn):
    net, shape = _nets()[name]
    net = _bn_random(net, 1).eval()
    if train_bn:
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            pytest.skip("no BatchNorm")
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    g = torch.Generator().manual_seed(2)
    B = 3
    x = torch.rand((B, *shape), generator=g)
    with torch.no_grad():
        k = copy.deepcopy(net)(x).shape[1]
        C = torch.randn(B, 4, k, generator=g)
        margins = spec_matrix(torch.randint(0, k, (B,), generator=g), k)
        for eps in (0.0, 0.02, torch.tensor([0.0, 0.01, 0.05])):
            for spec in (None, C, margins):
                a = fastcert.ibp_bounds(net, x, eps, C=spec, backend="torch")
                b = fastcert.ibp_bounds(net, x, eps, C=spec, backend="triton")
                assert _rel(a[0], b[0]) < 1e-5 and _rel(a[1], b[1]) < 1e-5, (eps, spec is None)
        lo, hi = fastcert.ibp_bounds(net, x, 0.0, backend="triton")
        ref = copy.deepcopy(net)(x)
    torch.testing.assert_close(lo, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hi, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M,N,K", [(5, 70, 37), (1, 3, 1), (65, 64, 33)])
@pytest.mark.parametrize("relu", [False, True])
def test_interval_linear_kernel(interpret, M, N, K, relu):
    """Odd sizes exercise the masks of the tiles; bias + scale/shift + ReLU epilogue."""
    from fastcert.ibp.triton.path import triton_cdiv

    g = torch.Generator().manual_seed(M * 100 + N)
    c, r = torch.randn(M, K, generator=g), torch.rand(M, K, generator=g)
    w = torch.randn(N, K, generator=g)
    scale, shift = torch.randn(N, generator=g), torch.randn(N, generator=g)
    y = torch.empty(M, 2 * N)
    xin = torch.cat([c, r], 1).contiguous()
    interpret["interval_linear"][(triton_cdiv(M, 64), triton_cdiv(N, 64))](
        xin, w, w.abs(), scale, shift, y, M, N, K, xin.stride(0), y.stride(0), RELU=relu,
        BLOCK_M=64, BLOCK_N=64, BLOCK_K=32)
    ce, re = (c @ w.T) * scale + shift, (r @ w.abs().T) * scale.abs()
    if relu:
        lo, hi = (ce - re).clamp(min=0), (ce + re).clamp(min=0)
        ce, re = (hi + lo) / 2, (hi - lo) / 2
    torch.testing.assert_close(y[:, :N], ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y[:, N:], re, rtol=1e-5, atol=1e-5)


def test_epilogue_and_box_kernels(interpret):
    from fastcert.ibp.triton.path import _Runner

    g = torch.Generator().manual_seed(0)
    run = _Runner(interpret, {})
    B, C, H, W = 2, 3, 5, 7
    c, r = torch.randn(B, C, H, W, generator=g), torch.rand(B, C, H, W, generator=g)
    ac, ar = torch.randn(B, C, H, W, generator=g), torch.rand(B, C, H, W, generator=g)
    s, t = torch.randn(C, generator=g), torch.randn(C, generator=g)
    out = run.epilogue(torch.cat([c, r], 1), s, t, add=torch.cat([ac, ar], 1), relu=True)
    ce = c * s.view(1, -1, 1, 1) + t.view(1, -1, 1, 1) + ac
    re = r * s.abs().view(1, -1, 1, 1) + ar
    lo, hi = (ce - re).clamp(min=0), (ce + re).clamp(min=0)
    torch.testing.assert_close(out[:, :C], (hi + lo) / 2)
    torch.testing.assert_close(out[:, C:], (hi - lo) / 2)
    x = torch.rand(B, C, H, W, generator=g)
    eps = torch.tensor([0.1, 0.3])
    y = run.box(x, eps, 0.0, 1.0, 1 / s.abs(), t)
    lo, hi = (x - eps.view(-1, 1, 1, 1)).clamp(min=0), (x + eps.view(-1, 1, 1, 1)).clamp(max=1)
    torch.testing.assert_close(y[:, :C], (hi + lo) / 2 / s.abs().view(1, -1, 1, 1) + t.view(1, -1, 1, 1))
    torch.testing.assert_close(y[:, C:], (hi - lo) / 2 / s.abs().view(1, -1, 1, 1))


def test_dispatch_rules(monkeypatch):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(2, 4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA tensors.*TRITON_INTERPRET=1"):  # never a real launch with CPU tensors
        fastcert.ibp_bounds(net, x, 0.1, backend="triton")
    lo, hi = fastcert.ibp_bounds(net, x, 0.1)  # auto on the CPU: the torch path
    assert torch.all(lo <= hi)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="no backward"):  # parameters require grad, grad mode on
        fastcert.ibp_bounds(net, x, 0.1, backend="triton")
    with torch.no_grad(), pytest.raises(TypeError, match="float32"):
        fastcert.ibp_bounds(net.double(), x.double(), 0.1, backend="triton")


SCRIPT = r"""
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch
from torch import nn
import fastcert
from fastcert.ibp.radius import spec_matrix
from fastcert.ibp import Residual

torch.manual_seed(0)
net = nn.Sequential(nn.Flatten(), nn.Linear(20, 24), nn.ReLU(),
                    Residual(nn.Sequential(nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 24))), nn.ReLU(),
                    nn.Linear(24, 7)).eval()
x = torch.rand(4, 20)
y = torch.randint(0, 7, (4,))
worst = 0.0
with torch.no_grad():
    for C in (None, spec_matrix(y, 7)):
        for eps in (0.0, 0.03, torch.linspace(0, 0.1, 4)):
            a = fastcert.ibp_bounds(net, x, eps, C=C, backend="torch")
            b = fastcert.ibp_bounds(net, x, eps, C=C, backend="triton")
            for p, q in zip(a, b):
                worst = max(worst, float(((p - q).abs() / (1 + p.abs())).max()))
print("WORST", worst)
"""


def test_triton_interpreter_matches_torch_in_a_fresh_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    worst = float(r.stdout.split("WORST")[1])
    assert worst < 1e-5
