"""The torch path: interval bound propagation in center-radius form.

An interval [l, u] is carried as its center c = (u + l) / 2 and radius r = (u - l) / 2 >= 0. An affine
map z -> W z + b sends it to center W c + b and radius |W| r (exact for one affine layer); a monotone
ReLU maps the end points. Differentiable end to end (certified training backpropagates through it).

The straightforward lower/upper version (W+ = max(W, 0), W- = min(W, 0)), the tests' oracle and the
benchmark baseline, is :mod:`fastcert.ibp.reference`.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from fastcert.ibp import fused
from fastcert.ibp.graph import Op, bn_affine, channel_view

# Derived weights (|W|, BN folded into W) of modules, reused across calls while the tensors they were
# computed from are EXACTLY unchanged: a hit compares a stored copy of every source tensor with
# torch.equal (one read, ~6 ms for CNN-7's 16.8M-weight layer on a CPU core), so no in-place change,
# `.data` writes included, can leave a stale |W| behind. Memory: one copy of the source weights and
# the derived tensors, per module, freed with the module.
_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def memo(module, tag, sources: tuple, compute):
    """compute() cached on ``module`` under ``tag``, valid while every tensor of ``sources`` equals its
    value at the time it was computed."""
    store = _MEMO.get(module)
    if store is None:
        store = {}
        _MEMO[module] = store
    hit = store.get(tag)
    if hit is not None and len(hit[0]) == len(sources) and all(_same(a, b) for a, b in zip(hit[0], sources)):
        return hit[1]
    result = compute()
    store[tag] = (tuple(None if t is None else t.detach().clone() for t in sources), result)
    return result


def abs_weight(module) -> torch.Tensor:
    """|W| of a Linear/Conv2d; memoized (see ``memo``) when no graph is built."""
    w = module.weight
    if torch.is_grad_enabled() and w.requires_grad:
        return w.abs()
    return memo(module, "abs", (w,), lambda: w.detach().abs())


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


# ----------------------------------------------------------------------------- inference fast path
# Same bounds as propagate(), fewer passes over memory, for calls that need no gradient:
# - a BatchNorm / per-channel affine right after a Linear/Conv2d is folded into its weights
#   (W' = s W, |W'| = |s| |W|, b' = s b + t; cached per module while weights and statistics are
#   unchanged; not for BN with batch statistics, which change with every batch);
# - intervals are stored scaled by a power of two k (stored = k * true, exact in floating point):
#   the interval ReLU then needs no halving, center*2 = hi + lo and radius*2 = hi - lo, written into
#   the buffers that are free (6 passes instead of 8 plus allocations), and the next layer absorbs
#   1/k into its cached weights;
# - elementwise work happens in place on tensors this function created.
_K_MAX = 2.0 ** 16  # resolve the scale before it could approach float32's range


def _uses_batch_stats(am) -> bool:
    return hasattr(am, "running_mean") and (am.training or am.running_mean is None)


def _folded(op: Op, aff: Op | None, stats: dict, k: float):
    """(W', |W'|, b') of a Linear/Conv2d with the following per-channel affine ``aff`` (eval BN or
    Normalize) folded in and the input scale 1/k absorbed; memoized."""
    m = op.module
    am = aff.module if aff is not None else None

    def compute():
        w = m.weight.detach()
        cout = w.shape[0]
        b = m.bias.detach() if m.bias is not None else torch.zeros(cout, dtype=w.dtype, device=w.device)
        if aff is not None:
            s, t = bn_affine(aff, stats)
            s, t = s.detach().expand(cout), t.detach().expand(cout)
            view = (-1,) + (1,) * (w.dim() - 1)
            w_eff, wa_eff, b = w * s.view(view), w.abs() * s.abs().view(view), b * s + t
        else:
            w_eff, wa_eff = w, w.abs()
        if k != 1.0:
            w_eff, wa_eff = w_eff / k, wa_eff / k
        return w_eff.contiguous(), wa_eff.contiguous(), b.contiguous()

    sources = (m.weight, m.bias)
    if am is not None:
        sources += tuple(getattr(am, a, None) for a in ("weight", "bias", "running_mean", "running_var", "mean", "std"))
        sources += (torch.tensor(float(getattr(am, "eps", 0.0))),)
    return memo(m, ("fold", id(am), k), sources, compute)


def propagate_fast(ops: list[Op], c: torch.Tensor, r: torch.Tensor, stats: dict, spec=None,
                   fold_last: bool = False, owned: bool = False, k: float = 1.0):
    """Inference IBP (no autograd) -> (c, r, k) with the true center/radius = stored / k.

    owned: c and r may be modified in place."""
    n = len(ops)
    i = 0
    while i < n:
        op = ops[i]
        kind = op.kind
        if kind in ("linear", "conv"):
            m = op.module
            aff = None
            if i + 1 < n and ops[i + 1].kind == "chaffine":
                if not _uses_batch_stats(ops[i + 1].module):
                    aff = ops[i + 1]
            if kind == "linear" and fold_last and i == n - 1:
                w = torch.matmul(spec, m.weight.detach()) / k
                c_new = torch.einsum("bmi,bi->bm", w, c)
                if m.bias is not None:
                    c_new = c_new + torch.matmul(spec, m.bias.detach())
                r = torch.einsum("bmi,bi->bm", w.abs(), r)
                c, k = c_new, 1.0
            else:
                w, wa, b = _folded(op, aff, stats, k)
                if kind == "linear":
                    c, r = F.linear(c, w, b), F.linear(r, wa)
                else:
                    c, r = _conv(m, c, w, b), _conv(m, r, wa, None)
                k = 1.0
            owned = True
            i += 2 if aff is not None else 1
            continue
        if kind == "chaffine":
            s, t = bn_affine(op, stats)
            s, t = s.detach(), t.detach()
            sv, tv = channel_view(s, c.dim()), channel_view(t * k, c.dim())
            if owned:
                c.mul_(sv).add_(tv)
                r.mul_(sv.abs())
            else:
                c, r = c * sv + tv, r * sv.abs()
            owned = True
        elif kind == "relu":
            out = fused.interval_relu(c, r, owned)
            if out is not None:  # relu(k z) = k relu(z) and the kernel halves exactly: the scale k is unchanged
                c, r = out
                owned = True
                i += 1
                continue
            lo = torch.sub(c, r).clamp_(min=0)
            hi = c.add_(r) if owned else torch.add(c, r)
            hi.clamp_(min=0)
            cen = torch.add(hi, lo, out=r) if owned else torch.add(hi, lo)
            c, r = cen, hi.sub_(lo)
            k *= 2.0
            owned = True
            if k > _K_MAX:
                c.mul_(1.0 / k)
                r.mul_(1.0 / k)
                k = 1.0
        elif kind in ("flatten", "pool"):
            c, r = op.module(c), op.module(r)
            owned = owned and kind == "pool"  # flatten returns views
        elif kind == "residual":
            c1, r1, k1 = propagate_fast(op.main, c, r, stats, owned=False, k=k)
            c2, r2, k2 = propagate_fast(op.shortcut, c, r, stats, owned=False, k=k)
            # stored = k * true: bring branch 2 to branch 1's scale inside the add
            c = torch.add(c1, c2, alpha=k1 / k2)
            r = torch.add(r1, r2, alpha=k1 / k2)
            k = k1
            owned = True
        else:  # pragma: no cover
            raise AssertionError(kind)
        i += 1
    return c, r, k
