"""Certified confidence of a Gaussian-smoothed classifier (Kumar, Levine, Feizi & Goldstein 2020,
"Certifying Confidence via Randomized Smoothing", NeurIPS).

Setting. f(z) in [a, b] is a per-sample confidence of one class c of the base classifier:
``measure="score"``: the softmax probability p_c(z), [a, b] = [0, 1];
``measure="margin"``: p_c(z) - max_{j != c} p_j(z), [a, b] = [-1, 1].
The smoothed confidence is F(x) = E[f(x + delta)], delta ~ N(0, sigma^2 I). For each l2 radius R we
return, from n i.i.d. samples f(x + delta_i), a lower bound on min_{||x' - x|| <= R} F(x') that
holds with probability >= 1 - alpha over the samples (one event covers every radius at once).

Expectation-based bound (the paper's baseline, "without CDF"). Hoeffding's inequality gives
E_low = mean - (b - a) sqrt(ln(1/alpha) / (2n)) <= F(x). Since x -> Phi^{-1}((F(x) - a) / (b - a))
is (1/sigma)-Lipschitz (Salman et al. 2019; Kumar et al. Section 4),
    F(x') >= a + (b - a) Phi(Phi^{-1}((E_low - a) / (b - a)) - R / sigma).

CDF-based bound (Kumar et al., Theorem 2). For thresholds a = t_0 <= t_1 <= ... <= t_m and lower
bounds p_k <= P(f(x + delta) >= t_k), the Neyman-Pearson argument applied to each level set
{f >= t_k} gives P(f(x' + delta) >= t_k) >= Phi(Phi^{-1}(p_k) - R / sigma), and since
E[Y] = a + int_a^b P(Y >= t) dt >= a + sum_k (t_k - t_{k-1}) P(Y >= t_k),
    F(x') >= a + sum_{k=1}^m (t_k - t_{k-1}) Phi(Phi^{-1}(p_k) - R / sigma).
The p_k come from the empirical survival function minus a Dvoretzky-Kiefer-Wolfowitz band,
p_k = max(S_n(t_k) - eps, 0), S_n(t) = #{i : y_i >= t} / n, eps = sqrt(ln(1/alpha) / (2n))
(Massart's one-sided constant, valid for alpha <= 1/2; above 1/2 we use the two-sided
eps = sqrt(ln(2/alpha) / (2n)), which holds for every alpha). The band holds for all t at once, so
thresholds may be read off the samples themselves.

Deviations from the authors' code (github.com/aounon/cdf-smoothing), each keeping the bound valid:
* thresholds: by default every sorted sample is a threshold (the lower Riemann sum above becomes the
  exact integral of the lower band, the tightest bound this theorem gives); ``num_thresholds=m``
  reproduces the authors' choice (every ceil(n/m)-th sorted sample, m = 10000 in the paper).
* S_n(t_k) is the exact fraction of samples >= t_k (the code uses (m - k) / m, which equals it when
  m divides n and there are no ties, and can exceed it otherwise).
* the expectation-based lower bound is clipped to [a, b] before the transform (the code feeds values
  below a to Phi^{-1}, giving NaN).
* certify_confidence selects the class by the vote counts of the n0 selection samples (Cohen et al.);
  the authors take the argmax of the average softmax scores. It abstains when the R = 0 CDF bound is
  not strictly above 1/2 (score) or 0 (margin), i.e. when it cannot certify that c is the smoothed
  soft classifier's top class; the authors abstain only when it is strictly below. On abstention we
  keep the computed bounds (the authors write zeros); they remain valid bounds for the selected class.
The two bounds each hold with probability >= 1 - alpha (not jointly; jointly 1 - 2 alpha).

Why per-sample values rather than a histogram: the sampling kernels return every sample's value
(float32, 400 KB at n = 100,000) and we sort them here. The sorted sample gives the exact empirical
CDF, so every sample can serve as a threshold and no binning error has to be charged to the bound;
the O(n log n) sort is far cheaper than the n forward passes that produced the values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from fastcert.io.logs import floor_str, radius_tag
from fastcert.io.readers import ConfidenceLog, read_kumar_log
from fastcert.smoothing.noise import Gaussian
from fastcert.rng import resolve_seed
from fastcert.smoothing.certificate import STREAM_CONFIDENCE, STREAM_SELECT
from fastcert.validate import check_alpha, check_choice, check_int, check_positive, check_radii

MEASURES = {"score": (0.0, 1.0), "margin": (-1.0, 1.0)}
# the smoothed soft classifier's top class is certified when the R = 0 bound exceeds this
ABSTAIN_CUTOFF = {"score": 0.5, "margin": 0.0}
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # the paper's radii


# ---------------------------------------------------------------------------------------- validation
def _measure_range(measure) -> tuple[float, float]:
    return MEASURES[check_choice("measure", measure, MEASURES)]


def _radii_array(radii) -> np.ndarray:
    return np.asarray(check_radii(radii), dtype=np.float64)


def _num_thresholds(m) -> int | None:
    return None if m is None else check_int("num_thresholds", m, 1)


def _check_scores(scores, lo: float, hi: float, measure: str) -> np.ndarray:
    if isinstance(scores, (str, bytes)):
        raise TypeError("scores must be a 1-D array of numbers")
    try:
        v = np.asarray(scores)
    except (TypeError, ValueError):
        raise TypeError("scores must be a 1-D array of numbers") from None
    if v.dtype == object or not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise TypeError(f"scores must be a 1-D array of real numbers, got dtype {v.dtype}")
    if v.ndim != 1:
        raise ValueError(f"scores must be 1-D (one value per noise sample), got shape {v.shape}")
    if v.size == 0:
        raise ValueError("scores must not be empty")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("scores contain NaN or inf")
    if v.min() < lo or v.max() > hi:
        raise ValueError(f"scores must lie in [{lo:g}, {hi:g}] for measure={measure!r}, "
                         f"got values in [{v.min():g}, {v.max():g}]")
    return v


# ---------------------------------------------------------------------------------------- statistics
def dkw_epsilon(n: int, alpha: float) -> float:
    """Half-width of a one-sided (1 - alpha) DKW band for an empirical CDF of n samples:
    sqrt(ln(1/alpha) / (2n)) (Massart 1990, needs alpha <= 1/2), else sqrt(ln(2/alpha) / (2n))."""
    if alpha <= 0.5:
        return math.sqrt(math.log(1.0 / alpha) / (2.0 * n))
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def hoeffding_lower(mean: float, n: int, alpha: float, lo: float, hi: float) -> float:
    """One-sided (1 - alpha) Hoeffding lower bound on the mean of [lo, hi]-valued samples."""
    return mean - (hi - lo) * math.sqrt(math.log(1.0 / alpha) / (2.0 * n))


def _shift(p: np.ndarray | float, r_over_sigma: float):
    """Phi(Phi^{-1}(p) - R / sigma): the worst-case probability of a set of Gaussian measure p after a
    shift of l2 length R (Cohen et al., Lemma; Neyman-Pearson). p = 0 -> 0, p = 1 -> 1 (R finite)."""
    return ndtr(ndtri(p) - r_over_sigma)


def _cdf_bounds(sorted_vals: np.ndarray, eps: float, sigma: float, radii: np.ndarray, lo: float,
                num_thresholds: int | None = None) -> np.ndarray:
    """CDF-based bounds (see the module docstring) from ascending-sorted samples and a DKW band eps."""
    n = sorted_vals.size
    gap = 1 if num_thresholds is None else max(1, math.ceil(n / num_thresholds))
    t = sorted_vals[::gap]
    # S_n(t_k): fraction of samples >= t_k (first index of t_k in the sorted array handles ties)
    surv = (n - np.searchsorted(sorted_vals, t, side="left")) / n
    p = np.maximum(surv - eps, 0.0)
    widths = np.diff(t, prepend=lo)
    keep = (widths > 0) & (p > 0)  # zero-width or zero-probability terms add nothing
    widths, z = widths[keep], ndtri(p[keep])
    return np.array([lo + float(np.sum(widths * ndtr(z - r / sigma))) for r in radii])


def _expectation_transform(e_low: float, sigma: float, radii: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """a + (b - a) Phi(Phi^{-1}((E - a) / (b - a)) - R / sigma) for a lower bound E on the smoothed
    expectation at x (clipped to [a, b]): a lower bound on it anywhere within l2 radius R."""
    q = (min(max(e_low, lo), hi) - lo) / (hi - lo)
    return np.array([lo + (hi - lo) * float(_shift(q, r / sigma)) for r in radii])


def _expectation_bounds(mean: float, n: int, alpha: float, sigma: float, radii: np.ndarray, lo: float,
                        hi: float) -> np.ndarray:
    return _expectation_transform(hoeffding_lower(mean, n, alpha, lo, hi), sigma, radii, lo, hi)


def confidence_bounds(scores, sigma, radii, alpha, measure: str = "score", num_thresholds: int | None = None):
    """Lower bounds on the Gaussian-smoothed expected confidence anywhere within each l2 radius.

    scores: (n,) per-sample confidences f(x + delta_i) of the predicted class under N(0, sigma^2 I)
    noise: softmax scores in [0, 1] (``measure="score"``) or margins p_c - max_{j != c} p_j in
    [-1, 1] (``measure="margin"``). radii: l2 radii R >= 0 (a number or a 1-D list). alpha: failure
    probability in (0, 1). num_thresholds: None (every sample is a threshold, the tightest) or m
    (every ceil(n/m)-th sorted sample, as in the authors' code).

    Returns (cdf, expectation): two float64 arrays of len(radii). With probability >= 1 - alpha over
    the samples, every cdf[i] <= min_{||x' - x||_2 <= radii[i]} E[f(x' + delta)]; the same holds for
    ``expectation`` (Kumar et al. 2020; formulas and deviations in the module docstring). Both are
    non-increasing in R and never below the range minimum a.
    """
    lo, hi = _measure_range(measure)
    sigma = check_positive("sigma", sigma)
    r = _radii_array(radii)
    alpha = check_alpha(alpha)
    m = _num_thresholds(num_thresholds)
    v = _check_scores(scores, lo, hi, measure)
    n = v.size
    v = np.sort(v)
    cdf = _cdf_bounds(v, dkw_epsilon(n, alpha), sigma, r, lo, m)
    exp = _expectation_bounds(float(np.mean(v)), n, alpha, sigma, r, lo, hi)
    # guard against rounding in the sums pushing a bound outside the range
    return np.clip(cdf, lo, hi), np.clip(exp, lo, hi)


# ---------------------------------------------------------------------------------------- certify
@dataclass
class ConfidenceCertificate:
    """Result of :func:`certify_confidence`.

    prediction: certified top class of the smoothed soft classifier, -1 = abstain (the R = 0 CDF
    bound is not above 1/2 for scores / 0 for margins). selected: the class chosen by the n0
    selection samples (the class the bounds are about, also on abstention). radii: (R,) float64.
    cdf, expectation: (R,) lower bounds (see confidence_bounds). mean: empirical mean of the n
    per-sample confidences. n_used: n0 + n. seed: the seed used.
    """

    prediction: int
    selected: int
    measure: str
    radii: np.ndarray
    cdf: np.ndarray
    expectation: np.ndarray
    mean: float
    n_used: int
    seed: int


def certify_confidence(smooth, x, n0: int, n: int, alpha: float, batch_size: int, seed=None,
                       radii=DEFAULT_RADII, measure: str = "score",
                       num_thresholds: int | None = None) -> ConfidenceCertificate:
    """Certify the expected confidence of ``smooth`` (a fastcert.Smooth with Gaussian noise) at x.

    n0 samples of stream 0 select the class c (most votes, ties to the lower index); n samples of
    stream 5 give the per-sample confidences of c (``measure`` "score" or "margin"), from which
    :func:`confidence_bounds` computes both bounds at ``radii`` with failure probability alpha.
    """
    if not isinstance(getattr(smooth, "noise", None), Gaussian):
        raise ValueError(f"noise: confidence certificates need Gaussian noise, got {getattr(smooth, 'noise', None)!r}")
    _measure_range(measure)
    n0 = check_int("n0", n0, 1)
    n = check_int("n", n, 1)
    alpha = check_alpha(alpha)
    check_int("batch_size", batch_size, 1)
    r = _radii_array(radii)
    m = _num_thresholds(num_thresholds)
    seed = resolve_seed(seed)
    xp = smooth._prepare_x(x)
    counts0, _ = smooth.sample_counts(xp, n0, batch_size, seed, STREAM_SELECT)
    c = int(np.argmax(counts0))
    _, values = smooth.sample_counts(xp, n, batch_size, seed, STREAM_CONFIDENCE, cls=c, measure=measure)
    cdf, exp = confidence_bounds(values, smooth.noise.sigma, r, alpha, measure=measure, num_thresholds=m)
    at0 = np.flatnonzero(r == 0.0)
    if at0.size:
        cdf0 = float(cdf[at0[0]])
    else:  # the abstention rule needs the bound at R = 0
        cdf0 = float(confidence_bounds(values, smooth.noise.sigma, [0.0], alpha, measure=measure,
                                       num_thresholds=m)[0][0])
    pred = c if cdf0 > ABSTAIN_CUTOFF[measure] else -1
    return ConfidenceCertificate(pred, c, measure, r, cdf, exp, float(np.mean(values, dtype=np.float64)), n0 + n,
                                 seed)


# ---------------------------------------------------------------------------------------- logs
def confidence_columns(radii=DEFAULT_RADII) -> list[str]:
    """['exp_cdf_XX' for each R] + ['exp_XX' for each R], XX = R * 100 as in Kumar et al.'s logs."""
    r = _radii_array(radii)
    tags = [radius_tag(x) for x in r]
    if len(set(tags)) != len(tags):
        raise ValueError(f"radii must be distinct (after rounding to 1e-9), got {list(r)}")
    return [f"exp_cdf_{t}" for t in tags] + [f"exp_{t}" for t in tags]


