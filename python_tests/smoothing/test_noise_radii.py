"""Radius formulas of fastcert/noise.py against independent computations, and their soundness.

Oracle: a half-space base classifier f(z) = 0 if w.z < tau else 1. For noise whose projection w.e
is symmetric with a positive density at 0 (Gaussian, Laplace, uniform), the smoothed classifier is
the same half-space, so its true robustness radius in a norm is the distance to the hyperplane:
gap / ||w||_dual (dual of l1 is linf, of l2 is l2, of linf is l1), and on the [0, 1] box (the
assumption of the derived l0 / Gaussian-l1 radii) a small knapsack problem. Its smoothed top-class
probability is a one-dimensional CDF (scipy), or a one-dimensional integral for oblique directions.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testing import halfspace_model
from scipy import integrate
from scipy.optimize import brentq
from scipy.stats import laplace as sp_laplace
from scipy.stats import norm as sp_norm

from fastcert.smoothing.noise import Discrete, Gaussian, Laplace, Uniform
from fastcert.smoothing.smooth import Smooth
from fastcert.stats import clopper_pearson_lower


# ------------------------------------------------------------------------------------ oracles
def true_radii(x, w, tau):
    """Exact robustness radii of the half-space {w.z < tau} at x (class 0 side).
    Unconstrained l1/l2/linf distances, and box-constrained ([0,1]^d) l1 and l0 (the l0 value is the
    largest number of coordinates that can be changed without ever crossing)."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    gap = tau - w @ x
    assert gap > 0
    out = {"l1": gap / np.max(np.abs(w)), "l2": gap / np.linalg.norm(w), "linf": gap / np.sum(np.abs(w))}
    room = np.where(w > 0, 1 - x, x)  # how far each coordinate may move towards the hyperplane
    gain = np.abs(w) * room
    # box l1: fractional knapsack, cheapest gain first (largest |w_i|)
    need, cost = gap, 0.0
    for i in np.argsort(-np.abs(w)):
        if need <= 0 or w[i] == 0:
            break
        take = min(room[i], need / abs(w[i]))
        cost += take
        need -= take * abs(w[i])
    out["l1_box"] = cost if need <= 1e-15 else math.inf
    cum = np.cumsum(np.sort(gain)[::-1])
    out["l0_box"] = int(np.sum(cum < gap))  # j coordinates are safe iff the j best gains stay below gap
    return out


# ------------------------------------------------------------------------------------ formulas vs scipy
@pytest.mark.parametrize("sigma", [0.12, 0.5, 1.0])
def test_gaussian_l2_equals_halfspace_distance(sigma):
    """sigma Phi^-1(p) is the distance at which a half-space of probability p drops to 1/2."""
    for gap in (0.01, 0.2, 0.7, 2.0):
        if gap / sigma > 8:  # Phi(8) is already 1 - 6e-16: p would round to 1
            continue
        p = sp_norm.cdf(gap / sigma)
        assert Gaussian(sigma).radius(p) == pytest.approx(gap, rel=1e-9)
        # independent root: shift s where the probability of the shifted half-space is 1/2
        s = brentq(lambda v: sp_norm.cdf((gap - v) / sigma) - 0.5, 0, 10 * gap + 10)
        assert Gaussian(sigma).radius(p) == pytest.approx(s, rel=1e-9)
    assert Gaussian(sigma).radius(0.5) == 0.0 and Gaussian(sigma).radius(0.3) == 0.0


@pytest.mark.parametrize("b", [0.25, 0.5, 1.0])
def test_laplace_l1_equals_axis_halfspace_and_bounds_oblique_ones(b):
    """-b log(2(1-p)) is exact for an axis-aligned half-space and never exceeds the true l1 distance
    of oblique half-spaces (whose probability is a 1-D integral of Laplace densities)."""
    lap = Laplace(b)
    for gap in (0.05, 0.3, 1.0, 2.5):
        p = sp_laplace.cdf(gap, scale=b)
        assert lap.radius(p) == pytest.approx(gap, rel=1e-9)
        for theta in (0.2, 0.5, math.pi / 4):
            w = np.array([math.cos(theta), math.sin(theta)])
            # P(w1 e1 + w2 e2 < gap) = E[F((gap - w1 e1) / w2)]
            f = lambda e: sp_laplace.pdf(e, scale=b) * sp_laplace.cdf((gap - w[0] * e) / w[1], scale=b)  # noqa: E731
            p_obl = integrate.quad(f, -np.inf, 0)[0] + integrate.quad(f, 0, np.inf)[0]
            true_l1 = gap / np.max(np.abs(w))
            assert lap.radius(p_obl) <= true_l1 * (1 + 1e-9)
            assert lap.radius(p_obl) > 0.3 * true_l1  # still informative


