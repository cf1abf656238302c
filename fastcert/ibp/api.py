"""``ibp_bounds``: validation and dispatch between the torch path, the Triton path and CROWN-IBP."""
from __future__ import annotations

import contextlib
import math
import os

import torch
from torch import nn

from fastcert.ibp import crown
from fastcert.ibp.graph import clean_forward, needs_clean_pass, trace
from fastcert.ibp.torch_path import propagate, propagate_fast
from fastcert.validate import NORMS

BACKENDS = ("auto", "torch", "triton")
METHODS = ("ibp", "crown-ibp")


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpret_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_eps(eps, x: torch.Tensor) -> torch.Tensor:
    B = x.shape[0]
    if isinstance(eps, torch.Tensor):
        e = eps.detach() if not eps.requires_grad else eps
        if e.dim() == 0:
            e = e.reshape(1).expand(B)
        elif e.shape != (B,):
            raise ValueError(f"eps must be a scalar or a tensor of shape ({B},) (one per sample), "
                             f"got {tuple(eps.shape)}")
        if not e.dtype.is_floating_point:
            e = e.to(x.dtype)
        e = e.to(device=x.device, dtype=x.dtype)
    else:
        try:
            v = float(eps)
        except (TypeError, ValueError):
            raise TypeError(f"eps must be a number or a tensor, got {type(eps).__name__}") from None
        e = torch.full((B,), v, dtype=x.dtype, device=x.device)
    lo_e, hi_e = (float(v) for v in torch.aminmax(e.detach()))
    if not (math.isfinite(lo_e) and math.isfinite(hi_e)):
        raise ValueError("eps must be finite")
    if lo_e < 0:
        raise ValueError(f"eps must be >= 0, got min {lo_e}")
    return e


def ibp_bounds(model: nn.Module, x: torch.Tensor, eps, norm: str = "linf", C: torch.Tensor | None = None,
               x_min: float = 0.0, x_max: float = 1.0, backend: str = "auto", method: str = "ibp",
               sound: bool = False):
    """Bounds on the outputs of ``model`` over every input within ``eps`` of ``x``.

    model: ``nn.Sequential``-style network (Linear, Conv2d, ReLU, BatchNorm1d/2d, Flatten,
        AvgPool2d, AdaptiveAvgPool2d, Identity, eval-mode Dropout, fastcert.models.zoo.Normalize) or a
        residual one (fastcert.models.zoo.BasicBlock / CifarResNet, or fastcert.ibp.Residual). Other
        layers raise ``UnsupportedLayerError`` (a TypeError) naming the layer. BatchNorm in eval mode
        uses its running statistics; in train mode it normalizes the bounds with the mean and biased
        variance of the clean batch ``x`` (what ``model(x)`` uses), without updating running
        statistics: the bounds are those of the network frozen to the clean-batch statistics.
    x: (B, ...) clean inputs in [x_min, x_max]; float32 or float64 on the model's device.
    eps: perturbation size, a number or a tensor of shape (B,) (one per sample).
    norm: "linf" | "l2" | "l1". The input set is the eps-ball intersected with [x_min, x_max].
        "l2" and "l1" need method="crown-ibp": its intermediate IBP bounds use the enclosing linf
        box, and the final linear bound is minimized over both the box and the ball (dual norm),
        keeping the tighter of the two sound bounds.
    C: optional specification (B, m, num_classes), e.g. rows e_y - e_j; the bounds are then on C f(x),
        with C folded into the last Linear layer (tighter than combining logit bounds).
    x_min, x_max: the input domain; the box [x - eps, x + eps] is clipped to it before any layer
        (before input normalization). Use -inf / inf for no clipping.
    backend: "torch" (reference, differentiable), "triton" (fused kernels; CUDA tensors, or CPU
        tensors under TRITON_INTERPRET=1; inference only) or "auto" (Triton on CUDA tensors when it
        is importable and no gradient is needed, torch otherwise).
    method: "ibp" | "crown-ibp" (IBP intermediate bounds + a backward CROWN pass from the output;
        torch path only).
    sound: if True, bounds sound in floating point (see :mod:`fastcert.ibp.sound`): every lower bound
        rounded down and every upper bound up, with a rigorous bound on the rounding error of every
        layer, so they contain both the exact outputs and the network's own float outputs (any
        summation order) at every point of the input set. method="ibp" only; no gradient.

    Returns (lower, upper), each (B, num_classes), or (B, m) with C. Computed in x's dtype with
    ordinary rounding: sound up to floating-point error (about 1e-6 relative in float32).

    Paths: with gradients needed (grad mode on and x, eps, C or a parameter requires grad) the
    differentiable torch path runs; otherwise an inference variant with the same bounds (BatchNorm
    folded into the preceding layer's weights, intervals scaled by powers of two so the interval ReLU
    runs in place). Derived weights (|W|, folded W) are memoized per module and reused only while a
    stored copy of their source tensors is exactly equal to the current ones (costs one copy of the
    weights in memory).
    """
    e, C, x_min, x_max = _check_args(model, x, eps, norm, C, x_min, x_max, backend, method)
    ops = trace(model)
    if not ops:
        raise ValueError("model has no layers")
    need_grad = torch.is_grad_enabled() and (
        x.requires_grad or e.requires_grad or (C is not None and C.requires_grad)
        or any(p.requires_grad for p in model.parameters()))
    if C is not None and ops[-1].kind == "linear" and C.shape[2] != ops[-1].module.out_features:
        raise ValueError(f"C must have shape (B, m, {ops[-1].module.out_features}) to match the model's outputs, "
                         f"got {tuple(C.shape)}")
    if not isinstance(sound, bool):
        raise TypeError(f"sound must be a bool, got {type(sound).__name__}")
    if sound and method != "ibp":
        raise ValueError("sound=True supports method='ibp' only (CROWN-IBP has no sound mode yet)")
    use_triton = _use_triton(backend, method, x, need_grad and not sound)

    stats: dict = {}
    if needs_clean_pass(ops):
        with torch.no_grad() if use_triton else contextlib.nullcontext():
            clean_forward(ops, x, stats)
    if use_triton:
        from fastcert.ibp.triton.path import propagate_triton

        if sound:
            from fastcert.ibp.sound import sound_ibp_triton

            return sound_ibp_triton(ops, x, e, x_min, x_max, stats, C, interpret=_interpret_enabled())
        with torch.no_grad():
            c, r = propagate_triton(ops, x, e.float(), x_min, x_max, stats,
                                    interpret=_interpret_enabled(), spec=C)
        return c - r, c + r
    if sound:
        from fastcert.ibp.sound import sound_ibp_torch

        return sound_ibp_torch(ops, x, e, x_min, x_max, stats, C)

    # per-sample eps broadcast over the input; the clipped box
    eb = e.view(-1, *([1] * (x.dim() - 1)))
    if method == "ibp" and not need_grad:
        return _ibp_inference(ops, x, eb, x_min, x_max, stats, C)
    lo_in = torch.clamp(x - eb, min=x_min)
    hi_in = torch.clamp(x + eb, max=x_max)
    if method == "ibp":
        return _ibp_torch(ops, lo_in, hi_in, stats, C)
    return _crown_ibp(ops, x, lo_in, hi_in, e, norm, stats, C)


