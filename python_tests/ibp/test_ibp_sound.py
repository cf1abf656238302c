"""Issue 18, IBP half: ``ibp_bounds(..., sound=True)`` contains the network's own float32 outputs (any
summation order, any point of the box) where the plain bounds do not (the control), and the exact
outputs (float64 reference); Triton's sound path under TRITON_INTERPRET=1; ``certify --method ibp`` is
sound by default and records it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import fastcert
from fastcert.ibp import Residual
from fastcert.ibp.radius import certified_radius, margin_lower_bounds, spec_matrix
from fastcert.ibp.reference import reference_bounds
from fastcert.models.zoo import Normalize


def _bn_away(net, seed=0):
    """BatchNorm running statistics and affine parameters away from 0 / 1 (the issue's case)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.2)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
    return net.eval().requires_grad_(False)


def issue_cnn(seed=0):
    """conv-BN-ReLU-conv-BN-ReLU-linear-ReLU-linear on 32x32x3, random weights."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(),
                        nn.Linear(32 * 16 * 16, 100), nn.ReLU(), nn.Linear(100, 10))
    return _bn_away(net, seed)


def wide_range_mlp(seed=1):
    """Weights scaled by 1e3 in one layer and 1e-3 in another: a large dynamic range."""
    torch.manual_seed(seed)
    net = nn.Sequential(Normalize((0.4,), (0.3,)), nn.Linear(256, 300), nn.BatchNorm1d(300), nn.ReLU(),
                        nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    with torch.no_grad():
        net[4].weight.mul_(1e3)
        net[6].weight.mul_(1e-3)
        net[6].bias.mul_(1e-3)
    return _bn_away(net, seed)


def _violations(y, lo, hi) -> int:
    return int(((y < lo) | (y > hi)).sum())


def _linear_reordered(layer: nn.Linear, z: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """A float32 Linear summed term by term in the given order of the inputs (then the bias)."""
    w = layer.weight.detach()
    acc = torch.zeros(z.shape[0], w.shape[0], dtype=z.dtype)
    for j in order.tolist():
        acc += z[:, j:j + 1] * w[:, j]
    return acc + layer.bias.detach()


def _forward_reordered(net, z, order_fn):
    """The network with every Linear summed in the order ``order_fn(n)`` (other layers as they are)."""
    for m in net:
        z = _linear_reordered(m, z, order_fn(m.in_features)) if isinstance(m, nn.Linear) else m(z)
    return z


# --------------------------------------------------------------------------------- the issue's case
def test_issue_cnn_eps0_plain_violated_sound_never():
    net = issue_cnn()
    x = torch.rand(64, 3, 32, 32)
    with torch.no_grad():
        y = net(x)
    lo, hi = fastcert.ibp_bounds(net, x, 0.0)
    assert _violations(y, lo, hi) > 0  # the control: plain float32 bounds miss the network's own outputs
    slo, shi = fastcert.ibp_bounds(net, x, 0.0, sound=True)
    assert _violations(y, slo, shi) == 0
    assert not slo.requires_grad and slo.dtype == torch.float32
    # the same network computed in another summation order (linear layers: reversed, shuffled)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for order in (lambda n: torch.arange(n - 1, -1, -1), lambda n: torch.randperm(n, generator=g)):
            yo = _forward_reordered(net, x[:8], order)
            assert _violations(yo, slo[:8], shi[:8]) == 0
    # the rounding allowance (worst case over summation orders) is small next to a 2/255 perturbation's width
    plo, phi = fastcert.ibp_bounds(net, x, 2 / 255)
    assert float((shi - slo).mean()) < 0.05 * float((phi - plo).mean())


def test_issue_cnn_tiny_eps_sampled_points_and_exact_outputs():
    net = issue_cnn(2)
    x = torch.rand(16, 3, 32, 32)
    eps = 1e-6
    slo, shi = fastcert.ibp_bounds(net, x, eps, sound=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k in range(6):
            if k < 2:  # corners of the box
                xp = (x + (eps if k else -eps)).clamp(0, 1)
            else:
                xp = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
            assert _violations(net(xp), slo, shi) == 0
    # (a) the exact outputs: float64 interval arithmetic as the proxy of the real one
    net64 = issue_cnn(2).double()
    rlo, rhi = reference_bounds(net64, x.double(), eps)
    assert bool((slo.double() <= rlo).all()) and bool((shi.double() >= rhi).all())


def test_wide_dynamic_range_and_summation_orders():
    net = wide_range_mlp()
    torch.manual_seed(3)
    x = torch.rand(32, 256)
    with torch.no_grad():
        y = net(x)
        y_rev = _forward_reordered(net, x, lambda n: torch.arange(n - 1, -1, -1))
        y_mm = torch.matmul(net[:-1](x), net[-1].weight.t()) + net[-1].bias
    lo, hi = fastcert.ibp_bounds(net, x, 0.0)
    assert _violations(y, lo, hi) + _violations(y_rev, lo, hi) > 0  # the control
    slo, shi = fastcert.ibp_bounds(net, x, 0.0, sound=True)
    for out in (y, y_rev, y_mm):
        assert _violations(out, slo, shi) == 0
    # tiny eps, sampled points
    eps = 1e-5
    slo, shi = fastcert.ibp_bounds(net, x, eps, sound=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(4):
            xp = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
            assert _violations(net(xp), slo, shi) == 0
            assert _violations(_forward_reordered(net, xp, lambda n: torch.randperm(n, generator=g)), slo, shi) == 0


def test_specification_and_residual_pool_network():
    torch.manual_seed(4)
    net = _bn_away(nn.Sequential(
        Normalize((0.5, 0.4), (0.25, 0.3)), nn.Conv2d(2, 6, 3, 1, 1), nn.BatchNorm2d(6), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(6, 6, 3, 1, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 1, 1))), nn.ReLU(),
        nn.AvgPool2d(2), nn.BatchNorm2d(6), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 7)), 4)
    x = torch.rand(20, 2, 8, 8)
    y = torch.randint(0, 7, (20,))
    eps = 1e-4
    g = torch.Generator().manual_seed(2)
    pts = [(x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1) for _ in range(4)]
    slo, shi = fastcert.ibp_bounds(net, x, eps, sound=True)
    C = spec_matrix(y, 7)
    mlo, mhi = fastcert.ibp_bounds(net, x, eps, C=C, sound=True)  # C folded into the last Linear
    with torch.no_grad():
        for xp in pts:
            out = net(xp)
            assert _violations(out, slo, shi) == 0
            margins = torch.einsum("bmk,bk->bm", C.double(), out.double())  # exact C y of the float logits
            assert _violations(margins, mlo.double(), mhi.double()) == 0
    # C on a network not ending in a Linear (applied to the logit box), float64 inputs
    net2 = nn.Sequential(nn.Linear(5, 4), nn.ReLU()).double()
    x2 = torch.rand(3, 5, dtype=torch.float64)
    C2 = torch.randn(3, 2, 4, dtype=torch.float64)
    lo2, hi2 = fastcert.ibp_bounds(net2, x2, 0.0, C=C2, sound=True)
    with torch.no_grad():
        m2 = torch.einsum("bmk,bk->bm", C2, net2(x2))
    assert _violations(m2, lo2, hi2) == 0 and lo2.dtype == torch.float64


def test_sound_is_a_small_widening_and_margin_bounds():
    net = issue_cnn(3)
    x = torch.rand(8, 3, 32, 32)
    lo, hi = fastcert.ibp_bounds(net, x, 2 / 255)
    slo, shi = fastcert.ibp_bounds(net, x, 2 / 255, sound=True)
    assert bool((slo <= lo).all()) and bool((shi >= hi).all())
    assert float(((shi - slo) / (hi - lo)).mean()) < 1.05
    y = torch.randint(0, 10, (8,))
    plain = margin_lower_bounds(net, x, y, 1e-3, 10)
    sound = margin_lower_bounds(net, x, y, 1e-3, 10, sound=True)
    assert bool((sound <= plain).all())
    r = certified_radius(net, x, y, 10, cap=0.01, sound=True)
    assert r.shape == (8,) and bool((r >= 0).all())


def test_sound_argument_errors():
    net = nn.Sequential(nn.Linear(4, 3))
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="sound"):
        fastcert.ibp_bounds(net, x, 0.1, method="crown-ibp", sound=True)
    with pytest.raises(TypeError, match="sound"):
        fastcert.ibp_bounds(net, x, 0.1, sound="yes")


# --------------------------------------------------------------------------------- Triton (interpreter)
def test_triton_sound_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(6)
    net = _bn_away(nn.Sequential(Normalize((0.5, 0.4), (0.25, 0.3)), nn.Conv2d(2, 4, 3, 1, 1), nn.BatchNorm2d(4),
                                 nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 40), nn.BatchNorm1d(40),
                                 nn.ReLU(), nn.Linear(40, 5)), 6)
    with torch.no_grad():
        net[6].weight.mul_(1e3)
    x = torch.rand(6, 2, 6, 6)
    with torch.no_grad():
        y = net(x)
        tlo, thi = fastcert.ibp_bounds(net, x, 0.0, backend="triton", sound=True)
        assert _violations(y, tlo, thi) == 0
        slo, shi = fastcert.ibp_bounds(net, x, 0.0, backend="torch", sound=True)
        assert torch.allclose(tlo, slo, rtol=1e-4, atol=1e-3) and torch.allclose(thi, shi, rtol=1e-4, atol=1e-3)
        eps = 1e-4
        tlo, thi = fastcert.ibp_bounds(net, x, eps, backend="triton", sound=True)
        yc = spec_matrix(torch.arange(6) % 5, 5)
        mlo, _ = fastcert.ibp_bounds(net, x, eps, backend="triton", sound=True, C=yc)
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            xp = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
            out = net(xp)
            assert _violations(out, tlo, thi) == 0
            assert bool((torch.einsum("bmk,bk->bm", yc.double(), out.double()) >= mlo.double()).all())


# --------------------------------------------------------------------------------- CLI default
def test_certify_ibp_is_sound_by_default(tmp_path):
    from fastcert.cli import main

    ckpt = tmp_path / "ibp.pt"
    assert main(["train", "--arch", "mlp", "--method", "ibp", "--eps", "0.05", "--epochs", "1", "--max-train", "64",
                 "--batch", "32", "--quiet", "--out", str(ckpt)]) == 0
    for flags, sound in (([], True), (["--unsound-ibp"], False)):
        log = tmp_path / f"log{sound}.tsv"
        assert main(["certify", "--model", str(ckpt), "--method", "ibp", "--eps", "0.01", "--max", "3", "--quiet",
                     *flags, "--out", str(log)]) == 0
        assert json.loads(Path(str(log) + ".json").read_text())["sound"] is sound
