"""The torch reference path: interval bound propagation in center-radius form.

An interval [l, u] is carried as its center c = (u + l) / 2 and radius r = (u - l) / 2 >= 0. An affine
map z -> W z + b sends it to center W c + b and radius |W| r (exact for one affine layer); a monotone
ReLU maps the end points. Differentiable end to end (certified training backpropagates through it).

:func:`propagate_naive` is the straightforward lower/upper version (W+ = max(W, 0), W- = min(W, 0):
l' = W+ l + W- u + b, u' = W+ u + W- l + b), kept as the tests' oracle and the benchmark baseline.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from .graph import Op, bn_affine, channel_view

# |W| of modules whose weights need no gradient, reused while the weight tensor is unchanged
_ABS_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def abs_weight(module) -> torch.Tensor:
    """|W| of a Linear/Conv2d; cached (keyed by the weight's storage and version) when no graph is built."""
    w = module.weight
    if torch.is_grad_enabled() and w.requires_grad:
        return w.abs()
    key = (w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape))
    hit = _ABS_CACHE.get(module)
    if hit is not None and hit[0] == key:
        return hit[1]
    a = w.detach().abs()
    _ABS_CACHE[module] = (key, a)
    return a


def _conv(module, z, weight, bias):
    return F.conv2d(z, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def relu_cr(c, r):
    lo = F.relu(c - r)
    hi = F.relu(c + r)
    return (hi + lo) * 0.5, (hi - lo) * 0.5


def propagate(ops: list[Op], c: torch.Tensor, r: torch.Tensor, stats: dict, record: dict | None = None,
              spec: torch.Tensor | None = None, fold_last: bool = False):
    """Center-radius IBP through ``ops``.

    record: if given, the (lower, upper) bounds at the input of every ReLU (keyed by id(op)) and the
    input shape of every op are stored (CROWN-IBP needs them).
    spec: (B, m, out) matrix folded into the last op, which must be a Linear (``fold_last``).
    """
    n = len(ops)
    for i, op in enumerate(ops):
        if record is not None:
            record[("shape", id(op))] = tuple(c.shape[1:])
        k = op.kind
        if k == "linear":
            m = op.module
            if fold_last and i == n - 1:
                # fold the specification: W' = C W (B, m, in), b' = C b
                w = torch.matmul(spec, m.weight)
                c_new = torch.einsum("bmi,bi->bm", w, c)
                if m.bias is not None:
                    c_new = c_new + torch.matmul(spec, m.bias)
                r = torch.einsum("bmi,bi->bm", w.abs(), r)
                c = c_new
            else:
                c, r = F.linear(c, m.weight, m.bias), F.linear(r, abs_weight(m))
        elif k == "conv":
            m = op.module
            c, r = _conv(m, c, m.weight, m.bias), _conv(m, r, abs_weight(m), None)
        elif k == "chaffine":
            scale, shift = bn_affine(op, stats)
            c = c * channel_view(scale, c.dim()) + channel_view(shift, c.dim())
            r = r * channel_view(scale.abs(), r.dim())
        elif k == "relu":
            if record is not None:
                record[id(op)] = (c - r, c + r)
            c, r = relu_cr(c, r)
        elif k in ("flatten", "pool"):  # pools average with non-negative weights: |W| = W
            c, r = op.module(c), op.module(r)
        elif k == "residual":
            c1, r1 = propagate(op.main, c, r, stats, record)
            c2, r2 = propagate(op.shortcut, c, r, stats, record)
            c, r = c1 + c2, r1 + r2
        else:  # pragma: no cover - trace() only emits the kinds above
            raise AssertionError(k)
    return c, r


def propagate_naive(ops: list[Op], lo: torch.Tensor, hi: torch.Tensor, stats: dict):
    """Lower/upper interval arithmetic with W+ / W- splits (the straightforward implementation)."""
    for op in ops:
        k = op.kind
        if k in ("linear", "conv"):
            m = op.module
            wp, wn = m.weight.clamp(min=0), m.weight.clamp(max=0)
            if k == "linear":
                lo, hi = (F.linear(lo, wp, m.bias) + F.linear(hi, wn),
                          F.linear(hi, wp, m.bias) + F.linear(lo, wn))
            else:
                lo, hi = (_conv(m, lo, wp, m.bias) + _conv(m, hi, wn, None),
                          _conv(m, hi, wp, m.bias) + _conv(m, lo, wn, None))
        elif k == "chaffine":
            scale, shift = bn_affine(op, stats)
            s = channel_view(scale, lo.dim())
            t = channel_view(shift, lo.dim())
            a, b = lo * s + t, hi * s + t
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        elif k == "relu":
            lo, hi = F.relu(lo), F.relu(hi)
        elif k in ("flatten", "pool"):
            lo, hi = op.module(lo), op.module(hi)
        elif k == "residual":
            l1, h1 = propagate_naive(op.main, lo, hi, stats)
            l2, h2 = propagate_naive(op.shortcut, lo, hi, stats)
            lo, hi = l1 + l2, h1 + h2
        else:  # pragma: no cover
            raise AssertionError(k)
    return lo, hi
