"""Sequential and input-adaptive certification for randomized smoothing.

Two procedures, both reached through ``Smooth.certify(..., sequential=True)``:

``mode="radii"`` (default when target radii are given) decides, for every target radius r, whether
r is certified, drawing estimation samples in rounds on a geometric schedule of looks
n_1 < n_2 < ... < n_K = max_n and stopping as soon as every target is settled.

  Anytime validity (union bound over a fixed schedule of looks). Let cA be the class picked from
  the n0 selection samples (stream 0, independent of everything below) and pA = P(f(x + noise) = cA).
  The estimation samples form one fixed i.i.d. Bernoulli(pA) sequence (stream 3, sample i is
  deterministic given the seed); look k uses its first n_k entries. At look k we compute the
  one-sided Clopper-Pearson lower bound L_k at level a_k, with sum_k a_k = alpha. Each event
  E_k = {L_k > pA} has probability <= a_k (Clopper & Pearson 1934), whatever we do after it, so
  P(some L_k > pA) <= alpha (union bound). On the complement, every bound we ever act on is below pA,
  so every radius declared certified at any look (noise.radius(L_k) >= r) is correct, and so is the
  largest one. The stopping rule only decides which looks are *taken*; the events E_k are defined on
  the whole sequence, so early stopping cannot increase the failure probability. This is the
  "stitching"/union-bound construction of a confidence sequence over a geometric grid (Howard,
  Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Ann. Statist.), specialised to a finite horizon max_n with exact binomial bounds; it is
  not a fixed-n test applied repeatedly (which would spend alpha at every look). One confidence
  sequence for the single quantity pA covers all radii at once, so no split across radii is needed.

  Allocation: the last look (n = max_n, where near-boundary inputs end up) receives
  ``final_share * alpha``; the earlier looks share the rest equally. Inputs far from every threshold
  are decided at an early look, where the smaller level costs only a log factor.

  Futility (declaring "not certifiable"): never affects soundness, since not certifying is always
  correct. A radius r is dropped at look k when the Clopper-Pearson *upper* bound U_k (same level
  a_k) is below k_r / max_n, where k_r is the smallest final-look count that would certify r: even
  at pA = U_k the final look would be expected to fail. This only costs power (with probability
  <= alpha over all looks a truly certifiable-in-expectation radius is dropped).

``mode="adaptive"`` returns the usual output (the largest certified radius) with an input-specific
number of estimation samples, following Input-Specific Sampling (Chen, Li, Yan, Li & Sheng 2022,
"Input-Specific Robustness Certification for Randomized Smoothing", AAAI). The n0 selection samples
double as the pilot: from them we take cA and the plug-in estimate p = k0 / n0, predict the radius
r(n) = noise.radius(CP_lower(round(p n), n, alpha)) that n estimation samples would give, and choose
the smallest n on the grid {first_n * growth^j} U {max_n} with r(max_n) - r(n) <= tol (and the
smallest grid value when the prediction is an abstention). Then n *fresh* samples (stream 3) give
the Clopper-Pearson bound at the full level alpha. Validity: n is a function of the selection
samples only, which are independent of the estimation samples, so conditionally on (cA, n) this is
Cohen et al.'s fixed-n CERTIFY and fails with probability <= alpha; hence unconditionally too.
"""
from __future__ import annotations

import math

import numpy as np

from fastcert.rng import resolve_seed
from fastcert.smoothing.certificate import ABSTAIN, STREAM_SELECT, STREAM_SEQUENTIAL, Certificate
from fastcert.stats import clopper_pearson_lower, clopper_pearson_upper
from fastcert.validate import check_alpha, check_float, check_int, check_radii


MODES = ("radii", "adaptive")


