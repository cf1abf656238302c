"""Confidence bounds used by the certificates (scipy.stats only)."""
from __future__ import annotations


import numpy as np
from scipy.stats import beta as _beta
from scipy.stats import binomtest

from fastcert.validate import check_alpha  # noqa: F401  (the bounds' level check)


def _check_counts(k, n):
    for name, v in (("count", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"count must be in [0, n={n}], got {k}")
    return k, n


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from k of n:
    the alpha quantile of Beta(k, n - k + 1); 0 when k = 0. (Cohen et al.'s lowerConfBound.)"""
    k, n = _check_counts(k, n)
    alpha = check_alpha(alpha)
    if k == 0:
        return 0.0
    return float(_beta.ppf(alpha, float(k), float(n - k + 1)))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound: the 1 - alpha quantile of Beta(k + 1, n - k)."""
    k, n = _check_counts(k, n)
    alpha = check_alpha(alpha)
    if k == n:
        return 1.0
    return float(_beta.ppf(1.0 - alpha, float(k + 1), float(n - k)))


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) Clopper-Pearson interval (alpha / 2 in each tail)."""
    alpha = check_alpha(alpha)
    return clopper_pearson_lower(k, n, alpha / 2), clopper_pearson_upper(k, n, alpha / 2)


def binom_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value (scipy.stats.binomtest)."""
    k, n = _check_counts(k, n)
    return float(binomtest(k, n, p).pvalue)
