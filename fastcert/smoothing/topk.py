"""Certified top-k predictions (Jia, Cao, Wang & Gong 2020, "Certified Robustness for Top-k
Predictions against Adversarial Perturbations via Randomized Smoothing", ICLR 2020).

Question answered: within which radius R does a given label l stay among the k most probable
classes of the smoothed classifier g(x) = argmax_c P(f(x + noise) = c)?

Theorem (Gaussian noise N(0, sigma^2 I), l2; Jia et al. 2020, Theorem 1). Let p_l <= P(f(x+e) = l)
and, for every other class j, P(f(x+e) = j) <= pbar_j. Sort the other classes by upper bound,
pbar_b1 >= pbar_b2 >= ..., and let S_t = {b_{k-t+1}, ..., b_k} be the t smallest of the k largest
(t = 1..k), pbar(S_t) = min(sum of their upper bounds, 1 - p_l). Then l is in the top-k of g(x+d)
for every ||d||_2 < R, where R is the largest radius with

    Phi(Phi^{-1}(p_l) - R/sigma)  >=  min_{t=1..k}  Phi(Phi^{-1}(pbar(S_t)) + R/sigma) / t.

Why: an adversary must lift k other classes above l. For any t of them (a set S), the union of
their decision regions has probability <= pbar(S) at x (at most the sum of their bounds, and at
most 1 - p_l since S excludes l), hence <= Phi(Phi^{-1}(pbar(S)) + R/sigma) at x + d
(Neyman-Pearson for a half-space), so their smallest probability is at most that over t;
while l keeps at least Phi(Phi^{-1}(p_l) - R/sigma). The most dangerous k classes are those with
the largest upper bounds, and for each t the best witness S is the t smallest of them. The left side
decreases in R and each term on the right increases, so R = max_t R_t with R_t the crossing point
of term t: R_1 = sigma/2 (Phi^{-1}(p_l) - Phi^{-1}(pbar_bk)) in closed form, R_t (t >= 2) by
bisection (the returned value always satisfies the strict inequality, so it never overshoots).

The cap 1 - p_l (Jia et al.'s step: their code clips every upper bound, and each witness sum, at
1 - p_l). It is sound: the classes of S are disjoint from l, so P(S) <= 1 - P(l) <= 1 - p_l whenever
the lower bound p_l holds, and the radius is only claimed on the event that all bounds hold. A cap at
1 alone (fastcert before issue 17) is also sound but looser: on Jia et al.'s CIFAR-10 counts
(sigma = 0.25, alpha = 0.001) it gave 365 of the 1,500 top-3/top-5 radii 0.9% (median) to 1.5%
smaller than theirs. The cap never binds for t = 1 with Clopper-Pearson bounds (pbar_b1 <= 1 - p_l,
see below), which is why k = 1 always agreed; it binds for t >= 2 when the label holds nearly all
samples and several other classes share a few, where the sum of their upper bounds exceeds 1 - p_l.

Confidence (Jia et al.'s simultaneous intervals): from the counts of n samples, p_l is the
one-sided Clopper-Pearson lower bound of n_l at level alpha/C and every pbar_j the one-sided
Clopper-Pearson upper bound of n_j at level alpha/C (C = number of classes, Bonferroni over the C
one-sided statements), so all bounds hold together with probability >= 1 - alpha and the radius is
valid with probability >= 1 - alpha.

Relation to the ordinary certificate (k = 1). Then R = sigma/2 (Phi^{-1}(p_l) - Phi^{-1}(pbar_b1)).
Because the Clopper-Pearson upper bound grows with the count and CP_upper(n - n_l) = 1 - CP_lower(n_l)
at the same level, pbar_b1 <= 1 - p_l and therefore
    R(k=1, alpha) >= sigma * Phi^{-1}(CP_lower(n_l, n, alpha / C)),
i.e. at least Cohen et al.'s radius computed at confidence level alpha/C, with equality exactly when
all samples not in l fall into one other class (always so when C = 2). For C = 2, certify_topk(k=1,
alpha) therefore equals Smooth.certify(alpha / 2) on the same samples.

Laplace noise (density exp(-|t|/b) / (2b) per coordinate), l1: the same construction with the
likelihood-ratio bounds of Teng, Lee & Yuan 2020. For ||d||_1 <= r, the density ratio between the
noise shifted by d and the unshifted noise lies in [e^{-r/b}, e^{r/b}] everywhere (triangle
inequality per coordinate). Hence, with eps = r / b, for any set A of probability p at x,
    P_{x+d}(A) >= max(e^{-eps} p, 1 - e^{eps} (1 - p)),   P_{x+d}(A) <= min(e^{eps} p, 1 - e^{-eps} (1 - p)),
in every dimension and for every direction of d. Using these in place of the Gaussian functions
gives a SOUND but possibly conservative top-k l1 radius (the exact worst case of the l1 ball
for Laplace noise is not used); each of the four crossings (lower piece x upper piece) has a
closed form and R = b * max over t and pieces. The witness sums are capped at 1 - p_l as for
Gaussian noise: that step is about the probabilities at x, not about the noise, so it is sound
here too (and, both bound functions being increasing in the set's probability, it can only raise
the radius). For k = 1 and pbar = 1 - p_l it reduces to Teng et al.'s -b log(2 (1 - p_l)); for any
pbar_b1 <= 1 - p_l it equals the larger of Teng et al.'s two terms b/2 log(p_l / pbar_b1) and
-b log(1 - p_l + pbar_b1) (their Theorem 1; the other two crossings never exceed these for t = 1).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, ndtri

from fastcert.rng import resolve_seed
from fastcert.smoothing.certificate import ABSTAIN, STREAM_ESTIMATE, STREAM_SELECT, Certificate
from fastcert.smoothing.noise import Gaussian, Laplace
from fastcert.stats import clopper_pearson_lower, clopper_pearson_upper
from fastcert.validate import check_alpha, check_choice, check_float, check_int, check_positive

__all__ = [
    "topk_radius",
    "topk_radius_laplace",
    "topk_radius_from_bounds",
    "simultaneous_bounds",
    "topk_radii",
    "certify_topk",
    "topk_certified_accuracy",
]

_NOISE_KINDS = ("gaussian", "laplace")
_BISECT_STEPS = 2200  # cap only: a bracket reaches adjacent doubles in < 1100 halvings


# ---------------------------------------------------------------------------------------- validation
def _check_counts_matrix(counts, name="counts") -> np.ndarray:
    """(N, C) non-negative integer counts, C >= 2, every row summing to >= 1."""
    arr = np.asarray(counts)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, num_classes), got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes, got {arr.shape[1]}")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0")
    if np.any(arr.sum(axis=1) < 1):
        raise ValueError(f"{name}: every row needs at least one sample")
    return arr


def _check_labels(labels, n_rows: int, n_classes: int, name="labels") -> np.ndarray:
    lab = np.asarray(labels)
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64).reshape(-1)
    if lab.shape[0] != n_rows:
        raise ValueError(f"{name} must have {n_rows} entries, got {lab.shape[0]}")
    if np.any(lab < 0) or np.any(lab >= n_classes):
        raise ValueError(f"{name} must be class indices in [0, {n_classes})")
    return lab


def _check_row(counts, label):
    """One row of counts (C,) and its label -> ((1, C) int64, (1,) int64)."""
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise ValueError(f"counts must be 1-D (num_classes,), got shape {arr.shape}")
    cm = _check_counts_matrix(arr[None, :])
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise TypeError(f"label must be an integer class index, got {label!r}")
    return cm, _check_labels(np.array([label]), 1, cm.shape[1], "label")


# ---------------------------------------------------------------------------------------- bounds
def _simultaneous(counts: np.ndarray, labels: np.ndarray, alpha: float):
    """p_lower (N,) of the labels and p_upper (N, C) of every class, each one-sided at alpha / C."""
    n_rows, n_classes = counts.shape
    a = alpha / n_classes
    n = counts.sum(axis=1)
    p_low = clopper_pearson_lower(counts[np.arange(n_rows), labels], n, a)
    p_up = clopper_pearson_upper(counts, n[:, None], a)
    return p_low, p_up


def simultaneous_bounds(counts, label: int, alpha: float) -> tuple[float, np.ndarray]:
    """Jia et al.'s simultaneous confidence bounds from one row of per-class counts.

    Returns (p_lower, p_upper): the one-sided Clopper-Pearson lower bound on P(f = label) and the
    one-sided upper bounds on every class probability (array (C,); the entry of ``label`` is its
    upper bound too, unused by the theorem), each at level alpha / C, so that the lower bound of
    ``label`` and the upper bounds of the C - 1 other classes hold together with probability >= 1 - alpha.
    """
    cm, lab = _check_row(counts, label)
    alpha = check_alpha(alpha)
    p_low, p_up = _simultaneous(cm, lab, alpha)
    return float(p_low[0]), p_up[0]


# ---------------------------------------------------------------------------------------- radius core
def _top_others(p_up: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N, k) the k largest upper bounds among the classes other than the label, descending."""
    n_rows, n_classes = p_up.shape
    others = p_up.copy()
    others[np.arange(n_rows), labels] = -np.inf
    srt = -np.sort(-others, axis=1)
    return srt[:, :k]


