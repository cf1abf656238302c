"""fastcert: fast, exact certification and certified training of robust neural networks.

Public names are resolved lazily from their modules (see ``_PUBLIC``), so ``import fastcert`` stays
cheap (no Triton, no matplotlib) and every name listed in DESIGN.md is importable from here.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_PUBLIC = {
    # noises and smoothing (Cohen et al. 2019; Teng et al. 2020; Yang et al. 2020; Lee et al. 2019)
    "Gaussian": "smoothing.noise",
    "Laplace": "smoothing.noise",
    "Uniform": "smoothing.noise",
    "Discrete": "smoothing.noise",
    "Smooth": "smoothing.smooth",
    "Certificate": "smoothing.smooth",
    # statistics
    "clopper_pearson_lower": "stats",
    "clopper_pearson": "stats",
    # top-k (Jia et al. 2020)
    "topk_radius": "smoothing.topk",
    # stratified discrete smoothing (Lee et al. 2019)
    "threshold": "smoothing.stratified",
    "region_cardinalities": "smoothing.stratified",
    # confidence certificates (Kumar et al. 2020)
    "confidence_bounds": "smoothing.confidence",
    "certify_confidence": "smoothing.confidence",
    # interval bound propagation
    "ibp_bounds": "ibp.api",
    # robustness curves (Goepfert et al.)
    "curve": "robustness.curves",
    "RobustnessCurve": "robustness.curves",
    "class_distances": "robustness.distances",
    # training, data, models, analysis
    "train": "training.loop",
    "analyze": "analysis.tables",
    "load_dataset": "data",
    "build_model": "models.zoo",
    "load_checkpoint": "models.checkpoint",
    "load_model": "models.loading",
    "save_checkpoint": "models.checkpoint",
    "build_info": "_native",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    mod = _PUBLIC.get(name)
    if mod is None:
        raise AttributeError(f"module 'fastcert' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
