"""CROWN-IBP's output bound (Zhang et al. 2020): a backward linear relaxation pass.

IBP gives the pre-activation bounds [l, u] of every ReLU. Starting from the specification C at the
output, the pass carries a linear function Lambda . z + bias that lower-bounds C f(x) as a function
of the activations z at the current layer, and moves it one op back at a time:

- affine ops: Lambda <- Lambda W (transposed convolution for Conv2d, the vector-Jacobian product for
  pools, which are linear), bias += Lambda b;
- ReLU, unstable neuron (l < 0 < u): upper line u (z - l) / (u - l), lower line alpha z with the
  adaptive slope alpha = 1 if u > -l else 0 (CROWN); stable neurons are exact. Positive entries of
  Lambda take the lower line, negative ones the upper line;
- residual add: Lambda goes into both branches and the two results add up.

At the input the linear function is minimized over the clipped box [max(x - eps, x_min),
min(x + eps, x_max)] (and for l2 / l1 also over the eps-ball, keeping the larger of the two lower
bounds, both sound). Upper bounds are the lower bounds of -C.

Speed (same bounds): the multipliers of convolutional layers are kept channels-last (CPU transposed
convolutions run about twice as fast on that layout), the ReLU step is one select and one multiply, sums
of products over the features are batched matrix products, and an input normalization right before the
first convolution is folded into that convolution's weights (its shift into the bias) instead of
costing two passes over the largest multiplier. Without autograd (inference), on the CPU, the ReLU step and
the concretization are fused C++ kernels (csrc/ibp, through fastcert._native) that read the multiplier
once: same bounds up to float rounding (their sums accumulate in double); see fastcert.ibp.fused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastcert import _native
from fastcert.ibp.fused import channels_last, fusable, rows
from fastcert.ibp.graph import Op, bn_affine


def _relax(lo, hi):
    """CROWN relaxation of ReLU on [lo, hi] -> (a_l, a_u, t): lower line a_l z, upper line a_u (z + t);
    t = -lo on unstable neurons, else 0."""
    unstable = (lo < 0) & (hi > 0)
    active = (lo >= 0).to(hi.dtype)
    a_u = torch.where(unstable, hi / torch.where(unstable, hi - lo, torch.ones_like(hi)), active)
    a_l = torch.where(unstable, (hi > -lo).to(hi.dtype), active)
    t = torch.where(unstable, -lo, torch.zeros_like(lo))
    return a_l, a_u, t


def _cl5(t):
    """Whether t (B, K, C, H, W) is stored channels-last (C fastest)."""
    return t.dim() == 5 and t.permute(0, 1, 3, 4, 2).is_contiguous()


def _like(t, ref):
    """Per-sample tensor t (B, *f) laid out like ref (B, K, *f) so that elementwise ops stream."""
    if _cl5(ref) and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _feat_dot(lam, t):
    """sum over features of lam (B, K, *f) * t (B, *f) -> (B, K), one read of lam."""
    B, K = lam.shape[:2]
    if _cl5(lam):
        L = lam.permute(0, 1, 3, 4, 2).reshape(B, K, -1)
        v = t.permute(0, 2, 3, 1).reshape(B, -1, 1)
    else:
        L = lam.reshape(B, K, -1)
        v = t.reshape(B, -1, 1)
    return torch.bmm(L, v.to(L.dtype)).squeeze(2)


def _flat(lam):
    """A (B, K, F) view of lam sharing its memory, and a function that lays a per-sample tensor (B, *f) out
    in the same feature order as a contiguous (B, F) array; (None, None) for any other layout."""
    last = channels_last(lam, 2)
    if last is None:
        return None, None
    return rows(lam, 2, last), lambda t: rows(t, 1, last).contiguous().numpy()


def _relu_step(lam, bias, lo, hi, own: bool):
    """Lambda through a ReLU with pre-activation bounds [lo, hi] -> (lam, bias). With ``own`` the fused
    kernel may overwrite lam (no other reference to it is used later)."""
    if fusable(lam, bias, lo, hi):
        if not own:
            lam = lam.clone(memory_format=torch.preserve_format)
        flat, per_sample = _flat(lam)
        if flat is not None:
            a_l, a_u, t = (per_sample(v) for v in _relax(lo, hi))
            bias = bias.clone().contiguous()
            _native.crown_relu_back(flat.numpy(), a_l, a_u, t, bias.numpy(), torch.get_num_threads())
            return lam, bias
    a_l, a_u, t = (_like(v, lam).unsqueeze(1) for v in _relax(lo, hi))
    lam = lam * torch.where(lam >= 0, a_l, a_u)
    return lam, bias + _feat_dot(lam.clamp(max=0), t.squeeze(1))


def _conv_back(m, lam, in_shape, weight):
    """lam (B, K, *out_shape) through a Conv2d backwards (transposed convolution) -> (B, K, *in_shape)."""
    B, K = lam.shape[:2]
    out_shape = lam.shape[2:]
    flat = lam.reshape(B * K, *out_shape)
    if not flat.is_contiguous(memory_format=torch.channels_last):
        flat = flat.contiguous(memory_format=torch.channels_last)  # ~2x faster transposed convolution on CPU
    opad = []
    for d in range(2):
        s, p, dil, ks = m.stride[d], m.padding[d], m.dilation[d], m.kernel_size[d]
        opad.append(in_shape[1 + d] - ((out_shape[1 + d] - 1) * s - 2 * p + dil * (ks - 1) + 1))
    flat = F.conv_transpose2d(flat, weight, None, m.stride, m.padding, tuple(opad), m.groups, m.dilation)
    return flat.view(B, K, *in_shape) if flat.is_contiguous() else flat.unflatten(0, (B, K))


def backward(ops: list[Op], lam: torch.Tensor, bias: torch.Tensor, record: dict, stats: dict, own: bool = False):
    """Move (lam: (B, K, *out_shape), bias: (B, K)) from the output of ``ops`` to their input. ``own``: the
    caller keeps no other use of lam, so it may be updated in place."""
    B, K = lam.shape[:2]
    n = len(ops)
    # an input normalization (per-channel affine with non-zero scale) right before a conv is folded into it
    fold = None
    if n > 1 and ops[0].kind == "chaffine" and ops[1].kind == "conv" and ("shape", id(ops[0])) in record:
        s, t = bn_affine(ops[0], stats)
        if bool((s != 0).all()):
            fold = (s, t)
    for idx in range(n - 1, -1, -1):
        op = ops[idx]
        in_shape = record[("shape", id(op))]
        k = op.kind
        if k == "linear":
            m = op.module
            if m.bias is not None:
                bias = bias + torch.matmul(lam, m.bias)
            lam = torch.matmul(lam, m.weight)
        elif k == "conv":
            m = op.module
            if m.bias is not None:
                bias = bias + torch.matmul(lam.sum((3, 4)), m.bias)
            w = m.weight
            if fold is not None and idx == 1:
                w = w * fold[0].view(1, -1, 1, 1)
            lam = _conv_back(m, lam, in_shape, w)
        elif k == "chaffine":
            scale, shift = bn_affine(op, stats)
            if fold is not None and idx == 0:
                # lam was already scaled in the conv; lam_norm . shift = lam . (shift / scale)
                bias = bias + torch.matmul(lam.sum((3, 4)), (shift / scale).expand(lam.shape[2]))
                continue
            view = (1, 1, -1) + (1,) * (lam.dim() - 3)
            red = lam if lam.dim() == 3 else lam.flatten(3).sum(3)
            bias = bias + torch.matmul(red, shift.expand(red.shape[2]))
            lam = lam * scale.view(view)
        elif k == "relu":
            lo, hi = record[id(op)]
            lam, bias = _relu_step(lam, bias, lo, hi, own)
        elif k == "flatten":
            lam = lam.reshape(B, K, *in_shape)
            continue  # a view: ownership unchanged
        elif k == "pool":
            out_shape = lam.shape[2:]
            with torch.enable_grad():
                z = torch.zeros((1, *in_shape), dtype=lam.dtype, device=lam.device, requires_grad=True)
                zb = z.expand(B * K, *in_shape)
                y = op.module(zb)
                (g,) = torch.autograd.grad(y, zb, lam.reshape(B * K, *out_shape), create_graph=lam.requires_grad)
            lam = g.reshape(B, K, *in_shape)
        elif k == "residual":
            l1, b1 = backward(op.main, lam, bias, record, stats)
            l2, b2 = backward(op.shortcut, lam, torch.zeros_like(bias), record, stats)
            lam, bias = l1 + l2, b1 + b2
        else:  # pragma: no cover
            raise AssertionError(k)
        own = True  # every op above returns a new tensor
    return lam, bias


def concretize(lam, bias, x, lo, hi, eps, norm):
    """Minimum of lam . z + bias over z in [lo, hi] (and over the eps-ball around x for l1/l2)."""
    if fusable(lam, bias, x, lo, hi):
        flat, per_sample = _flat(lam)
        if flat is not None:
            ball = norm != "linf"
            s = _native.crown_concretize(flat.numpy(), per_sample((hi + lo) * 0.5), per_sample((hi - lo) * 0.5),
                                         per_sample(x) if ball else None, {"linf": 0, "l2": 1, "l1": 2}[norm],
                                         torch.get_num_threads())
            s = torch.from_numpy(s)  # float64 sums; the square root too, before the cast
            box = (s[..., 0] - s[..., 1]).to(lam.dtype) + bias
            if not ball:
                return box
            dual = (s[..., 3].sqrt() if norm == "l2" else s[..., 3]).to(lam.dtype)
            return torch.maximum(box, s[..., 2].to(lam.dtype) - eps.view(-1, 1) * dual + bias)
    c = (hi + lo) * 0.5
    r = (hi - lo) * 0.5
    box = _feat_dot(lam, c) - _feat_dot(lam.abs(), r) + bias
    if norm == "linf":
        return box
    B, K = lam.shape[:2]
    L = lam.reshape(B, K, -1)
    dual = L.norm(p=2, dim=2) if norm == "l2" else L.abs().amax(2)
    ball = _feat_dot(lam, x) - eps.view(-1, 1) * dual + bias
    return torch.maximum(box, ball)
