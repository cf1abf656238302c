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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastcert.ibp.graph import Op, bn_affine


def _relu_relax(lo: torch.Tensor, hi: torch.Tensor):
    """Slopes and intercept of the CROWN relaxation: lower a_l z, upper a_u z + b_u."""
    active = lo >= 0
    unstable = (lo < 0) & (hi > 0)
    denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
    a_u = torch.where(unstable, hi / denom, active.to(hi.dtype))
    b_u = torch.where(unstable, -lo * a_u, torch.zeros_like(hi))
    a_l = torch.where(unstable, (hi > -lo).to(hi.dtype), active.to(hi.dtype))
    return a_l, a_u, b_u


def _sum_feat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(2)


def backward(ops: list[Op], lam: torch.Tensor, bias: torch.Tensor, record: dict, stats: dict):
    """Move (lam: (B, K, *out_shape), bias: (B, K)) from the output of ``ops`` to their input."""
    B, K = lam.shape[:2]
    for op in reversed(ops):
        in_shape = record[("shape", id(op))]
        k = op.kind
        if k == "linear":
            m = op.module
            if m.bias is not None:
                bias = bias + torch.matmul(lam, m.bias)
            lam = torch.matmul(lam, m.weight)
        elif k == "conv":
            m = op.module
            out_shape = lam.shape[2:]
            if m.bias is not None:
                bias = bias + (lam.sum((3, 4)) * m.bias).sum(2)
            flat = lam.reshape(B * K, *out_shape)
            # the output padding makes the transposed convolution land exactly on the input size
            opad = []
            for d in range(2):
                s, p, dil, ks = m.stride[d], m.padding[d], m.dilation[d], m.kernel_size[d]
                opad.append(in_shape[1 + d] - ((out_shape[1 + d] - 1) * s - 2 * p + dil * (ks - 1) + 1))
            flat = F.conv_transpose2d(flat, m.weight, None, m.stride, m.padding, tuple(opad), m.groups, m.dilation)
            lam = flat.reshape(B, K, *in_shape)
        elif k == "chaffine":
            scale, shift = bn_affine(op, stats)
            view = (1, 1, -1) + (1,) * (lam.dim() - 3)
            bias = bias + _sum_feat(lam * shift.view(view))
            lam = lam * scale.view(view)
        elif k == "relu":
            lo, hi = record[id(op)]
            a_l, a_u, b_u = (t.unsqueeze(1) for t in _relu_relax(lo, hi))
            neg = lam.clamp(max=0)
            bias = bias + _sum_feat(neg * b_u)
            lam = lam.clamp(min=0) * a_l + neg * a_u
        elif k in ("flatten", "pool"):
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
    return lam, bias


def concretize(lam, bias, x, lo, hi, eps, norm):
    """Minimum of lam . z + bias over z in [lo, hi] (and over the eps-ball around x for l1/l2)."""
    c = ((hi + lo) * 0.5).flatten(1).unsqueeze(1)
    r = ((hi - lo) * 0.5).flatten(1).unsqueeze(1)
    lam = lam.flatten(2)
    box = (lam * c).sum(2) - (lam.abs() * r).sum(2) + bias
    if norm == "linf":
        return box
    dual = lam.norm(p=2, dim=2) if norm == "l2" else lam.abs().amax(2)
    ball = (lam * x.flatten(1).unsqueeze(1)).sum(2) - eps.view(-1, 1) * dual + bias
    return torch.maximum(box, ball)