# ---------------------------------------------------------------------------- threshold inversion
def threshold_for_radius(noise, r: float, d: int, tol: float = 1e-12) -> float:
    """Smallest probability p (> 1/2) with ``noise.radius(p, d) >= r``: the lower bound on the
    top-class probability that certifies radius r. Returns a value > 1 when no p <= 1 certifies r.

    Closed forms for Gaussian (Phi(r / sigma)), Laplace (1 - exp(-r / scale) / 2) and Uniform
    (1/2 + r / (2 width)); any other noise by bisection on its (monotone) ``radius``. The returned
    value t satisfies radius(t) >= r up to the bisection tolerance; certification decisions in this
    module are always made by evaluating ``noise.radius`` itself, so t is only used for planning.
    """
    from scipy.stats import norm as _normal

    from fastcert.smoothing.noise import Gaussian, Laplace, Uniform

    r = float(r)
    if r <= 0:
        return 0.5
    if isinstance(noise, Gaussian):
        return float(_normal.cdf(r / noise.sigma))
    if isinstance(noise, Laplace):
        return float(1.0 - 0.5 * math.exp(-r / noise.scale))
    if isinstance(noise, Uniform):
        return 0.5 + r / (2.0 * noise.width)
    if noise.radius(1.0, d) < r:
        return 2.0
    lo, hi = 0.5, 1.0  # radius(lo) < r <= radius(hi)
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if noise.radius(mid, d) >= r:
            hi = mid
        else:
            lo = mid
    return hi


def look_schedule(first_n: int, max_n: int, growth: float) -> list[int]:
    """Geometric look sizes first_n, first_n*growth, ... (rounded up, strictly increasing), ending
    exactly at max_n."""
    looks = []
    n = float(first_n)
    while int(math.ceil(n)) < max_n:
        v = int(math.ceil(n))
        if not looks or v > looks[-1]:
            looks.append(v)
        n *= growth
    looks.append(int(max_n))
    return looks


def look_levels(num_looks: int, alpha: float, final_share: float) -> list[float]:
    """Per-look levels a_k summing to alpha: ``final_share * alpha`` at the last look, the rest split
    equally over the earlier ones (all of alpha at the only look when there is one)."""
    if num_looks == 1:
        return [alpha]
    early = (1.0 - final_share) * alpha / (num_looks - 1)
    return [early] * (num_looks - 1) + [final_share * alpha]


def _min_certifying_count(noise, r: float, n: int, level: float, d: int) -> int:
    """Smallest count k in [0, n] such that CP_lower(k, n, level) certifies radius r (n + 1 if none)."""

    def ok(k):
        if k == 0:
            return False
        p = clopper_pearson_lower(k, n, level)
        return p > 0.5 and noise.radius(p, d) >= r

    if not ok(n):
        return n + 1
    lo, hi = 0, n  # ok(hi), not ok(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _predicted_radius(noise, p_hat: float, n: int, alpha: float, d: int) -> float:
    k = int(round(p_hat * n))
    if k <= 0:
        return 0.0
    p = clopper_pearson_lower(k, n, alpha)
    return float(noise.radius(p, d)) if p > 0.5 else 0.0


