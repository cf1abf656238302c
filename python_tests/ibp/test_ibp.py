"""fastcert.ibp_bounds, torch path and CROWN-IBP: sampling soundness for every supported layer type
(BatchNorm in eval and train mode, pools, Normalize, residual blocks), box vertices, exactness (eps = 0,
one affine layer, the zoo's architectures), the reference W+/W- interval arithmetic as oracle, C
folding, per-sample eps, gradients, l2/l1 CROWN-IBP, and errors."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

import fastcert
from fastcert.ibp import Residual, UnsupportedLayerError, fused
from fastcert.ibp.graph import clean_forward, needs_clean_pass, trace
from fastcert.ibp.radius import spec_matrix
from fastcert.ibp.reference import propagate_reference, reference_bounds
from fastcert.ibp.torch_path import propagate
from fastcert.models.zoo import BasicBlock, CifarResNet, Normalize, build_model

N_POINTS = 10_000


def _randomize_bn(net: nn.Module, g: torch.Generator):
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) * 1.5 - 0.5)  # some negative scales
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                    m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def _net(name: str) -> tuple[nn.Module, tuple]:
    """Small random networks covering every supported layer; returns (net, input shape)."""
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(7)
    if name == "mlp_bn1d":
        net = nn.Sequential(Normalize(torch.rand(6) * 0.5 + 0.25, torch.rand(6) * 0.3 + 0.2), nn.Linear(6, 12),
                            nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5), nn.Identity(), nn.Linear(12, 10),
                            nn.ReLU(), nn.BatchNorm1d(10), nn.Linear(10, 4))
        shape = (6,)
    elif name == "cnn_bn2d_pool":
        net = nn.Sequential(Normalize((0.5, 0.4), (0.25, 0.3)), nn.Conv2d(2, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, 1, 1, dilation=1, groups=2), nn.ReLU(),
                            nn.Conv2d(6, 6, 2, 1, 1, dilation=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                            nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 5))
        shape = (2, 6, 6)
    elif name == "cnn_bn_no_running_stats":
        net = nn.Sequential(nn.Conv2d(1, 3, 3, 2, 1), nn.BatchNorm2d(3, track_running_stats=False), nn.ReLU(),
                            nn.Flatten(), nn.Linear(27, 4))
        shape = (1, 6, 6)
    elif name == "basic_blocks":
        net = nn.Sequential(Normalize((0.5,), (0.3,)), nn.Conv2d(1, 4, 3, 1, 1), nn.ReLU(), BasicBlock(4, 4, 1),
                            BasicBlock(4, 6, 2), nn.Flatten(), nn.Linear(6 * 3 * 3, 5))
        shape = (1, 6, 6)
    elif name == "cifar_resnet8":
        net = CifarResNet(8, (3, 4, 4), 5)
        shape = (3, 4, 4)
    elif name == "residual_container":
        net = nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ReLU(),
                            Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))), nn.ReLU(),
                            Residual(nn.Sequential(nn.Linear(8, 8)), nn.Linear(8, 8)), nn.Linear(8, 3))
        shape = (5,)
    elif name == "residual_relu_last":  # the main branch ends in a ReLU: both branches start from one multiplier
        net = nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ReLU(), Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU())),
                            nn.Linear(8, 3))
        shape = (5,)
    elif name == "mlp_small":
        net = nn.Sequential(nn.Flatten(), nn.Linear(18, 16), nn.ReLU(), nn.Linear(16, 5))
        shape = (2, 3, 3)
    elif name == "conv_bn_pool_small":
        net = nn.Sequential(Normalize((0.4, 0.6), (0.3, 0.2)), nn.Conv2d(2, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AvgPool2d(3, 1, 1), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Identity(), nn.Linear(16, 5))
        shape = (2, 3, 3)
    elif name == "residual_mixed":
        net = nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.ReLU(),
                            Residual(nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1))),
                            nn.ReLU(), BasicBlock(4, 6, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
        shape = (2, 3, 3)
    else:
        raise KeyError(name)
    _randomize_bn(net, g)
    return net.eval(), shape


SMALL_NETS = ["mlp_small", "conv_bn_pool_small", "residual_mixed"]  # 18 inputs: box vertices can be enumerated
NETS = ["mlp_bn1d", "cnn_bn2d_pool", "cnn_bn_no_running_stats", "basic_blocks", "cifar_resnet8",
        "residual_container"] + SMALL_NETS


def _frozen(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy whose batch-statistics BN layers are frozen (eval) to the clean batch's mean and biased
    variance: the function whose outputs train-mode bounds must contain. Found with hooks on the
    original, independent of the engine."""
    seen: dict = {}
    probe = copy.deepcopy(net)  # running statistics of `net` stay untouched
    for name, m in probe.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            def hook(mod, inp, name=name):
                z = inp[0]
                dims = [0] + list(range(2, z.dim()))
                seen[name] = (z.mean(dims).detach(), z.var(dims, unbiased=False).detach())
            m.register_forward_pre_hook(hook)
    with torch.no_grad():
        probe(x)
    assert seen, "no batch-statistics BatchNorm found"
    frozen = copy.deepcopy(net)
    for name, m in frozen.named_modules():
        if name in seen:
            m.running_mean = seen[name][0].clone()
            m.running_var = seen[name][1].clone()
            m.track_running_stats = True
            m.eval()
    return frozen.eval()