def kumar_log_columns(radii=DEFAULT_RADII) -> list[str]:
    """The authors' full header: idx label predict exp_cdf_XX... exp_XX... correct time."""
    return ["idx", "label", "predict"] + confidence_columns(radii) + ["correct", "time"]


def confidence_values(cert: ConfidenceCertificate) -> dict:
    """{column: text} for the confidence_columns of cert.radii, each bound rounded DOWN (6 decimals)."""
    cols = confidence_columns(cert.radii)
    vals = list(cert.cdf) + list(cert.expectation)
    return {c: floor_str(float(v)) for c, v in zip(cols, vals)}


def certified_accuracy_at_confidence(rows, radius: float, threshold: float, method: str = "cdf",
                                     inclusive: bool = False) -> float:
    """Fraction of logged points that are correct and whose ``method`` ("cdf" or "exp") bound at
    ``radius`` is above ``threshold`` (strictly, as the authors' cert_acc.py; ``inclusive=True``:
    >=). ``rows``: a ConfidenceLog or a path to a log. ``radius`` must be one of the log's radii."""
    log = rows if isinstance(rows, ConfidenceLog) else read_kumar_log(rows)
    if method not in ("cdf", "exp"):
        raise ValueError(f"method must be 'cdf' or 'exp', got {method!r}")
    try:
        rad = float(radius)
        thr = float(threshold)
    except (TypeError, ValueError):
        raise TypeError("radius and threshold must be numbers") from None
    if not math.isfinite(thr):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    hit = np.flatnonzero(np.abs(log.radii - rad) < 1e-9)
    if hit.size == 0:
        raise ValueError(f"radius {radius!r} is not in the log (radii: {', '.join(f'{r:g}' for r in log.radii)})")
    if len(log) == 0:
        return 0.0
    b = (log.cdf if method == "cdf" else log.exp)[:, hit[0]]
    above = b >= thr if inclusive else b > thr
    return float(np.sum((log.correct == 1) & above)) / len(log)