def _witness_sums(top: np.ndarray, p_low: np.ndarray) -> np.ndarray:
    """(N, k): column t-1 holds pbar(S_t) = sum of the t smallest of the k largest bounds, capped at
    1 - p_low (N,): the witnesses exclude the label, so P(S_t) <= 1 - P(label) <= 1 - p_low on the
    event that the bounds hold (Jia et al.'s clip; see the module docstring)."""
    rev = np.cumsum(top[:, ::-1], axis=1)  # rev[:, t-1] = sum of the last t columns
    return np.minimum(rev, 1.0 - np.asarray(p_low, dtype=np.float64)[:, None])


def _gaussian_radius_core(p_low: np.ndarray, q: np.ndarray, sigma: float) -> np.ndarray:
    """Jia et al.'s l2 radius from p_low (N,) and witness sums q (N, k) (column t-1 <-> t)."""
    n_rows, k = q.shape
    with np.errstate(divide="ignore"):
        a = np.repeat(ndtri(p_low)[:, None], k, axis=1)  # -inf when p_low = 0
        b = ndtri(q)  # +inf when q = 1 (only when p_low = 0: q <= 1 - p_low), -inf when q = 0
    logt = np.log(np.arange(1, k + 1, dtype=np.float64))[None, :]

    def margin(r):  # > 0 <=> term t certifies radius r; log scale keeps the tails accurate
        return log_ndtr(a - r / sigma) - log_ndtr(b + r / sigma) + logt

    zero = np.zeros((n_rows, k))
    active = margin(zero) > 0
    rad = zero.copy()
    # t = 1: closed form (mirror-image terms cross halfway between the two quantiles).
    with np.errstate(invalid="ignore"):
        rad[:, 0] = np.where(active[:, 0], sigma * (a[:, 0] - b[:, 0]) / 2.0, 0.0)
    # a zero-probability witness set stays at probability zero under any shift
    never = active & np.isneginf(b)
    rad[never] = math.inf
    act = active.copy()
    act[:, 0] = False
    act &= ~never
    if act.any():
        lo = np.zeros((n_rows, k))
        hi = np.where(act, sigma * (np.abs(np.where(act, a, 0.0)) + 1.0), 0.0)
        for _ in range(2000):  # grow hi until the inequality fails there (it does: lhs -> 0)
            grow = act & (margin(hi) > 0)
            if not grow.any():
                break
            hi = np.where(grow, 2.0 * hi, hi)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            moving = act & (mid != lo) & (mid != hi)
            if not moving.any():  # every bracket is down to adjacent doubles; stopping only then keeps
                break  # each element's result independent of the others in the batch
            good = margin(mid) > 0
            lo = np.where(moving & good, mid, lo)
            hi = np.where(moving & ~good, mid, hi)
        rad = np.where(act, lo, rad)  # lo always satisfies the strict inequality
    return rad.max(axis=1)


