"""The one definition of "the largest IBP-certified linf radius" of a point, and the margin bounds it
rests on. Used by certified training (ACERT budgets, evaluation), ``certify --method ibp`` and the
certified band of robustness curves.

Threat model: linf balls of radius eps clipped to the [0, 1] input box; a point is certified at eps
when every lower bound on the margins z_y - z_j (j != y) is > 0.
"""
from __future__ import annotations

import torch

from fastcert.ibp.api import ibp_bounds


def spec_matrix(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C: (B, num_classes - 1, num_classes), rows e_y - e_j for every j != y."""
    B = y.shape[0]
    eye = torch.eye(num_classes, device=y.device)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row j = e_y - e_j
    keep = torch.ones(B, num_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(B, device=y.device), y] = False
    return c[keep].view(B, num_classes - 1, num_classes)


def margin_lower_bounds(model, x, y, eps, num_classes: int, method: str = "ibp", sound: bool = False) -> torch.Tensor:
    """(B, num_classes - 1) lower bounds on z_y - z_j over the clipped linf ball of radius eps
    (scalar or (B,) tensor). sound: floating-point sound bounds (``ibp_bounds(..., sound=True)``; no
    gradient: False for training, True for certification)."""
    lower, _ = ibp_bounds(model, x, eps, norm="linf", C=spec_matrix(y, num_classes), x_min=0.0, x_max=1.0,
                          method=method, sound=sound)
    return lower


@torch.no_grad()
def certified_radius(model, x, y, num_classes: int, cap: float, tol: float = 1e-4, method: str = "ibp",
                     max_iter: int = 40, sound: bool = False) -> torch.Tensor:
    """Per sample, the largest eps in [0, cap] (to within ``tol``) at which every margin lower bound is
    > 0 (strict: a tie would not be a certificate): 0 for misclassified points, ``cap`` when certified at
    the cap. Batched bisection that re-evaluates only the samples whose bracket is still wider than
    ``tol``. The returned value is always certified (the lower end of the final bracket); eps + tol is
    not (the upper end, checked at each step), unless the value is the cap. sound: see
    :func:`margin_lower_bounds`."""
    B = x.shape[0]
    out = torch.zeros(B, device=x.device)
    pred_ok = model(x).argmax(1) == y
    idx = torch.nonzero(pred_ok).flatten()
    if idx.numel() == 0:
        return out
    cap_t = torch.full((idx.numel(),), float(cap), device=x.device)
    ok_cap = margin_lower_bounds(model, x[idx], y[idx], cap_t, num_classes, method, sound).min(1).values > 0
    out[idx[ok_cap]] = float(cap)
    act = idx[~ok_cap]
    lo = torch.zeros(act.numel(), device=x.device)
    hi = torch.full((act.numel(),), float(cap), device=x.device)
    for _ in range(max_iter):
        if act.numel() == 0:
            break
        mid = (lo + hi) / 2
        ok = margin_lower_bounds(model, x[act], y[act], mid, num_classes, method, sound).min(1).values > 0
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
        done = (hi - lo) <= tol
        if done.any():
            out[act[done]] = lo[done]
            keep = ~done
            act, lo, hi = act[keep], lo[keep], hi[keep]
    if act.numel():
        out[act] = lo
    return out
