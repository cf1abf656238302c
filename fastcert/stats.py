"""Confidence bounds used by the certificates (scipy.stats only)."""
from __future__ import annotations

import numpy as np
from scipy.stats import beta as _beta
from scipy.stats import binomtest

from fastcert.validate import check_alpha


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_counts(k, n):
    """k successes of n trials: two integers (returned as ints), or integers and numpy integer arrays
    of shapes that broadcast together (returned as two int64 arrays of the common shape);
    n >= 1 and 0 <= k <= n everywhere."""
    if _is_int(k) and _is_int(n):
        k, n = int(k), int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 <= k <= n:
            raise ValueError(f"count must be in [0, n={n}], got {k}")
        return k, n
    arrays = []
    for name, v in (("count", k), ("n", n)):
        if not (_is_int(v) or (isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.integer))):
            raise TypeError(f"{name} must be an integer or a numpy array of integers, got {v!r}")
        arrays.append(np.asarray(v, dtype=np.int64))
    try:
        k, n = np.broadcast_arrays(*arrays)
    except ValueError:
        raise ValueError(f"count and n must have shapes that broadcast, got {arrays[0].shape} and "
                         f"{arrays[1].shape}") from None
    if np.any(n < 1):
        raise ValueError(f"n must be >= 1, got {int(n.min())}")
    if np.any((k < 0) | (k > n)):
        raise ValueError("count must be in [0, n] for every entry")
    return k, n


def _as_result(out: np.ndarray, scalar: bool):
    return float(out[()]) if scalar else out


def clopper_pearson_lower(k, n, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from k of n:
    the alpha quantile of Beta(k, n - k + 1); 0 when k = 0. (Cohen et al.'s lowerConfBound.)
    k, n: integers (returns a float), or numpy integer arrays (and integers) that broadcast (returns
    float64 of their broadcast shape, each entry the scalar bound of its k and n)."""
    k, n = _check_counts(k, n)
    alpha = check_alpha(alpha)
    scalar = isinstance(k, int)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = np.zeros(k.shape)
    pos = k > 0
    out[pos] = _beta.ppf(alpha, k[pos], n[pos] - k[pos] + 1)
    return _as_result(out, scalar)


def clopper_pearson_upper(k, n, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson upper bound: the 1 - alpha quantile of Beta(k + 1, n - k);
    1 when k = n. Scalars or broadcasting integer arrays, as :func:`clopper_pearson_lower`."""
    k, n = _check_counts(k, n)
    alpha = check_alpha(alpha)
    scalar = isinstance(k, int)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = np.ones(k.shape)
    lt = k < n
    out[lt] = _beta.ppf(1.0 - alpha, k[lt] + 1, n[lt] - k[lt])
    return _as_result(out, scalar)


def clopper_pearson(k, n, alpha: float):
    """Two-sided (1 - alpha) Clopper-Pearson interval (alpha / 2 in each tail); scalars or arrays."""
    alpha = check_alpha(alpha)
    return clopper_pearson_lower(k, n, alpha / 2), clopper_pearson_upper(k, n, alpha / 2)


def binom_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value (scipy.stats.binomtest); k and n integers."""
    k, n = _check_counts(k, n)
    if not isinstance(k, int):
        raise TypeError(f"count and n must be integers, got arrays of shape {k.shape}")
    return float(binomtest(k, n, p).pvalue)