# ---------------------------------------------------------------------------- main entry point
def certify_sequential(smooth, x, n0: int, alpha: float, batch_size: int, seed=None, radii=None,
                       max_n: int = 100_000, mode: str | None = None, first_n: int | None = None,
                       growth: float = 2.0, final_share: float = 0.5, tol: float = 0.05):
    """Sequential (``mode="radii"``) or input-adaptive (``mode="adaptive"``) certification of x.

    smooth: a fastcert.Smooth; x: one input (*input_shape). n0: selection samples (stream 0).
    alpha: overall failure probability. max_n: most estimation samples (stream 3).
    radii: target radii (noise norm); required for mode "radii". mode: None -> "radii" when radii
    are given, else "adaptive". first_n (default min(128, max_n)), growth (default 2): the geometric
    grid of looks / candidate sample sizes.
    final_share: share of alpha spent at the last look (mode "radii"). tol: accepted radius decline
    versus max_n samples (mode "adaptive", in the noise's norm).

    Returns a fastcert.Certificate: ``certified`` {float(r): bool} (when radii given), ``n_used``
    (n0 + estimation samples drawn), ``radius`` the largest radius shown certified, ``p_lower`` the
    best valid lower bound, ``counts`` the estimation counts, ``extra`` details (mode, looks, levels).
    See the module docstring for the validity argument of each mode.
    """

    n0 = check_int("n0", n0, 1)
    alpha = check_alpha(alpha)
    batch_size = check_int("batch_size", batch_size, 1)
    max_n = check_int("max_n", max_n, 1)
    first_n = min(128, max_n) if first_n is None else check_int("first_n", first_n, 1)
    if first_n > max_n:
        raise ValueError(f"first_n ({first_n}) must be <= max_n ({max_n})")
    growth = check_float("growth", growth, 1.0, math.inf)
    final_share = check_float("final_share", final_share, 0.0, 1.0)
    tol = check_float("tol", tol, 0.0, math.inf, lo_open=False)
    if mode is None:
        mode = "radii" if radii is not None else "adaptive"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    targets = sorted(set(check_radii(radii))) if radii is not None else None
    if mode == "radii" and targets is None:
        raise ValueError("radii: sequential certification with mode='radii' needs target radii")
    seed = resolve_seed(seed)
    noise = smooth.noise
    xt = smooth._prepare_x(x)
    d = xt.numel()

    counts0, _ = smooth.sample_counts(xt, n0, batch_size, seed, STREAM_SELECT)
    c_a = int(np.argmax(counts0))

    if mode == "adaptive":
        p_hat = float(counts0[c_a]) / n0
        grid = look_schedule(first_n, max_n, growth)
        if p_hat <= 0.5:
            n = grid[0]
        else:
            best = _predicted_radius(noise, p_hat, max_n, alpha, d)
            n = next(m for m in grid if best - _predicted_radius(noise, p_hat, m, alpha, d) <= tol)
        counts, _ = smooth.sample_counts(xt, n, batch_size, seed, STREAM_SEQUENTIAL)
        cert = smooth.certificate_from_counts(c_a, counts, alpha, d, n_used=n0 + n, seed=seed, radii=targets)
        cert.extra.update(mode="adaptive", n_estimation=n, p_hat=p_hat, tol=tol)
        return cert

    looks = look_schedule(first_n, max_n, growth)
    levels = look_levels(len(looks), alpha, final_share)
    # planning: smallest final-look count that certifies each target (for futility)
    need = {r: _min_certifying_count(noise, r, max_n, levels[-1], d) for r in targets}
    status = {r: None for r in targets}  # None = open, True = certified, False = not certifiable
    counts = np.zeros(smooth.num_classes, dtype=np.int64)
    drawn = 0
    best_lower = 0.0
    taken = []
    for n_k, a_k in zip(looks, levels):
        step, _ = smooth.sample_counts(xt, n_k - drawn, batch_size, seed, STREAM_SEQUENTIAL, start=drawn)
        counts += step
        drawn = n_k
        taken.append(n_k)
        k = int(counts[c_a])
        lower = clopper_pearson_lower(k, n_k, a_k)
        best_lower = max(best_lower, lower)
        r_now = float(noise.radius(best_lower, d)) if best_lower > 0.5 else -math.inf
        upper = clopper_pearson_upper(k, n_k, a_k)
        final = n_k == looks[-1]
        for r in targets:
            if status[r] is not None:
                continue
            if best_lower > 0.5 and r_now >= r:
                status[r] = True
            elif final or upper * max_n < need[r]:
                status[r] = False
        if all(s is not None for s in status.values()):
            break

    if best_lower > 0.5:
        pred = c_a
        all_radii = noise.radii(best_lower, d)
        radius = all_radii[noise.norm]
    else:
        pred = ABSTAIN
        zero = 0 if noise.norm == "l0" else 0.0
        radius = zero
        all_radii = {k: (0 if k == "l0" else 0.0) for k in ("l0", "l1", "l2", "linf")}
    cert = Certificate(pred, radius, all_radii, counts, float(best_lower), int(n0 + drawn),
                       certified={float(r): bool(status[r] or (pred != ABSTAIN and radius >= r))
                                  for r in targets}, seed=seed)
    cert.extra.update(mode="radii", looks=taken, levels=levels[:len(taken)], schedule=looks,
                      n_estimation=drawn)
    return cert
