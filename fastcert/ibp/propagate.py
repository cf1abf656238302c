"""Interval bound propagation (torch reference path) and the CROWN-IBP output bound.

IBP (Gowal et al. 2018) in center-radius form: an affine layer maps the box (c, r) to
(W c + b, |W| r); a per-channel affine (BatchNorm, Normalize) to (s c + t, |s| r); ReLU maps the box
[l, u] to [relu(l), relu(u)]; average pooling is affine with non-negative weights; a residual block
adds the boxes of its two branches. With a specification matrix C the last linear layer is folded:
(C W) c + C b, |C W| r, which is tighter than bounding C z from the box of z.

CROWN-IBP (Zhang et al. 2020, "Towards Stable and Efficient Training of Verifiably Robust Neural
Networks"): IBP gives the pre-activation bounds of every ReLU; a backward pass then carries a linear
lower bound A z + a of C f(x) from the output to the input, relaxing each unstable ReLU by
relu(z) >= alpha z (alpha = 1 if u > -l else 0, CROWN's adaptive slope) where the coefficient is
non-negative and by relu(z) <= u (z - l) / (u - l) where it is negative, and is finally minimized
exactly over the input box: A c - |A| r + a.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .graph import Op, bn_affine, channel_view, clean_forward, needs_clean_pass


# ----------------------------------------------------------------------------- IBP
def _affine_box(op: Op, c: torch.Tensor, r: torch.Tensor, stats: dict):
    m = op.module
    if op.kind == "linear":
        return F.linear(c, m.weight, m.bias), F.linear(r, m.weight.abs())
    if op.kind == "conv":
        c2 = F.conv2d(c, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        r2 = F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
        return c2, r2
    if op.kind == "chaffine":
        s, t = bn_affine(op, stats)
        return c * channel_view(s, c.dim()) + channel_view(t, c.dim()), r * channel_view(s.abs(), r.dim())
    if op.kind == "pool":
        return m(c), m(r)
    if op.kind == "flatten":
        return m(c), m(r)
    raise AssertionError(op.kind)


def ibp_ops(ops: list[Op], c: torch.Tensor, r: torch.Tensor, stats: dict, relu_bounds: dict | None = None):
    """Propagate the box (c, r) through ``ops``; with ``relu_bounds`` record every ReLU's input
    bounds (l, u) under id(op) (for CROWN-IBP)."""
    for op in ops:
        if op.kind == "relu":
            lo, hi = c - r, c + r
            if relu_bounds is not None:
                relu_bounds[id(op)] = (lo, hi)
            lo, hi = F.relu(lo), F.relu(hi)
            c, r = (hi + lo) / 2, (hi - lo) / 2
        elif op.kind == "residual":
            c1, r1 = ibp_ops(op.main, c, r, stats, relu_bounds)
            c2, r2 = ibp_ops(op.shortcut, c, r, stats, relu_bounds)
            c, r = c1 + c2, r1 + r2
        else:
            c, r = _affine_box(op, c, r, stats)
    return c, r


def input_box(x: torch.Tensor, eps, x_min: float, x_max: float):
    """Center and radius of [x - eps, x + eps] clipped to [x_min, x_max] (eps scalar or (B,))."""
    if isinstance(eps, torch.Tensor) and eps.dim() > 0:
        eps = eps.to(x).view(-1, *([1] * (x.dim() - 1)))
    lo = torch.clamp(x - eps, min=x_min, max=x_max)
    hi = torch.clamp(x + eps, min=x_min, max=x_max)
    return (hi + lo) / 2, (hi - lo) / 2


def ibp_torch(ops: list[Op], x, eps, C, x_min, x_max):
    stats: dict = {}
    if needs_clean_pass(ops):
        clean_forward(ops, x, stats)
    c, r = input_box(x, eps, x_min, x_max)
    if C is not None and ops and ops[-1].kind == "linear":
        c, r = ibp_ops(ops[:-1], c, r, stats)
        lin = ops[-1].module
        W = torch.matmul(C, lin.weight)  # (B, m, in): C folded into the last layer
        b = torch.matmul(C, lin.bias) if lin.bias is not None else 0.0
        c_out = torch.matmul(W, c.unsqueeze(-1)).squeeze(-1) + b
        r_out = torch.matmul(W.abs(), r.unsqueeze(-1)).squeeze(-1)
        return c_out - r_out, c_out + r_out
    c, r = ibp_ops(ops, c, r, stats)
    if C is not None:
        c_out = torch.matmul(C, c.unsqueeze(-1)).squeeze(-1)
        r_out = torch.matmul(C.abs(), r.unsqueeze(-1)).squeeze(-1)
        return c_out - r_out, c_out + r_out
    return c - r, c + r


# ----------------------------------------------------------------------------- CROWN-IBP
def _back_affine(op: Op, A: torch.Tensor, in_shape: tuple, stats: dict):
    """A: (B, m, *out_shape) -> (A W: (B, m, *in_shape), A b: (B, m))."""
    m = op.module
    B, M = A.shape[:2]
    if op.kind == "linear":
        bias = torch.matmul(A, m.bias) if m.bias is not None else A.new_zeros(B, M)
        return torch.matmul(A, m.weight), bias
    if op.kind == "conv":
        flat = A.reshape(B * M, *A.shape[2:])
        Aw = torch.nn.grad.conv2d_input((B * M, *in_shape), m.weight, flat, m.stride, m.padding, m.dilation,
                                        m.groups)
        bias = (A.sum(dim=(3, 4)) * m.bias).sum(-1) if m.bias is not None else A.new_zeros(B, M)
        return Aw.reshape(B, M, *in_shape), bias
    if op.kind == "chaffine":
        s, t = bn_affine(op, stats)
        view = (1, 1, -1) + (1,) * (A.dim() - 3)
        bias = (A * t.view(view)).reshape(B, M, -1).sum(-1)
        return A * s.view(view), bias
    if op.kind == "flatten":
        return A.reshape(B, M, *in_shape), A.new_zeros(B, M)
    if op.kind == "pool":
        # average pooling is linear without bias: its transpose is its vector-Jacobian product
        _, vjp_fn = torch.func.vjp(m, A.new_zeros(1, *in_shape))
        flat = A.reshape(B * M, 1, *A.shape[2:])
        Aw = torch.func.vmap(lambda a: vjp_fn(a)[0][0])(flat)
        return Aw.reshape(B, M, *in_shape), A.new_zeros(B, M)
    raise AssertionError(op.kind)


def _shapes(ops: list[Op], x_shape: tuple, stats: dict) -> list:
    """Input shape (without batch) of every op, residual branches recursively: list of (op, shape, sub)."""
    out = []
    z = torch.zeros(1, *x_shape)
    for op in ops:
        if op.kind == "residual":
            sub_main = _shapes(op.main, tuple(z.shape[1:]), stats)
            sub_short = _shapes(op.shortcut, tuple(z.shape[1:]), stats)
            out.append((op, tuple(z.shape[1:]), (sub_main, sub_short)))
            z = _run_shape(op.main, z, stats)
        else:
            out.append((op, tuple(z.shape[1:]), None))
            z = _run_shape([op], z, stats)
    return out


def _run_shape(ops, z, stats):
    for op in ops:
        if op.kind == "residual":
            z = _run_shape(op.main, z, stats)
        elif op.kind in ("relu", "chaffine"):
            continue
        else:
            z = op.module(z)
    return z


def _backward(plan: list, A: torch.Tensor, relu_bounds: dict, stats: dict):
    """Carry the linear lower bound A z_out + bias back through ``plan``; returns (A_in, bias)."""
    bias = A.new_zeros(A.shape[:2])
    for op, in_shape, sub in reversed(plan):
        if op.kind == "relu":
            lo, hi = relu_bounds[id(op)]
            lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
            active = lo >= 0
            inactive = hi <= 0
            unstable = ~(active | inactive)
            denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
            up_slope = torch.where(active, torch.ones_like(hi), torch.where(unstable, hi / denom, torch.zeros_like(hi)))
            up_bias = torch.where(unstable, -lo * hi / denom, torch.zeros_like(hi))
            low_slope = torch.where(active, torch.ones_like(hi),
                                    torch.where(unstable & (hi > -lo), torch.ones_like(hi), torch.zeros_like(hi)))
            Ap, An = A.clamp(min=0), A.clamp(max=0)
            bias = bias + (An * up_bias).reshape(A.shape[0], A.shape[1], -1).sum(-1)
            A = Ap * low_slope + An * up_slope
        elif op.kind == "residual":
            sub_main, sub_short = sub
            A1, b1 = _backward(sub_main, A, relu_bounds, stats)
            A2, b2 = _backward(sub_short, A, relu_bounds, stats)
            A, bias = A1 + A2, bias + b1 + b2
        else:
            A, b = _back_affine(op, A, in_shape, stats)
            bias = bias + b
    return A, bias


def crown_ibp_torch(ops: list[Op], x, eps, C, x_min, x_max):
    stats: dict = {}
    if needs_clean_pass(ops):
        clean_forward(ops, x, stats)
    c, r = input_box(x, eps, x_min, x_max)
    relu_bounds: dict = {}
    out_c, _ = ibp_ops(ops, c, r, stats, relu_bounds)
    B = x.shape[0]
    if C is None:
        C = torch.eye(out_c.shape[-1], device=x.device, dtype=x.dtype).expand(B, -1, -1)
    plan = _shapes(ops, tuple(x.shape[1:]), stats)
    bounds = []
    for sign in (1.0, -1.0):  # lower bound of C f and of -C f
        A, bias = _backward(plan, sign * C, relu_bounds, stats)
        Af = A.reshape(B, A.shape[1], -1)
        val = torch.matmul(Af, c.reshape(B, -1, 1)).squeeze(-1) - torch.matmul(Af.abs(), r.reshape(B, -1, 1)).squeeze(-1)
        bounds.append(sign * (val + bias))
    return bounds[0], bounds[1]
