"""The one reference interval bound propagation: plain lower/upper interval arithmetic.

An affine map z -> W z + b sends the box [l, u] to [W+ l + W- u + b, W+ u + W- l + b] with
W+ = max(W, 0) and W- = min(W, 0) (exact for one affine map); a per-channel affine map sends the end
points and reorders them; ReLU, Flatten and the pools (non-negative weights) are monotone and map the
end points. Nothing is fused, folded, memoized or scaled: this is the oracle the tests compare the
torch path (center-radius form), the Triton kernels and CROWN-IBP's intermediate bounds with, the
baseline of the IBP benchmark, and the arithmetic of the exact MIP's big-M bounds.

- :func:`affine_interval` — one Linear / Conv2d map on a box (the W+/W- step itself; the exact MIP
  applies it to its dense layers);
- :func:`propagate_reference` — the box through a traced op list (:func:`fastcert.ibp.graph.trace`);
- :func:`reference_bounds` — the whole model on the clipped linf ball, the counterpart of
  ``ibp_bounds(model, x, eps)`` (norm "linf", no specification, method "ibp").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastcert.ibp.graph import Op, bn_affine, channel_view, clean_forward, needs_clean_pass, trace


def affine_interval(lo: torch.Tensor, hi: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    conv: torch.nn.Conv2d | None = None):
    """[lo, hi] through z -> W z + b: (W+ lo + W- hi + b, W+ hi + W- lo + b).

    weight, bias: of a Linear (lo, hi: (B, in)), or of the Conv2d ``conv`` whose stride, padding,
    dilation and groups apply (lo, hi: (B, C, H, W))."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    if conv is None:
        def apply(t, w, b=None):
            return F.linear(t, w, b)
    else:
        def apply(t, w, b=None):
            return F.conv2d(t, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    return apply(lo, wp, bias) + apply(hi, wn), apply(hi, wp, bias) + apply(lo, wn)


def propagate_reference(ops: list[Op], lo: torch.Tensor, hi: torch.Tensor, stats: dict | None = None):
    """Lower/upper bounds of the outputs of ``ops`` over the box [lo, hi] (same shape as an input batch).

    stats: the clean-batch statistics of BatchNorm layers that normalize with batch statistics
    (:func:`fastcert.ibp.graph.clean_forward`); not needed otherwise."""
    stats = {} if stats is None else stats
    for op in ops:
        k = op.kind
        if k in ("linear", "conv"):
            m = op.module
            lo, hi = affine_interval(lo, hi, m.weight, m.bias, m if k == "conv" else None)
        elif k == "chaffine":
            scale, shift = bn_affine(op, stats)
            s, t = channel_view(scale, lo.dim()), channel_view(shift, lo.dim())
            a, b = lo * s + t, hi * s + t
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        elif k == "relu":
            lo, hi = F.relu(lo), F.relu(hi)
        elif k in ("flatten", "pool"):
            lo, hi = op.module(lo), op.module(hi)
        elif k == "residual":
            l1, h1 = propagate_reference(op.main, lo, hi, stats)
            l2, h2 = propagate_reference(op.shortcut, lo, hi, stats)
            lo, hi = l1 + l2, h1 + h2
        else:  # pragma: no cover - trace() only emits the kinds above
            raise AssertionError(k)
    return lo, hi


def reference_bounds(model: torch.nn.Module, x: torch.Tensor, eps, x_min: float = 0.0, x_max: float = 1.0):
    """(lower, upper) output bounds of ``model`` over the linf ball of radius ``eps`` (a number or a (B,)
    tensor) around x (B, ...), clipped to [x_min, x_max] before any layer. No argument checks: the
    oracle for inputs that ``fastcert.ibp_bounds`` has already accepted."""
    ops = trace(model)
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if e.dim() == 1:
        e = e.view(-1, *([1] * (x.dim() - 1)))
    stats: dict = {}
    if needs_clean_pass(ops):
        clean_forward(ops, x, stats)
    lo, hi = torch.clamp(x - e, min=x_min), torch.clamp(x + e, max=x_max)
    return propagate_reference(ops, lo, hi, stats)