@pytest.mark.parametrize("width", [0.25, 0.75, 2.0])
def test_uniform_l1_equals_axis_halfspace(width):
    u = Uniform(width)
    for frac in (0.05, 0.4, 0.9):
        gap = frac * width
        p = (gap + width) / (2 * width)  # P(e_1 < gap), e_1 ~ U[-width, width]
        assert u.radius(p) == pytest.approx(gap, rel=1e-12)


def _tv_monte_carlo(delta, width, rng, m=400_000):
    """TV(U, U + delta) for the cube [-width, width]^d: 1 - overlap fraction, by sampling."""
    z = rng.uniform(-width, width, size=(m, len(delta)))
    inside = np.all(np.abs(z - delta) <= width, axis=1)
    return 1.0 - inside.mean()


def test_uniform_linf_radius_from_overlap_volume():
    """The linf radius solves p - TV(R * 1) = 1/2 with TV = 1 - prod(1 - |d_i| / (2 width)); the
    product formula itself is checked against sampled overlap volumes of two cubes."""
    rng = np.random.default_rng(0)
    for width, d in ((0.5, 1), (0.5, 3), (1.0, 2), (0.3, 5)):
        delta = rng.uniform(-width, width, d)
        tv_formula = 1 - np.prod(1 - np.abs(delta) / (2 * width))
        assert _tv_monte_carlo(delta, width, rng) == pytest.approx(tv_formula, abs=4e-3)
        for p in (0.55, 0.8, 0.99):
            def excess(r):  # p - TV(r*1) - 1/2, TV by the overlap-volume product over d coordinates
                return p - (1 - (1 - r / (2 * width)) ** d) - 0.5
            root = brentq(excess, 0, 2 * width)
            assert Uniform(width).linf_radius(p, d) == pytest.approx(root, rel=1e-9)


def test_uniform_l0_radius_brute_force():
    """Largest k such that changing k box coordinates (|d_i| <= 1) keeps p - TV > 1/2, or the
    l1-derived count, whichever is larger."""
    for width in (0.4, 0.75, 1.5, 3.0, 10.0):
        for p in np.linspace(0.51, 0.999, 25):
            best = 0
            for k in range(0, 200):
                tv = 1 - max(1 - 1 / (2 * width), 0.0) ** k if k > 0 else 0.0
                if p - tv > 0.5:
                    best = k
            r1 = 2 * width * (p - 0.5)
            k_l1 = max(k for k in range(0, 200) if k < r1)  # ||d||_1 <= k on the box
            assert Uniform(width).l0_radius(p) == max(best, k_l1), (width, p)


def test_derived_l0_brute_force():
    """Gaussian: largest k with sqrt(k) < R; Laplace: largest k with k < R (box coordinates); never
    more than the d coordinates there are (p = 1 gives an infinite radius: all d)."""
    d = 10
    for sigma in (0.25, 0.5, 1.0, 2.0):
        ps = np.concatenate([np.linspace(0.51, 0.9999, 40), sp_norm.cdf(np.sqrt([1, 2, 4, 9]) / sigma), [1.0]])
        for p in ps:
            # the radius is first moved down by its rounding allowance (1e-9 relative): at the exact
            # thresholds p = Phi(sqrt(k) / sigma) included here, sqrt(k) is a tie and k is not certified
            r = Gaussian(sigma).radius(p) * (1 - 1e-9)
            assert Gaussian(sigma).radii(p, d)["l0"] == min(d, max((k for k in range(0, 100) if math.sqrt(k) < r),
                                                                   default=0))
            rl = Laplace(sigma).radius(p) * (1 - 1e-9)
            assert Laplace(sigma).radii(p, d)["l0"] == min(d, max((k for k in range(0, 100) if k < rl), default=0))


def test_discrete_derived_radii_brute_force_on_grid():
    """On the grid {0, 1/K, ..., 1}^d, every grid point within the derived l1 / l2 / linf radius of
    a certified l0 radius r differs from x in at most r coordinates."""
    K, d = 2, 4

    class FixedR(Discrete):
        def __init__(self, r):
            super().__init__(0.8, K)
            self._r = r

        def radius(self, p, d=None):
            return self._r if float(p) > 0.5 else 0

    rng = np.random.default_rng(1)
    pts = np.stack(np.meshgrid(*[np.arange(K + 1) / K] * d, indexing="ij"), -1).reshape(-1, d)
    for r in range(0, d + 1):
        radii = FixedR(r).radii(0.9, d)
        for _ in range(5):
            x = pts[rng.integers(len(pts))]
            diff = pts - x
            l0 = np.sum(diff != 0, axis=1)
            for norm, dist in (("l1", np.abs(diff).sum(1)), ("l2", np.sqrt((diff ** 2).sum(1))),
                               ("linf", np.abs(diff).max(1))):
                inside = dist < radii[norm]
                assert np.all(l0[inside] <= r), (r, norm)