def _samples(x: torch.Tensor, eps, n: int, g: torch.Generator, x_min=0.0, x_max=1.0):
    """n points in the clipped box of each x: (n, B, ...). The first rows are the two extreme
    corners, then a quarter random corners, the rest uniform."""
    e = torch.as_tensor(eps, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    lo, hi = torch.clamp(x - e, min=x_min), torch.clamp(x + e, max=x_max)
    u = torch.rand((n, *x.shape), generator=g, dtype=x.dtype)
    u[0], u[1] = 0.0, 1.0
    u[2: n // 4] = (u[2: n // 4] > 0.5).to(x.dtype)
    return lo + (hi - lo) * u


def _outputs(net, pts):
    n, B = pts.shape[:2]
    with torch.no_grad():
        return net(pts.reshape(n * B, *pts.shape[2:])).reshape(n, B, -1)


def _inside(outs, lo, hi):
    tol = 1e-5 * (1 + torch.maximum(lo.abs(), hi.abs()))
    return bool(torch.all(outs >= lo - tol)) and bool(torch.all(outs <= hi + tol))


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("train_bn", [False, True])
@pytest.mark.parametrize("grad", [True, False], ids=["autograd_path", "inference_path"])
def test_soundness_sampling(name, train_bn, grad):
    net, shape = _net(name)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    if train_bn and not has_bn:
        pytest.skip("no BatchNorm")
    if train_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    g = torch.Generator().manual_seed(1)
    B = 4
    x = torch.rand((B, *shape), generator=g)
    x[0].fill_(0.01)  # near the domain edge: clipping matters
    eps = torch.tensor([0.02, 0.05, 0.1, 0.03])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.set_grad_enabled(grad):
        lo, hi = fastcert.ibp_bounds(net, x, eps)
    for k, v in net.state_dict().items():  # running statistics are never updated
        assert torch.equal(v, before[k]), k
    ref = _frozen(net, x) if train_bn else net
    pts = _samples(x, eps, N_POINTS // B, g)
    outs = _outputs(ref, pts)
    assert _inside(outs, lo, hi)
    if train_bn:  # the clean batch through the train-mode model (batch statistics) lies within the bounds
        with torch.no_grad():
            z0 = copy.deepcopy(net)(x)
        assert _inside(z0[None], lo, hi)
    # the bounds are not vacuous: finite, ordered, and the sampled range lies within them
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all() and torch.all(lo <= hi)


@pytest.mark.parametrize("name", SMALL_NETS)
@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_soundness_box_vertices(name, method):
    """10,000 points of the clipped box (a quarter of them corners), and every vertex of the box of the
    first input along its first 8 coordinates."""
    net, shape = _net(name)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((2, *shape), generator=g)
    eps = 0.05
    lo, hi = fastcert.ibp_bounds(net, x, eps, method=method)
    outs = _outputs(net, _samples(x, eps, 5000, g))  # 10,000 points in all
    blo, bhi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    flat_lo, flat_hi = blo[0].flatten(), bhi[0].flatten()
    verts = []
    for bits in itertools.product((0, 1), repeat=8):
        v = x[0].flatten().clone()
        for j, b in enumerate(bits):
            v[j] = flat_hi[j] if b else flat_lo[j]
        verts.append(v.view(x.shape[1:]))
    with torch.no_grad():
        vout = net(torch.stack(verts))
    tol = 1e-5 * (1 + outs.abs().max())
    assert torch.all(outs >= lo - tol) and torch.all(outs <= hi + tol)
    assert torch.all(vout >= lo[0] - tol) and torch.all(vout <= hi[0] + tol)


@pytest.mark.parametrize("name", NETS)
def test_eps_zero_is_the_forward_pass(name):
    net, shape = _net(name)
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(2))
    lo, hi = fastcert.ibp_bounds(net, x, 0.0)
    with torch.no_grad():
        y = net(x)
    torch.testing.assert_close(lo, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hi, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lo, hi, rtol=0, atol=1e-5)
    # train-mode BN: model(x) in train mode normalizes with the batch statistics, and so do the bounds
    tnet = copy.deepcopy(net).train()
    for m in tnet.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    lo, hi = fastcert.ibp_bounds(tnet, x, 0.0)
    with torch.no_grad():
        y = copy.deepcopy(tnet)(x)
    torch.testing.assert_close(lo, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hi, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,shape", [("cnn_ibp", (1, 8, 8)), ("cnn7", (3, 8, 8)), ("resnet20", (3, 8, 8)),
                                        ("lenet", (1, 28, 28)), ("mlp", (1, 8, 8))])
def test_eps_zero_is_exact_for_the_zoo(arch, shape):
    torch.manual_seed(0)
    m = build_model(arch, shape, 10, (0.3,) * shape[0], (0.4,) * shape[0]).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        z = m(x)
        for method in ("ibp", "crown-ibp"):
            lo, hi = fastcert.ibp_bounds(m, x, 0.0, method=method)
            assert torch.allclose(lo, z, atol=1e-4, rtol=1e-5) and torch.allclose(hi, z, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_naive_interval_arithmetic_agrees_with_center_radius(name):
    net, shape = _net(name)
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    net = net.double()
    ops = trace(net)
    stats: dict = {}
    if needs_clean_pass(ops):
        clean_forward(ops, x, stats)
    lo, hi = (x - 0.05).clamp(min=0), (x + 0.05).clamp(max=1)
    with torch.no_grad():
        c, r = propagate(ops, (lo + hi) / 2, (hi - lo) / 2, stats)
        nl, nh = propagate_reference(ops, lo, hi, stats)
        a, b = fastcert.ibp_bounds(net, x, 0.05)
    torch.testing.assert_close(c - r, nl, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c + r, nh, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a, nl, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b, nh, rtol=1e-10, atol=1e-10)


def test_center_radius_equals_naive_interval_arithmetic():
    """float32, the inference path (no gradient) against the whole-model reference."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.rand(5, 1, 4, 4)
    with torch.no_grad():
        lo, hi = fastcert.ibp_bounds(net, x, 0.1, backend="torch")
        nlo, nhi = reference_bounds(net, x, 0.1)
    assert torch.allclose(lo, nlo, atol=1e-5) and torch.allclose(hi, nhi, atol=1e-5)


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("train_bn", [False, True])
def test_inference_path_matches_autograd_path(name, train_bn):
    """Without gradients ibp_bounds folds BN into the weights and scales intervals by powers of two;
    the bounds must equal the differentiable path's."""
    net, shape = _net(name)
    if train_bn:
        net.train()
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    g = torch.Generator().manual_seed(10)
    x = torch.rand((3, *shape), generator=g)
    with torch.no_grad():
        k = copy.deepcopy(net)(x).shape[1]
    C = torch.randn(3, 2, k, generator=g)
    for spec in (None, C):
        for eps in (0.0, 0.02, torch.tensor([0.01, 0.0, 0.05])):
            a = fastcert.ibp_bounds(net, x, eps, C=spec)
            assert a[0].requires_grad  # parameters require grad: the autograd path ran
            with torch.no_grad():
                b = fastcert.ibp_bounds(net, x, eps, C=spec)
                b2 = fastcert.ibp_bounds(net, x, eps, C=spec)  # memoized weights
            for p, q, q2 in zip(a, b, b2):
                torch.testing.assert_close(q, p.detach(), rtol=1e-5, atol=1e-5)
                assert torch.equal(q, q2)


def _relu_ops(ops) -> int:
    """ReLU ops in a traced model, inside residual branches too."""
    return sum(1 if op.kind == "relu" else _relu_ops(op.main) + _relu_ops(op.shortcut) if op.kind == "residual" else 0
               for op in ops)


IMAGE_NETS = ["cnn_bn2d_pool", "cnn_bn_no_running_stats", "basic_blocks", "cifar_resnet8", "conv_bn_pool_small",
              "residual_mixed"]
LAYOUTS = [(n, "plain") for n in NETS] + [(n, "channels_last") for n in IMAGE_NETS]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,layout", LAYOUTS)
def test_interval_relu_kernel_is_the_torch_ops_bit_for_bit(name, layout, dtype, monkeypatch):
    """Inference IBP's fused interval ReLU (csrc/ibp) runs at every ReLU, on plain and channels-last
    activations, and its bounds are the torch ops' exactly (halving instead of the power-of-two scale k is
    exact)."""
    net, shape = _net(name)
    net = net.to(dtype)
    g = torch.Generator().manual_seed(12)
    x = torch.rand((4, *shape), generator=g, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    calls = []
    real = fused._native.interval_relu
    monkeypatch.setattr(fused._native, "interval_relu", lambda *a: calls.append(a[0].shape) or real(*a))
    with torch.no_grad():
        out = [fastcert.ibp_bounds(net, x, eps) for eps in (0.0, 0.03)]
        assert len(calls) == 2 * _relu_ops(trace(net))  # every ReLU, no silent fallback
        monkeypatch.setattr(fused, "FUSED", False)
        ref = [fastcert.ibp_bounds(net, x, eps) for eps in (0.0, 0.03)]
        assert len(calls) == 2 * _relu_ops(trace(net))
    for a, b in zip(out, ref):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_memoized_weights_follow_in_place_changes():
    """`.data` writes do not bump the version counter; the memo compares values, so bounds follow."""
    net, shape = _net("cnn_bn2d_pool")
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        fastcert.ibp_bounds(net, x, 0.02)
    net[1].weight.data.mul_(-2.0)
    net[2].running_var.data.mul_(3.0)
    net[0].std.data.mul_(0.5)
    net[11].weight.data[0, 0] += 1.0
    with torch.no_grad():
        b = fastcert.ibp_bounds(net, x, 0.02)
    a = fastcert.ibp_bounds(net, x, 0.02)
    torch.testing.assert_close(b[0], a[0].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b[1], a[1].detach(), rtol=1e-5, atol=1e-5)


def test_single_affine_layer_is_exact():
    """For one Linear layer IBP is exact: the maximum over all corners equals the upper bound."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3))
    x = torch.rand(1, 4, dtype=torch.float64) * 0.8 + 0.1
    net = net.double()
    lo, hi = fastcert.ibp_bounds(net, x, 0.1)
    corners = torch.tensor([[(i >> j) & 1 for j in range(4)] for i in range(16)], dtype=torch.float64)
    pts = x - 0.1 + 0.2 * corners
    with torch.no_grad():
        y = net(pts)
    torch.testing.assert_close(y.max(0).values, hi[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.min(0).values, lo[0], rtol=1e-12, atol=1e-12)


def test_clipping_happens_before_normalization():
    """x = 0 with eps = 0.5: the box is [0, 0.5] in pixel space, i.e. [-m/s, (0.5-m)/s] after
    Normalize, not [(-0.5-m)/s, (0.5-m)/s]."""
    net = nn.Sequential(Normalize((0.2,), (0.5,)), nn.Flatten())
    x = torch.zeros(1, 1, 1, 1)
    lo, hi = fastcert.ibp_bounds(net, x, 0.5)
    torch.testing.assert_close(lo, torch.tensor([[-0.4]]))
    torch.testing.assert_close(hi, torch.tensor([[0.6]]))
    lo, hi = fastcert.ibp_bounds(net, x, 0.5, x_min=float("-inf"), x_max=float("inf"))
    torch.testing.assert_close(lo, torch.tensor([[-1.4]]))


def _margin_spec(y, k):
    B = y.shape[0]
    C = -torch.eye(k).expand(B, k, k).clone()
    C[torch.arange(B), :, y] += 1.0  # rows e_y - e_j
    keep = torch.ones(B, k, dtype=torch.bool)
    keep[torch.arange(B), y] = False
    return C[keep].view(B, k - 1, k)


def _margin_case(name, seed, B):
    """A test network, a seeded generator, B random inputs and the margin specification of random labels."""
    net, shape = _net(name)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B, *shape), generator=g)
    with torch.no_grad():
        k = net(x).shape[1]
    y = torch.randint(0, k, (B,), generator=g)
    return net, g, B, x, _margin_spec(y, k)


@pytest.mark.parametrize("name", ["mlp_bn1d", "cnn_bn2d_pool", "basic_blocks"])
def test_spec_folding_sound_and_tighter(name):
    net, g, B, x, C = _margin_case(name, seed=4, B=4)
    eps = 0.03
    lo, hi = fastcert.ibp_bounds(net, x, eps, C=C)
    llo, lhi = fastcert.ibp_bounds(net, x, eps)
    # margin bounds from the logit box: lower(y) - upper(j)
    naive = torch.einsum("bmk,bk->bm", C.clamp(min=0), llo) + torch.einsum("bmk,bk->bm", C.clamp(max=0), lhi)
    assert torch.all(lo >= naive - 1e-5 * (1 + naive.abs()))
    assert bool((lo > naive + 1e-6).any())  # strictly tighter somewhere
    outs = _outputs(net, _samples(x, eps, N_POINTS // B, g))
    margins = torch.einsum("bmk,nbk->nbm", C, outs)
    assert _inside(margins, lo, hi)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls of the fused CROWN kernels (fastcert.ibp.crown -> fastcert._native)."""
    from fastcert.ibp import crown
    calls = {"relu": 0, "concretize": 0}

    def counted(key, fn):
        def wrapper(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(crown._native, "crown_relu_back", counted("relu", crown._native.crown_relu_back))
    monkeypatch.setattr(crown._native, "crown_concretize", counted("concretize", crown._native.crown_concretize))
    return calls


def _crown(path, *args, **kw):
    """CROWN-IBP bounds on the autograd path (torch ops) or on the inference path (fused kernels)."""
    if path == "fused":
        with torch.no_grad():
            return fastcert.ibp_bounds(*args, method="crown-ibp", **kw)
    return fastcert.ibp_bounds(*args, method="crown-ibp", **kw)


@pytest.mark.parametrize("path", ["autograd", "fused"])
@pytest.mark.parametrize("name", ["mlp_bn1d", "cnn_bn2d_pool", "basic_blocks", "cifar_resnet8", "residual_container",
                                  "residual_relu_last"])
def test_crown_ibp_sound_and_tighter(name, path, kernel_calls):
    net, g, B, x, C = _margin_case(name, seed=5, B=6)
    eps = 0.02
    lo, hi = _crown(path, net, x, eps, C=C)
    assert (kernel_calls["relu"] > 0 and kernel_calls["concretize"] > 0) == (path == "fused")
    ilo, ihi = fastcert.ibp_bounds(net, x, eps, C=C)
    outs = _outputs(net, _samples(x, eps, N_POINTS // B, g))
    assert _inside(torch.einsum("bmk,nbk->nbm", C, outs), lo, hi)
    assert float((lo >= ilo - 1e-6).float().mean()) > 0.5  # tighter in most cases
    # logit bounds (no C) are sound too
    lo2, hi2 = _crown(path, net, x, eps)
    assert _inside(outs, lo2, hi2)
    # at eps = 0 CROWN-IBP is exact
    l0, h0 = _crown(path, net, x, 0.0)
    with torch.no_grad():
        torch.testing.assert_close(l0, net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("name,layout", LAYOUTS + [("residual_relu_last", "plain")])
def test_fused_kernels_match_torch_ops(name, layout, norm, dtype, kernel_calls, monkeypatch):
    """The fused ReLU step and concretization (no autograd) run at every ReLU and give the torch ops' bounds
    up to rounding, on every layer type (channels-last and plain multipliers and inputs, residual branches
    sharing one multiplier)."""
    net, g, B, x, C = _margin_case(name, seed=8, B=5)
    net, x, C = net.to(dtype), x.to(dtype), C.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    eps = 0.2 if norm != "linf" else 0.03
    with torch.no_grad():
        fast = [fastcert.ibp_bounds(net, x, eps, C=c, norm=norm, method="crown-ibp") for c in (C, None)]
        assert kernel_calls["relu"] == 2 * _relu_ops(trace(net)) and kernel_calls["concretize"] == 2
        monkeypatch.setattr(fused, "FUSED", False)
        plain = [fastcert.ibp_bounds(net, x, eps, C=c, norm=norm, method="crown-ibp") for c in (C, None)]
    assert kernel_calls["concretize"] == 2  # the switch turns them off
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a[0], b[0], **tol)
        torch.testing.assert_close(a[1], b[1], **tol)


def test_spec_matrix_folding_on_margins():
    """C = spec_matrix(y) (rows e_y - e_j): sound on sampled margins and tighter than the logit box by
    more than 1e-4 somewhere."""
    net, shape = _net("mlp_small")
    g = torch.Generator().manual_seed(4)
    x = torch.rand((4, *shape), generator=g)
    C = spec_matrix(torch.tensor([0, 1, 2, 3]), 5)
    assert torch.equal(C, _margin_spec(torch.tensor([0, 1, 2, 3]), 5))
    with torch.no_grad():
        lo_c, hi_c = fastcert.ibp_bounds(net, x, 0.05, C=C)
        lo, hi = fastcert.ibp_bounds(net, x, 0.05)
        naive = torch.matmul(C.clamp(min=0), lo.unsqueeze(-1)).squeeze(-1) + \
            torch.matmul(C.clamp(max=0), hi.unsqueeze(-1)).squeeze(-1)
        z = _outputs(net, _samples(x, 0.05, 2000, g))
        margins = torch.matmul(C.unsqueeze(0), z.unsqueeze(-1)).squeeze(-1)
    assert torch.all(lo_c >= naive - 1e-5) and (lo_c > naive + 1e-4).any()
    assert torch.all(margins >= lo_c - 1e-5) and torch.all(margins <= hi_c + 1e-5)


def test_crown_ibp_tighter_than_ibp_on_margins():
    net, shape = _net("mlp_small")
    x = torch.rand((16, *shape), generator=torch.Generator().manual_seed(5))
    C = spec_matrix(torch.zeros(16, dtype=torch.long), 5)
    with torch.no_grad():
        lo_i, _ = fastcert.ibp_bounds(net, x, 0.1, C=C)
        lo_c, _ = fastcert.ibp_bounds(net, x, 0.1, C=C, method="crown-ibp")
    assert (lo_c >= lo_i - 1e-5).float().mean() > 0.9
    assert lo_c.mean() > lo_i.mean()


def _ball_samples(x, eps, n, norm, g):
    """n points of the eps-ball (l2 or l1) around each x, clipped to [0, 1] (clipping towards x keeps
    them in the ball): (n, B, ...)."""
    B, d = x.shape[0], x[0].numel()
    if norm == "l2":
        v = torch.randn((n, B, d), generator=g, dtype=x.dtype)
        v = v / v.norm(dim=2, keepdim=True)
        rad = torch.rand((n, B, 1), generator=g, dtype=x.dtype) ** (1.0 / d)
    else:
        v = -torch.log(torch.rand((n, B, d + 1), generator=g, dtype=x.dtype))
        v = (v / v.sum(2, keepdim=True))[..., :d] * torch.sign(torch.randn((n, B, d), generator=g, dtype=x.dtype))
        rad = torch.ones((n, B, 1), dtype=x.dtype)
    rad[: n // 4] = 1.0  # a quarter on the sphere
    pts = x.reshape(1, B, d) + eps * rad * v
    return pts.clamp(0, 1).reshape(n, *x.shape)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_crown_ibp_l2_l1_sound(norm):
    net, shape = _net("cnn_bn2d_pool")
    g = torch.Generator().manual_seed(6)
    B = 4
    x = torch.rand((B, *shape), generator=g)
    eps = 0.3
    lo, hi = fastcert.ibp_bounds(net, x, eps, norm=norm, method="crown-ibp")
    outs = _outputs(net, _ball_samples(x, eps, N_POINTS // B, norm, g))
    assert _inside(outs, lo, hi)
    # the ball is inside the linf box of the same eps: never looser than the linf CROWN-IBP bound
    blo, bhi = fastcert.ibp_bounds(net, x, eps, norm="linf", method="crown-ibp")
    assert torch.all(lo >= blo - 1e-5) and torch.all(hi <= bhi + 1e-5)
    assert bool((lo > blo + 1e-4).any())


def test_per_sample_eps_equals_separate_calls():
    net, shape = _net("cnn_bn2d_pool")
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(8))
    eps = torch.tensor([0.0, 0.01, 0.04])
    for method in ("ibp", "crown-ibp"):
        lo, hi = fastcert.ibp_bounds(net, x, eps, method=method)
        for i in range(3):
            a, b = fastcert.ibp_bounds(net, x[i:i + 1], float(eps[i]), method=method)
            torch.testing.assert_close(lo[i:i + 1], a, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hi[i:i + 1], b, rtol=1e-5, atol=1e-6)


def test_per_sample_eps_and_gradients():
    net, shape = _net("mlp_small")
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(12))
    eps = torch.tensor([0.0, 0.05, 0.1])
    lo, hi = fastcert.ibp_bounds(net, x, eps)
    with torch.no_grad():
        z = net(x)
    assert torch.allclose(lo[0], z[0], atol=1e-5)
    assert torch.all((hi - lo)[1] < (hi - lo)[2])
    (hi - lo).sum().backward()
    assert net[1].weight.grad is not None and torch.isfinite(net[1].weight.grad).all()


def test_gradients_flow_through_torch_path():
    net, shape = _net("basic_blocks")
    net = net.double().train()
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 0.8 + 0.1
    C = _margin_spec(torch.tensor([0, 1, 2]), 5).double()

    def f(xx, ee):
        lo, hi = fastcert.ibp_bounds(net, xx, ee, C=C)
        return lo.sum() + 0.5 * hi.sum()

    ee = torch.tensor([0.01, 0.02, 0.03], dtype=torch.float64, requires_grad=True)
    xx = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (xx, ee), eps=1e-7, atol=1e-5)
    net.zero_grad()
    f(x, ee).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # CROWN-IBP is differentiable as well
    lo, _ = fastcert.ibp_bounds(net, x, 0.02, C=C, method="crown-ibp")
    lo.sum().backward()


def test_unsupported_layers_named():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(UnsupportedLayerError, match=r"'2' \(MaxPool2d\)"):
        fastcert.ibp_bounds(net, torch.rand(1, 1, 6, 6), 0.1)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) * 2

    with pytest.raises(UnsupportedLayerError, match=r"'body' \(Custom\)"):
        fastcert.ibp_bounds(_named("body", Custom()), torch.rand(1, 4), 0.1)
    with pytest.raises(UnsupportedLayerError, match="Dropout"):
        fastcert.ibp_bounds(nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5)).train(), torch.rand(2, 4), 0.1)
    with pytest.raises(UnsupportedLayerError, match="Sigmoid"):
        fastcert.ibp_bounds(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid()), torch.rand(2, 4), 0.1)
    with pytest.raises(UnsupportedLayerError, match="padding_mode"):
        fastcert.ibp_bounds(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
                            torch.rand(1, 1, 4, 4), 0.1)


def _named(name, module):
    seq = nn.Sequential()
    seq.add_module(name, module)
    return seq


def test_bad_input():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(2, 4)
    cases = [
        (dict(x=torch.tensor([[0.1, float("nan"), 0.2, 0.3]] * 2)), ValueError, "NaN"),
        (dict(eps=-0.1), ValueError, "eps must be >= 0"),
        (dict(eps=torch.tensor([0.1, -0.1])), ValueError, "eps must be >= 0"),
        (dict(eps=float("nan")), ValueError, "eps must be finite"),
        (dict(eps=torch.tensor([0.1, 0.1, 0.1])), ValueError, "eps must be a scalar"),
        (dict(eps="a"), TypeError, "eps"),
        (dict(x=torch.rand(4)), ValueError, "x must have shape"),
        (dict(x=torch.rand(2, 4).int()), TypeError, "float32 or float64"),
        (dict(x=torch.rand(2, 4) + 1.5), ValueError, r"x must lie in \[x_min, x_max\]"),
        (dict(C=torch.rand(2, 2, 5)), ValueError, "C must have shape"),
        (dict(C=torch.rand(3, 2, 3)), ValueError, "C must have shape"),
        (dict(C=torch.rand(2, 3)), ValueError, "C must have shape"),
        (dict(C=torch.full((2, 1, 3), float("nan"))), ValueError, "C contains NaN"),
        (dict(norm="l3"), ValueError, "norm must be one of"),
        (dict(norm="l2"), ValueError, "crown-ibp"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
        (dict(method="crown"), ValueError, "method must be one of"),
        (dict(x_min=1.0, x_max=0.0), ValueError, "x_min <= x_max"),
        (dict(backend="triton", method="crown-ibp"), ValueError, "method='ibp'"),
        (dict(backend="triton"), ValueError, "triton"),
    ]
    for kw, exc, msg in cases:
        args = dict(x=x, eps=0.1)
        args.update(kw)
        with pytest.raises(exc, match=msg):
            fastcert.ibp_bounds(net, **args)
    with pytest.raises(TypeError, match="model"):
        fastcert.ibp_bounds(lambda t: t, x, 0.1)
    with pytest.raises(ValueError, match="no layers"):
        fastcert.ibp_bounds(nn.Sequential(), x, 0.1)