def _check_args(model, x, eps, norm, C, x_min, x_max, backend, method):
    """Every argument check of :func:`ibp_bounds` -> (eps as a (B,) tensor, C on x's device and dtype,
    x_min, x_max as floats)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"x must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if norm != "linf" and method != "crown-ibp":
        raise ValueError(f"norm={norm!r} needs method='crown-ibp' (IBP would only bound the ball by its "
                         "enclosing linf box: call it with norm='linf' for that)")
    try:
        x_min, x_max = float(x_min), float(x_max)
    except (TypeError, ValueError):
        raise TypeError("x_min and x_max must be numbers") from None
    if math.isnan(x_min) or math.isnan(x_max) or not x_min <= x_max:
        raise ValueError(f"need x_min <= x_max, got x_min={x_min}, x_max={x_max}")
    # one pass over x: aminmax propagates NaN, and an infinite entry shows up as an infinite extreme
    lo_x, hi_x = (float(v) for v in torch.aminmax(x.detach()))
    if not (math.isfinite(lo_x) and math.isfinite(hi_x)):
        raise ValueError("x contains NaN or infinite values")
    if lo_x < x_min or hi_x > x_max:
        raise ValueError(f"x must lie in [x_min, x_max] = [{x_min}, {x_max}], got values in [{lo_x}, {hi_x}]")
    for p in list(model.parameters())[:1] + list(model.buffers())[:1]:
        if p.device != x.device:
            raise ValueError(f"x is on {x.device} but the model is on {p.device}")
    e = _check_eps(eps, x)
    if C is not None:
        if not isinstance(C, torch.Tensor):
            raise TypeError(f"C must be a torch.Tensor or None, got {type(C).__name__}")
        if C.dim() != 3 or C.shape[0] != x.shape[0] or C.shape[1] < 1:
            raise ValueError(f"C must have shape (B, m, num_classes) with B = {x.shape[0]}, got {tuple(C.shape)}")
        if not bool(torch.isfinite(C).all()):
            raise ValueError("C contains NaN or infinite values")
        C = C.to(device=x.device, dtype=x.dtype)
    return e, C, x_min, x_max


def _use_triton(backend: str, method: str, x: torch.Tensor, need_grad: bool) -> bool:
    """Whether the Triton path runs: required by backend="triton" (an error where it cannot), chosen by
    "auto" for float32 CUDA inputs without gradients when Triton is importable."""
    if backend == "triton":
        if method != "ibp":
            raise ValueError("backend='triton' supports method='ibp' only (CROWN-IBP runs on the torch path)")
        if not _triton_importable():
            raise ValueError("backend='triton' needs the triton package (see fastcert.build_info())")
        if x.device.type == "cpu" and not _interpret_enabled():
            raise ValueError("backend='triton' needs CUDA tensors (x is on the CPU); set TRITON_INTERPRET=1 "
                             "to run the kernels in Triton's interpreter")
        if x.dtype != torch.float32:
            raise TypeError(f"backend='triton' computes in float32, got x of dtype {x.dtype}")
        if need_grad:
            raise ValueError("backend='triton' has no backward pass: use backend='torch' (or 'auto') for "
                             "gradients, or call under torch.no_grad()")
        return True
    if backend == "auto":
        return (method == "ibp" and x.device.type == "cuda" and x.dtype == torch.float32 and not need_grad
                and _triton_importable())
    return False


def _ibp_torch(ops, lo_in, hi_in, stats, C):
    """Differentiable IBP on the torch path (calls that need a gradient; the others go through
    :func:`_ibp_inference`, same bounds)."""
    fold = C is not None and ops[-1].kind == "linear"
    c, r = propagate(ops, (hi_in + lo_in) * 0.5, (hi_in - lo_in) * 0.5, stats, spec=C, fold_last=fold)
    return _logit_bounds(c, r, C, fold)


def _ibp_inference(ops, x, eb, x_min: float, x_max: float, stats, C):
    """IBP without autograd (BN folded into the weights, in-place interval ReLU): the clipped box enters
    as 2 x (center, radius) = (hi + lo, hi - lo), built in place (5 passes over the input instead of 8),
    and propagate_fast absorbs the factor 2 into the first layer's weights; same bounds as
    :func:`_ibp_torch`."""
    fold = C is not None and ops[-1].kind == "linear"
    with torch.no_grad():
        lo = torch.sub(x, eb).clamp_(min=x_min)
        hi = torch.add(x, eb).clamp_(max=x_max)
        c2 = torch.add(hi, lo)
        r2 = hi.sub_(lo)
        c, r, k = propagate_fast(ops, c2, r2, stats, spec=C, fold_last=fold, owned=True, k=2.0)
        if k != 1.0:
            c, r = c / k, r / k
    return _logit_bounds(c, r, C, fold)


def _logit_bounds(c, r, C, fold: bool):
    """(lower, upper) from the output box; C, unless folded into the last Linear, applied to the box."""
    if C is not None and not fold:
        _check_spec(C, c)
        c, r = torch.einsum("bmo,bo->bm", C, c), torch.einsum("bmo,bo->bm", C.abs(), r)
    return c - r, c + r


def _crown_ibp(ops, x, lo_in, hi_in, e, norm: str, stats, C):
    """CROWN-IBP: IBP pre-activation bounds, then the backward pass from the specification (identity
    when C is None) and the concretization over the box (and the l1/l2 ball)."""
    record: dict = {}
    c, r = propagate(ops, (hi_in + lo_in) * 0.5, (hi_in - lo_in) * 0.5, stats, record=record)
    if c.dim() != 2:
        raise ValueError(f"crown-ibp needs a (B, num_classes) output, got {tuple(c.shape)}")
    if C is None:
        C = torch.eye(c.shape[1], dtype=c.dtype, device=c.device).expand(c.shape[0], -1, -1)
    _check_spec(C, c)
    m = C.shape[1]
    lam = torch.cat([C, -C], 1)
    bias = torch.zeros(lam.shape[:2], dtype=c.dtype, device=c.device)
    lam, bias = crown.backward(ops, lam, bias, record, stats, own=True)
    low = crown.concretize(lam, bias, x, lo_in, hi_in, e, norm)
    return low[:, :m], -low[:, m:]


def _check_spec(C, c):
    if c.dim() != 2 or C.shape[2] != c.shape[1]:
        raise ValueError(f"C must have shape (B, m, {c.shape[-1]}) to match the model's outputs, got {tuple(C.shape)}")
