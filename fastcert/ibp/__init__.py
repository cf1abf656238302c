"""Interval bound propagation: ``fastcert.ibp_bounds``.

Two backends with one semantics: ``"torch"`` (plain torch ops, differentiable, the reference and the
CPU default) and ``"triton"`` (fused interval-linear kernels for the Linear layers, see
``fastcert/ibp/triton_kernels.py``; CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 for
testing). ``"auto"`` picks Triton for CUDA tensors when Triton is importable, else torch. The Triton
path has no backward: when gradients are needed (grad mode on and the model or x requires grad) it
falls back to the torch path, so certified training always differentiates through torch ops.
"""
from __future__ import annotations

import math
import os

import torch

from .graph import Residual, UnsupportedLayerError, trace
from .propagate import crown_ibp_torch, ibp_torch

__all__ = ["ibp_bounds", "Residual", "UnsupportedLayerError"]

BACKENDS = ("auto", "torch", "triton")
METHODS = ("ibp", "crown-ibp")


def _check(model, x, eps, norm, C, x_min, x_max, backend, method):
    if not isinstance(model, torch.nn.Module):
        raise TypeError("model must be a torch.nn.Module")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError("x must be a floating-point torch.Tensor of shape (B, ...)")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have a batch dimension and at least one point, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    if norm != "linf":
        raise ValueError(f"norm must be 'linf' (interval bounds are boxes), got {norm!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (math.isfinite(float(x_min)) and math.isfinite(float(x_max)) and float(x_min) <= float(x_max)):
        raise ValueError(f"need finite x_min <= x_max, got {x_min}, {x_max}")
    if isinstance(eps, torch.Tensor):
        if eps.dim() > 1 or (eps.dim() == 1 and eps.shape[0] != x.shape[0]):
            raise ValueError(f"eps must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(eps.shape)}")
        if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
            raise ValueError("eps must be finite and >= 0")
    else:
        try:
            e = float(eps)
        except (TypeError, ValueError):
            raise TypeError(f"eps must be a number or a tensor, got {eps!r}") from None
        if not math.isfinite(e) or e < 0:
            raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    if C is not None:
        if not isinstance(C, torch.Tensor) or C.dim() != 3 or C.shape[0] != x.shape[0]:
            raise ValueError("C must be a tensor of shape (B, m, num_classes)")


def _use_triton(backend: str, x: torch.Tensor, model: torch.nn.Module) -> bool:
    if backend == "torch":
        return False
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "triton":
        if not x.is_cuda and not interp:
            raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for testing on the CPU); "
                             "use backend='torch' or 'auto'")
        try:
            import triton  # noqa: F401
        except ImportError:
            raise RuntimeError("backend='triton' but triton is not installed (see fastcert.build_info())") from None
    else:  # auto
        if not x.is_cuda:
            return False
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in model.parameters()))
    return not needs_grad  # no Triton backward: fall back to the differentiable torch path


def ibp_bounds(model, x, eps, norm: str = "linf", C=None, x_min: float = 0.0, x_max: float = 1.0,
               backend: str = "auto", method: str = "ibp"):
    """Bounds (lower, upper) on ``model(x')`` (or ``C @ model(x')``) over all x' with
    ||x' - x||_inf <= eps and x_min <= x' <= x_max.

    x: (B, ...) inputs; eps: float or (B,) tensor (per-sample radii); C: optional (B, m, num_classes)
    specification (e.g. rows e_y - e_j), folded into the last linear layer. method: "ibp" or
    "crown-ibp" (IBP intermediate bounds, CROWN backward pass at the output). Returns two (B, m) or
    (B, num_classes) tensors. Batch norm layers in training mode use the clean batch's statistics;
    in eval mode their running statistics. Unsupported layers raise UnsupportedLayerError naming
    the layer.
    """
    _check(model, x, eps, norm, C, x_min, x_max, backend, method)
    ops = trace(model)
    if C is not None:
        C = C.to(x)
    if method == "crown-ibp":
        return crown_ibp_torch(ops, x, eps, C, float(x_min), float(x_max))
    if _use_triton(backend, x, model):
        from .triton_kernels import ibp_triton

        return ibp_triton(ops, x, eps, C, float(x_min), float(x_max))
    return ibp_torch(ops, x, eps, C, float(x_min), float(x_max))