# ------------------------------------------------------------------------------------ soundness via Smooth
NOISES = [Gaussian(0.5), Laplace(0.4), Uniform(0.9)]
D = 4
X = np.full(D, 0.5)
# (name, w): an axis-aligned half-space (tight for the own norm of every noise) and an oblique one
CONFIGS = [("axis", np.array([1.0, 0.0, 0.0, 0.0])), ("diag", np.full(D, 0.5))]


def _gap_for(noise, w):
    """Gap giving the smoothed class-0 probability ~0.8 (so radii are neither 0 nor huge)."""
    if isinstance(noise, Gaussian):
        return 0.84 * noise.sigma * np.linalg.norm(w)
    if isinstance(noise, Laplace):
        return 0.92 * noise.scale * np.max(np.abs(w))
    return 0.6 * noise.width * np.max(np.abs(w))


def _own_radius_truth(noise, truth):
    return truth[{"l2": "l2", "l1": "l1"}[noise.norm]]


@pytest.mark.parametrize("noise", NOISES, ids=lambda n: n.name)
def test_smooth_certify_sound_all_norms(noise):
    """Repeated end-to-end certifications (kernel noise, small n): in every norm, the fraction of
    certified radii above the true one stays within alpha (+ binomial tolerance). On the axis
    half-space the own-norm radius is tight, so plugging in the point estimate instead of the
    Clopper-Pearson bound violates far more often: the check has teeth."""
    alpha, n, trials = 0.2, 300, 60
    tol = 3 * math.sqrt(alpha * (1 - alpha) / trials)
    for name, w in CONFIGS:
        gap = _gap_for(noise, w)
        tau = float(w @ X + gap)
        truth = true_radii(X, w, tau)
        sm = Smooth(halfspace_model(w, tau), 2, noise)
        viol = {"l0": 0, "l1": 0, "l2": 0, "linf": 0}
        plugin_viol = 0
        certified = 0
        for s in range(trials):
            cert = sm.certify(torch.tensor(X, dtype=torch.float32), 20, n, alpha, 400, seed=7000 + s)
            if cert.prediction == 1:
                raise AssertionError("certified the wrong class")
            if cert.prediction == -1:
                continue
            certified += 1
            r = cert.radii
            box_l1 = isinstance(noise, Gaussian)  # Gaussian's l1 = max(R, R^2) uses the box
            viol["l1"] += r["l1"] > (truth["l1_box"] if box_l1 else truth["l1"]) * (1 + 1e-9)
            viol["l2"] += r["l2"] > truth["l2"] * (1 + 1e-9)
            viol["linf"] += r["linf"] > truth["linf"] * (1 + 1e-9)
            viol["l0"] += r["l0"] > truth["l0_box"]
            p_hat = cert.counts[0] / n
            plugin_viol += noise.radius(p_hat, D) > _own_radius_truth(noise, truth) * (1 + 1e-9)
        assert certified >= trials // 2, (name, certified)
        for norm, v in viol.items():
            assert v / trials <= alpha + tol, (noise, name, norm, v)
        if name == "axis":
            assert plugin_viol / trials > alpha + tol, (noise, plugin_viol)


@pytest.mark.parametrize("noise", NOISES, ids=lambda n: n.name)
def test_coverage_many_trials_binomial(noise):
    """Same soundness question with many more trials: the base classifier's counts are binomial
    with the exact smoothed probability (1-D CDF of the noise), so trials are cheap."""
    alpha, n, trials = 0.05, 500, 4000
    w = np.array([1.0, 0.0, 0.0, 0.0])
    gap = _gap_for(noise, w)
    if isinstance(noise, Gaussian):
        p = sp_norm.cdf(gap / noise.sigma)
    elif isinstance(noise, Laplace):
        p = sp_laplace.cdf(gap, scale=noise.scale)
    else:
        p = (gap + noise.width) / (2 * noise.width)
    truth = true_radii(X, w, float(w @ X + gap))
    own = _own_radius_truth(noise, truth)
    assert noise.radius(p, D) == pytest.approx(own, rel=1e-9)  # tight at the true probability
    ks = np.random.default_rng(42).binomial(n, p, size=trials)
    cert = np.array([noise.radius(clopper_pearson_lower(int(k), n, alpha), D) for k in ks])
    frac = np.mean(cert > own * (1 + 1e-12))
    assert frac <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert frac > 0.2 * alpha  # near-tight: violations do occur, so the check can fail