def _laplace_radius_core(p_low: np.ndarray, q: np.ndarray, scale: float) -> np.ndarray:
    """l1 radius for Laplace noise from the likelihood-ratio bounds (see the module docstring).

    Lower bound of the label at eps = r/b: L1 = e^{-eps} p, L2 = 1 - e^{eps}(1-p).
    Upper bound of S_t: U1 = e^{eps} q, U2 = 1 - e^{-eps}(1-q), with q <= 1 - p (the cap). Term t
    certifies r iff max_i L_i > min_j U_j / t, i.e. iff some pair has L_i > U_j / t; each L_i falls
    and each U_j rises with eps, so each pair holds on [0, crossing) and the union on [0, max):
      L1 vs U1: eps < 1/2 log(t p / q)
      L1 vs U2: eps < log(t p + 1 - q)
      L2 vs U1: eps < log(t / (t (1-p) + q))
      L2 vs U2: eps < log(y+),  y+ the positive root of t(1-p) y^2 - (t-1) y - (1-q).
    """
    n_rows, k = q.shape
    p = p_low[:, None] * np.ones((1, k))
    t = np.arange(1, k + 1, dtype=np.float64)[None, :] * np.ones((n_rows, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        e11 = 0.5 * np.log(t * p / q)
        e12 = np.log(t * p + 1.0 - q)
        e21 = np.log(t / (t * (1.0 - p) + q))
        a2 = t * (1.0 - p)
        disc = (t - 1.0) ** 2 + 4.0 * a2 * (1.0 - q)
        yplus = ((t - 1.0) + np.sqrt(disc)) / (2.0 * a2)
        e22 = np.log(yplus)
    eps = np.stack([e11, e12, e21, e22], axis=0)
    eps = np.where(np.isnan(eps), -np.inf, eps)
    best = eps.max(axis=0).max(axis=1)
    return np.where(best > 0, scale * best, 0.0)


def _radius_from_bounds(p_low, top, noise, scale):
    """Shared by every entry point: p_low (N,), top (N, k) descending upper bounds of the others."""
    q = _witness_sums(top, p_low)
    if noise == "gaussian":
        return _gaussian_radius_core(p_low, q, scale)
    return _laplace_radius_core(p_low, q, scale)


def _radii_from_counts(counts: np.ndarray, labels: np.ndarray, k: int, scale: float, alpha: float,
                       noise: str) -> np.ndarray:
    n_rows, n_classes = counts.shape
    if k >= n_classes:  # fewer than k other classes: the label is always among the top k
        return np.full(n_rows, math.inf)
    p_low, p_up = _simultaneous(counts, labels, alpha)
    top = _top_others(p_up, labels, k)
    return _radius_from_bounds(p_low, top, noise, scale)


# ---------------------------------------------------------------------------------------- public
def topk_radius_from_bounds(p_lower: float, p_upper_others, k: int, scale: float, noise: str = "gaussian") -> float:
    """The certified radius of the theorem from given probability bounds (no statistics).

    p_lower: lower bound on the label's probability; p_upper_others: upper bounds on the
    probabilities of the other classes (any order); scale: sigma (Gaussian, l2 radius) or the
    Laplace scale b (l1 radius). Returns 0.0 when nothing is certified, inf when fewer than k other
    classes exist. The radius is valid whenever all the given bounds hold; the summed upper bounds of
    a witness set are capped at 1 - p_lower (the other classes share at most the label's complement).
    """
    k = check_int("k", k, 1)
    scale = check_positive("scale", scale)
    noise = check_choice("noise", noise, _NOISE_KINDS)
    pl = check_float("p_lower", p_lower, 0.0, 1.0, lo_open=False, hi_open=False)
    pu = np.asarray(p_upper_others, dtype=np.float64).reshape(-1)
    if pu.size == 0 or k > pu.size:
        return math.inf
    if np.any(~np.isfinite(pu)) or np.any(pu < 0) or np.any(pu > 1):
        raise ValueError("p_upper_others must lie in [0, 1]")
    if pl >= 1.0:
        return math.inf
    top = -np.sort(-pu)[:k][None, :]
    return float(_radius_from_bounds(np.array([pl]), top, noise, scale)[0])


def topk_radius(counts, label: int, k: int, sigma: float, alpha: float) -> float:
    """l2 radius within which ``label`` stays in the top-k of the Gaussian-smoothed classifier.

    counts: per-class counts (C,) of n samples of f(x + N(0, sigma^2 I)) (integers); label: class
    index; alpha: total failure probability, split as alpha / C over Jia et al.'s simultaneous
    Clopper-Pearson bounds. With probability >= 1 - alpha over the samples, ``label`` is among the
    k most probable classes of the smoothed classifier at every x + d with ||d||_2 < radius.
    Returns 0.0 when nothing is certified and inf when k >= C.
    """
    return _topk_one(counts, label, k, sigma, alpha, "gaussian", "sigma")


def topk_radius_laplace(counts, label: int, k: int, scale: float, alpha: float) -> float:
    """l1 radius within which ``label`` stays in the top-k of the Laplace-smoothed classifier
    (noise density exp(-|t|/scale)/(2 scale) per coordinate). Same statistics as
    :func:`topk_radius`; the bound is the likelihood-ratio construction of the module docstring
    (sound; possibly conservative, exact Teng et al. radius for k = 1 when pbar = 1 - p_l)."""
    return _topk_one(counts, label, k, scale, alpha, "laplace", "scale")


def _topk_one(counts, label, k, scale, alpha, noise, scale_name):
    cm, lab = _check_row(counts, label)
    k = check_int("k", k, 1)
    scale = check_positive(scale_name, scale)
    alpha = check_alpha(alpha)
    return float(_radii_from_counts(cm, lab, k, scale, alpha, noise)[0])


def topk_radii(counts, labels, k: int, sigma: float, alpha: float, noise: str = "gaussian") -> np.ndarray:
    """Vectorised :func:`topk_radius` / :func:`topk_radius_laplace` over rows: counts (N, C),
    labels (N,) -> radii (N,) float64 (0 = not certified, inf when k >= C)."""
    noise = check_choice("noise", noise, _NOISE_KINDS)
    cm = _check_counts_matrix(counts)
    lab = _check_labels(labels, cm.shape[0], cm.shape[1])
    k = check_int("k", k, 1)
    sigma = check_positive("sigma" if noise == "gaussian" else "scale", sigma)
    alpha = check_alpha(alpha)
    return _radii_from_counts(cm, lab, k, sigma, alpha, noise)


def certify_topk(smooth, x, k: int, n0: int, n: int, alpha: float, batch_size: int, seed=None):
    """Top-k CERTIFY for a fastcert.Smooth with Gaussian (l2) or Laplace (l1) noise.

    1. n0 samples on stream 0 select the k most frequent classes (ties: lower class index first);
    2. n fresh samples on stream 1 give the per-class counts;
    3. for every selected class c, ``topk_radius`` (or the Laplace version) of c at level alpha.

    Returns a Certificate with ``prediction`` the tuple of the k selected classes (most frequent
    first), or -1 (abstain) when the first of them is not certified to stay in the top k;
    ``radius`` the radius of the first selected class (within which, with probability >= 1 - alpha,
    it stays among the k most probable classes); ``radii`` that radius in every norm
    (``Noise.derived_radii``: the norm inequalities of fastcert.smoothing.noise, l0 capped at the input
    dimension); ``counts`` the n estimation counts; ``p_lower`` the
    simultaneous (alpha / C) lower bound of the first class; ``n_used`` = n0 + n.
    ``extra["class_radii"]`` maps every selected class to its own radius (each valid at level alpha
    on its own, as for a label fixed in advance; use the entry of the true label for certified top-k
    accuracy); ``extra["p_upper"]`` holds the simultaneous upper bounds of all classes.
    For k = 1 and two classes this equals ``smooth.certify(alpha=alpha / 2)``; see the module docstring.
    """
    if isinstance(smooth.noise, Gaussian):
        noise_kind, scale = "gaussian", smooth.noise.sigma
    elif isinstance(smooth.noise, Laplace):
        noise_kind, scale = "laplace", smooth.noise.scale
    else:
        raise ValueError(f"noise: top-k certification supports Gaussian (l2) and Laplace (l1) noise, "
                         f"got {smooth.noise!r}")
    k = check_int("k", k, 1)
    if k > smooth.num_classes:
        raise ValueError(f"k must be <= num_classes={smooth.num_classes}, got {k}")
    n0 = check_int("n0", n0, 1)
    n = check_int("n", n, 1)
    alpha = check_alpha(alpha)
    check_int("batch_size", batch_size, 1)
    seed = resolve_seed(seed)
    xt = smooth._prepare_x(x)
    counts0, _ = smooth.sample_counts(xt, n0, batch_size, seed, STREAM_SELECT)
    selected = tuple(int(c) for c in np.argsort(-counts0, kind="stable")[:k])
    counts, _ = smooth.sample_counts(xt, n, batch_size, seed, STREAM_ESTIMATE)
    counts = np.asarray(counts, dtype=np.int64)
    C = counts.shape[0]
    labels = np.array(selected, dtype=np.int64)
    rows = np.repeat(counts[None, :], k, axis=0)
    class_radii_arr = _radii_from_counts(rows, labels, k, scale, alpha, noise_kind)
    p_low, p_up = _simultaneous(counts[None, :], labels[:1], alpha)
    class_radii = {c: float(r) for c, r in zip(selected, class_radii_arr)}
    r0 = class_radii[selected[0]]
    d = int(xt.numel())
    if r0 > 0:
        pred, radius = selected, r0
    else:
        pred, radius = ABSTAIN, 0.0
    cert = Certificate(pred, radius, smooth.noise.derived_radii(radius, d), counts, float(p_low[0]), n0 + n,
                       seed=seed)
    cert.extra.update({"k": k, "selected": selected, "class_radii": class_radii, "p_upper": p_up[0],
                       "alpha_per_bound": alpha / C, "norm": smooth.noise.norm})
    return cert


# ---------------------------------------------------------------------------------------- logs
def topk_certified_accuracy(counts, labels, k: int, sigma: float, alpha: float, radii,
                            noise: str = "gaussian") -> np.ndarray:
    """Certified top-k accuracy at each radius r in ``radii``: the fraction of rows whose true label
    is certified to stay in the top k with radius R > 0 and R >= r (Jia et al.'s metric).
    counts (N, C), labels (N,) as from :func:`read_counts_file`; returns float64 (len(radii),)."""
    rs = np.atleast_1d(np.asarray(radii, dtype=np.float64))
    if rs.ndim != 1 or rs.size == 0:
        raise ValueError("radii must be a non-empty list of numbers")
    if np.any(~np.isfinite(rs)) or np.any(rs < 0):
        raise ValueError("radii must be finite and >= 0")
    rad = topk_radii(counts, labels, k, sigma, alpha, noise)
    cert = (rad[None, :] > 0) & (rad[None, :] >= rs[:, None])
    return cert.mean(axis=1)
