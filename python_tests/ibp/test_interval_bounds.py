"""Interval bound propagation: soundness by sampling (corners included) for every supported layer type,
exactness at eps = 0, center-radius vs naive interval arithmetic, C folding, CROWN-IBP, errors."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import fastcert
from fastcert.ibp import Residual, UnsupportedLayerError
from fastcert.models.zoo import BasicBlock, Normalize, build_model


def _nets():
    torch.manual_seed(0)
    bn2 = nn.BatchNorm2d(4)
    bn2.running_mean.uniform_(-0.5, 0.5)
    bn2.running_var.uniform_(0.5, 2.0)
    bn1 = nn.BatchNorm1d(16)
    bn1.running_mean.uniform_(-0.5, 0.5)
    bn1.running_var.uniform_(0.5, 2.0)
    return {
        "linear": nn.Sequential(nn.Flatten(), nn.Linear(18, 16), nn.ReLU(), nn.Linear(16, 5)),
        "conv+bn+pool": nn.Sequential(Normalize((0.4, 0.6), (0.3, 0.2)), nn.Conv2d(2, 4, 3, 1, 1), bn2, nn.ReLU(),
                                      nn.AvgPool2d(3, 1, 1), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(16, 16), bn1, nn.ReLU(), nn.Identity(), nn.Linear(16, 5)),
        "residual": nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.ReLU(),
                                  Residual(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1))),
                                  nn.ReLU(), BasicBlock(4, 6, 2).eval(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(6, 5)),
    }


def _box_samples(x, eps, n, corners=True):
    """n points of the clipped box around each x (B, ...), first all corners of a random 8-dim face."""
    B = x.shape[0]
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    u = torch.rand(n, *x.shape)
    u[: n // 4] = (u[: n // 4] > 0.5).float()  # a quarter are corners of the box
    return lo + (hi - lo) * u, lo, hi


@pytest.mark.parametrize("name", ["linear", "conv+bn+pool", "residual"])
@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_soundness_10000_samples(name, method):
    net = _nets()[name].eval()
    torch.manual_seed(1)
    x = torch.rand(2, 2, 3, 3)
    eps = 0.05
    lo, hi = fastcert.ibp_bounds(net, x, eps, method=method)
    pts, blo, bhi = _box_samples(x, eps, 5000)
    with torch.no_grad():
        outs = net(pts.reshape(-1, *x.shape[1:])).reshape(pts.shape[0], x.shape[0], -1)  # 10,000 points in all
        # every vertex of the box of the first input along its first 8 coordinates
        flat_lo, flat_hi = blo[0].flatten(), bhi[0].flatten()
        verts = []
        for bits in itertools.product((0, 1), repeat=8):
            v = x[0].flatten().clone()
            for j, b in enumerate(bits):
                v[j] = flat_hi[j] if b else flat_lo[j]
            verts.append(v.view(x.shape[1:]))
        vout = net(torch.stack(verts))
    tol = 1e-5 * (1 + outs.abs().max())
    assert torch.all(outs >= lo - tol) and torch.all(outs <= hi + tol)
    assert torch.all(vout >= lo[0] - tol) and torch.all(vout <= hi[0] + tol)


def test_train_mode_batchnorm_uses_clean_batch_statistics():
    net = _nets()["conv+bn+pool"].train()
    torch.manual_seed(7)
    x = torch.rand(8, 2, 3, 3)
    lo, hi = fastcert.ibp_bounds(net, x, 0.03)
    # the network whose BN layers are frozen to the clean batch's statistics
    with torch.no_grad():
        z0 = net(x)  # train mode: normalizes with the clean batch statistics
        assert torch.all(z0 >= lo - 1e-5) and torch.all(z0 <= hi + 1e-5)
    l0, h0 = fastcert.ibp_bounds(net, x, 0.0)
    tol = 1e-5 * (1 + float(z0.abs().max()))
    assert torch.allclose(l0, z0, atol=tol, rtol=1e-5) and torch.allclose(h0, z0, atol=tol, rtol=1e-5)


@pytest.mark.parametrize("arch,shape", [("cnn_ibp", (1, 8, 8)), ("cnn7", (3, 8, 8)), ("resnet20", (3, 8, 8)),
                                        ("lenet", (1, 28, 28)), ("mlp", (1, 8, 8))])
def test_eps_zero_is_exact(arch, shape):
    torch.manual_seed(0)
    m = build_model(arch, shape, 10, (0.3,) * shape[0], (0.4,) * shape[0]).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        z = m(x)
        for method in ("ibp", "crown-ibp"):
            lo, hi = fastcert.ibp_bounds(m, x, 0.0, method=method)
            assert torch.allclose(lo, z, atol=1e-4, rtol=1e-5) and torch.allclose(hi, z, atol=1e-4, rtol=1e-5)


def _naive_ibp(net, x, eps):
    """Textbook interval arithmetic with W+ / W- splits (lower/upper form)."""
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    for m in net:
        if isinstance(m, nn.Linear):
            wp, wn = m.weight.clamp(min=0), m.weight.clamp(max=0)
            lo, hi = lo @ wp.T + hi @ wn.T + m.bias, hi @ wp.T + lo @ wn.T + m.bias
        elif isinstance(m, nn.Conv2d):
            wp, wn = m.weight.clamp(min=0), m.weight.clamp(max=0)
            conv = lambda t, w: nn.functional.conv2d(t, w, None, m.stride, m.padding)  # noqa: E731
            b = m.bias.view(1, -1, 1, 1)
            lo, hi = conv(lo, wp) + conv(hi, wn) + b, conv(hi, wp) + conv(lo, wn) + b
        elif isinstance(m, nn.ReLU):
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        elif isinstance(m, nn.Flatten):
            lo, hi = m(lo), m(hi)
        else:
            raise AssertionError(type(m))
    return lo, hi


def test_center_radius_equals_naive_interval_arithmetic():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.rand(5, 1, 4, 4)
    with torch.no_grad():
        lo, hi = fastcert.ibp_bounds(net, x, 0.1, backend="torch")
        nlo, nhi = _naive_ibp(net, x, 0.1)
    assert torch.allclose(lo, nlo, atol=1e-5) and torch.allclose(hi, nhi, atol=1e-5)


def test_spec_folding_is_sound_and_tighter():
    torch.manual_seed(4)
    net = _nets()["linear"].eval()
    x = torch.rand(4, 2, 3, 3)
    y = torch.tensor([0, 1, 2, 3])
    from fastcert.ibp.radius import spec_matrix

    C = spec_matrix(y, 5)
    with torch.no_grad():
        lo_c, hi_c = fastcert.ibp_bounds(net, x, 0.05, C=C)
        lo, hi = fastcert.ibp_bounds(net, x, 0.05)
        naive = torch.matmul(C.clamp(min=0), lo.unsqueeze(-1)).squeeze(-1) + \
            torch.matmul(C.clamp(max=0), hi.unsqueeze(-1)).squeeze(-1)
        pts, _, _ = _box_samples(x, 0.05, 2000)
        z = net(pts.reshape(-1, *x.shape[1:])).reshape(pts.shape[0], x.shape[0], -1)
        margins = torch.matmul(C.unsqueeze(0), z.unsqueeze(-1)).squeeze(-1)
    assert torch.all(lo_c >= naive - 1e-5) and (lo_c > naive + 1e-4).any()
    assert torch.all(margins >= lo_c - 1e-5) and torch.all(margins <= hi_c + 1e-5)


def test_crown_ibp_tighter_than_ibp_on_margins():
    torch.manual_seed(5)
    net = _nets()["linear"].eval()
    x = torch.rand(16, 2, 3, 3)
    from fastcert.ibp.radius import spec_matrix

    C = spec_matrix(torch.zeros(16, dtype=torch.long), 5)
    with torch.no_grad():
        lo_i, _ = fastcert.ibp_bounds(net, x, 0.1, C=C)
        lo_c, _ = fastcert.ibp_bounds(net, x, 0.1, C=C, method="crown-ibp")
    assert (lo_c >= lo_i - 1e-5).float().mean() > 0.9
    assert lo_c.mean() > lo_i.mean()


def test_per_sample_eps_and_gradients():
    net = _nets()["linear"]
    x = torch.rand(3, 2, 3, 3)
    eps = torch.tensor([0.0, 0.05, 0.1])
    lo, hi = fastcert.ibp_bounds(net, x, eps)
    with torch.no_grad():
        z = net(x)
    assert torch.allclose(lo[0], z[0], atol=1e-5)
    assert torch.all((hi - lo)[1] < (hi - lo)[2])
    (hi - lo).sum().backward()
    assert net[1].weight.grad is not None and torch.isfinite(net[1].weight.grad).all()


def test_unsupported_layer_and_bad_input():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid())
    with pytest.raises(UnsupportedLayerError, match="Sigmoid"):
        fastcert.ibp_bounds(net, torch.rand(2, 4), 0.1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="eps"):
        fastcert.ibp_bounds(net, torch.rand(2, 4), -0.1)
    with pytest.raises(ValueError, match="NaN"):
        fastcert.ibp_bounds(net, torch.tensor([[float("nan")] * 4]), 0.1)
    with pytest.raises(ValueError, match="norm"):
        fastcert.ibp_bounds(net, torch.rand(2, 4), 0.1, norm="l2")
    with pytest.raises(ValueError, match="triton"):
        fastcert.ibp_bounds(net, torch.rand(2, 4), 0.1, backend="triton")
    with pytest.raises(ValueError, match="eps must be a scalar"):
        fastcert.ibp_bounds(net, torch.rand(2, 4), torch.tensor([0.1, 0.1, 0.1]))
