"""Interval bound propagation (IBP) and CROWN-IBP output bounds.

``ibp_bounds(model, x, eps, norm="linf", C=None, x_min=0., x_max=1., backend="auto", method="ibp")``
returns (lower, upper) bounds on the network's outputs (or on C f(x)) over the eps-ball around x
clipped to [x_min, x_max]. Two backends with one semantics: the torch path (``torch_path``,
differentiable) and fused Triton kernels (``triton.path`` / ``triton.kernels``, inference). Both are
checked against the plain W+/W- interval arithmetic of ``reference`` (the oracle). ``graph`` turns a
model into the op list every path (and the exact MIP of ``fastcert.robustness``) walks; ``radius``
holds the one search for the largest IBP-certified linf radius. ``Residual`` is a residual container
the engine understands; ``UnsupportedLayerError`` is raised for anything it cannot bound.
"""
from __future__ import annotations

from fastcert.ibp.api import ibp_bounds
from fastcert.ibp.graph import Residual, UnsupportedLayerError

__all__ = ["ibp_bounds", "Residual", "UnsupportedLayerError"]
