"""Derived-norm radii of fastcert.smoothing.noise against an independent truth (issue 17, 2.5).

The radii a noise certifies outside its own norm are derived from norm inequalities. Two of them
hold only for perturbations inside the [0, 1] input box (each |delta_i| <= 1):

* Gaussian l1 = max(R, R^2), R the l2 radius: ||delta||_2^2 <= ||delta||_1 needs |delta_i| <= 1;
* Gaussian l0 = largest k with sqrt(k) < R (and Laplace l0 = largest k with k < R): k changed
  coordinates move at most sqrt(k) in l2 (k in l1) only if each moves by at most 1.

The truth here does not restate those formulas. The base classifier is a half-space {w.z < tau}
(class 0) and the noise is Gaussian (or Laplace in 2-D), so the smoothed classifier is the same
half-space and its class-0 probability at x is known exactly (Phi(gap / (sigma ||w||_2)), or a 1-D
integral for Laplace). The true robustness radius is then a geometric quantity computed directly:
the smallest l1 norm of a box-feasible delta reaching the hyperplane (a linear program, scipy's
linprog), the fewest coordinates that can reach it (every subset of coordinates, brute force), or
the unconstrained distance. Each test states the threat model (box or not) it checks, and the
constructed worst cases show the derived radii are tight in the box and wrong outside it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.optimize import linprog
from scipy.stats import laplace as sp_laplace
from scipy.stats import norm as sp_norm
from testing import halfspace_model

from fastcert.smoothing.noise import Gaussian, Laplace
from fastcert.smoothing.smooth import Smooth


# ------------------------------------------------------------------------------------ oracles
def box_l1_truth(x, w, tau) -> float:
    """min ||delta||_1 over delta with w.(x + delta) >= tau and x + delta in [0, 1]^d (linprog on
    (delta, t) with -t <= delta <= t); inf when the box never reaches the hyperplane."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    d = len(x)
    c = np.concatenate([np.zeros(d), np.ones(d)])
    eye = np.eye(d)
    a_ub = np.vstack([np.concatenate([-w, np.zeros(d)])[None, :],  # -w.delta <= w.x - tau
                      np.hstack([eye, -eye]), np.hstack([-eye, -eye])])  # |delta_i| <= t_i
    b_ub = np.concatenate([[w @ x - tau], np.zeros(2 * d)])
    bounds = [(-xi, 1 - xi) for xi in x] + [(0, None)] * d
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status == 2:  # infeasible: the hyperplane is outside the box
        return math.inf
    assert res.status == 0, res.message
    return float(res.fun)


def box_l0_truth(x, w, tau) -> float:
    """Largest r such that NO choice of r coordinates, each moved anywhere in [0, 1], reaches
    w.z >= tau (every subset enumerated; inf when even all d coordinates cannot)."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    d = len(x)
    best_reach = np.full(d + 1, -np.inf)  # best_reach[j]: largest w.z reachable changing j coordinates
    for j in range(d + 1):
        for subset in itertools.combinations(range(d), j):
            z = x.copy()
            for i in subset:
                z[i] = 1.0 if w[i] > 0 else 0.0
            best_reach[j] = max(best_reach[j], float(w @ z))
    reach = np.flatnonzero(best_reach >= tau)
    return math.inf if reach.size == 0 else int(reach[0]) - 1


def gaussian_p(x, w, tau, sigma) -> float:
    """Exact smoothed probability of class 0 = {w.z < tau} under N(0, sigma^2 I)."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    return float(sp_norm.cdf((tau - w @ x) / (sigma * np.linalg.norm(w))))


def laplace_p_2d(gap, w, b) -> float:
    """P(w1 e1 + w2 e2 < gap), e_i i.i.d. Laplace(b), w2 > 0: a 1-D integral."""
    f = lambda e: sp_laplace.pdf(e, scale=b) * sp_laplace.cdf((gap - w[0] * e) / w[1], scale=b)  # noqa: E731
    return integrate.quad(f, -np.inf, 0)[0] + integrate.quad(f, 0, np.inf)[0]


def _random_halfspaces(rng, d, count, sigma):
    """(x, w, tau) with x in the box and the hyperplane crossing the box, l2 distances spread over
    (0.2, ~2.5) so that both branches (R <= 1 and R > 1) occur."""
    out = []
    while len(out) < count:
        w = rng.normal(size=d)
        if rng.random() < 0.5:
            w = np.abs(w)  # all coordinates push the same way: long box distances
        x = rng.random(d) * rng.random(d)
        reach = float(np.sum(np.where(w > 0, w * (1 - x), -w * x)))  # largest w.delta in the box
        gap = reach * rng.uniform(0.2, 0.999)
        r2 = gap / np.linalg.norm(w)
        if 0.2 < r2 and r2 / sigma < 7:
            out.append((x, w, float(w @ x + gap)))
    return out


# ------------------------------------------------------------------------------------ Gaussian l1 (box)
@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_gaussian_l1_within_box_truth(d):
    """Threat model: the [0, 1] box. On random half-spaces (exact p), the derived l1 radius
    max(R, R^2) never exceeds the least l1 norm of a box-feasible perturbation that reaches the
    decision boundary (linprog); the R^2 branch (R > 1) is exercised."""
    rng = np.random.default_rng(100 + d)
    sigma = 0.5
    beyond_one = 0
    for x, w, tau in _random_halfspaces(rng, d, 80, sigma):
        r = Gaussian(sigma).radii(gaussian_p(x, w, tau, sigma), d)
        truth = box_l1_truth(x, w, tau)
        assert r["l1"] <= truth * (1 + 1e-7) + 1e-9, (x, w, tau, r, truth)
        beyond_one += r["l2"] > 1
    assert beyond_one >= 3  # the R^2 branch is checked, not just R


@pytest.mark.parametrize("m", [2, 3, 5, 9])
def test_gaussian_l1_tight_at_box_corner(m):
    """Constructed worst case: w = (1, ..., 1) on m coordinates, x = 0, boundary w.z = m through the
    corner (1, ..., 1). The l2 distance is sqrt(m) > 1, the derived l1 radius is m, and the corner
    perturbation delta = (1, ..., 1) has ||delta||_1 = m and reaches the boundary: the true box l1
    radius is m, so R^2 is sound and cannot be improved."""
    sigma = 0.7
    w, x, tau = np.ones(m), np.zeros(m), float(m)
    p = gaussian_p(x, w, tau, sigma)
    r = Gaussian(sigma).radii(p, m)
    assert r["l2"] == pytest.approx(math.sqrt(m), rel=1e-9)
    assert r["l1"] == pytest.approx(m, rel=1e-9)
    assert box_l1_truth(x, w, tau) == pytest.approx(m, rel=1e-9)
    corner = np.ones(m)
    assert np.sum(np.abs(corner)) == m and w @ (x + corner) >= tau  # reaches the boundary at l1 = m
    shrunk = corner * (1 - 1e-6)  # every strictly shorter box perturbation along it stays on class 0
    assert w @ (x + shrunk) < tau


def test_gaussian_l1_r2_branch_needs_the_box():
    """Outside the box the R^2 branch over-claims: axis half-space z_0 < 2 at x_0 = 0.5 (gap 1.5,
    beyond the box). R = 1.5 and the derived l1 radius is 2.25, but delta = (1.5, 0) reaches the
    boundary with ||delta||_1 = 1.5 (leaving the box); inside the box the boundary is unreachable."""
    sigma = 0.5
    w, x, tau = np.array([1.0, 0.0]), np.array([0.5, 0.5]), 2.0
    r = Gaussian(sigma).radii(gaussian_p(x, w, tau, sigma), 2)
    assert r["l2"] == pytest.approx(1.5) and r["l1"] == pytest.approx(2.25)
    delta = np.array([1.5, 0.0])
    assert w @ (x + delta) >= tau and np.sum(np.abs(delta)) < r["l1"]  # a crossing inside the claimed ball
    assert np.any(x + delta > 1)  # ... which leaves the box
    assert box_l1_truth(x, w, tau) == math.inf


# ------------------------------------------------------------------------------------ l0 from l2 / l1 (box)
@pytest.mark.parametrize("d", [3, 4, 6, 8])
def test_gaussian_l0_within_box_truth(d):
    """Threat model: the [0, 1] box. The derived l0 radius (largest k with sqrt(k) < R) never
    exceeds the true box l0 radius of the half-space (every subset of coordinates tried)."""
    rng = np.random.default_rng(200 + d)
    sigma = 0.5
    nonzero = 0
    for x, w, tau in _random_halfspaces(rng, d, 80, sigma):
        r = Gaussian(sigma).radii(gaussian_p(x, w, tau, sigma), d)
        truth = box_l0_truth(x, w, tau)
        assert r["l0"] <= truth, (x, w, tau, r, truth)
        nonzero += r["l0"] > 0
    assert nonzero >= 3


@pytest.mark.parametrize("m", [2, 4, 7])
def test_gaussian_l0_tight_at_box_corner(m):
    """Constructed worst case: w = (1, ..., 1) on m of d = m + 2 coordinates, x = 0, boundary
    w.z = m (1 - 1e-7), a hair inside the corner. R = sqrt(m) (1 - 1e-7): the derived l0 radius is
    m - 1; changing the m coordinates to 1 crosses the boundary and no m - 1 coordinates can, so the
    truth is m - 1 as well (tight). (Exactly at the corner, R = sqrt(m) is computed with a relative
    rounding error of up to ~1e-10 either way, and the strict sqrt(k) < R may then admit k = m.)"""
    d = m + 2
    sigma = 0.6
    w = np.concatenate([np.ones(m), np.zeros(2)])
    x, tau = np.zeros(d), m * (1 - 1e-7)
    r = Gaussian(sigma).radii(gaussian_p(x, w, tau, sigma), d)
    assert r["l0"] == m - 1
    assert box_l0_truth(x, w, tau) == m - 1


def test_gaussian_l0_needs_the_box():
    """Outside the box one coordinate may move further than 1: axis half-space z_0 < 2 at x_0 = 0.5,
    R = 1.5, derived l0 = 2 (sqrt(2) < 1.5), yet changing coordinate 0 alone by 1.5 crosses."""
    sigma = 0.5
    w, x, tau = np.array([1.0, 0.0, 0.0]), np.array([0.5, 0.5, 0.5]), 2.0
    r = Gaussian(sigma).radii(gaussian_p(x, w, tau, sigma), 3)
    assert r["l0"] == 2
    assert w @ (x + np.array([1.5, 0, 0])) >= tau  # one changed coordinate suffices without the box
    assert box_l0_truth(x, w, tau) == math.inf  # inside the box no coordinate set reaches it


@pytest.mark.parametrize("b", [0.3, 0.6])
def test_laplace_l0_within_box_truth(b):
    """Threat model: the box. Laplace's derived l0 (largest k < R1) against the true box l0 radius of
    oblique half-spaces in 2-D, where the exact class probability is a 1-D integral."""
    seen = set()
    for theta in (0.15, math.pi / 4, 0.6, 1.2):
        w = np.array([math.cos(theta), math.sin(theta)])
        x = np.zeros(2)
        for frac in (0.3, 0.6, 0.9, 0.99):
            tau = frac * float(np.sum(w))  # the corner (1, 1) reaches w.z = sum(w)
            p = laplace_p_2d(tau, w, b)
            r = Laplace(b).radii(p, 2)
            truth = box_l0_truth(x, w, tau)
            assert r["l0"] <= truth, (theta, frac, r, truth)
            assert r["l1"] <= box_l1_truth(x, w, tau) * (1 + 1e-7)  # own norm, box truth (>= unconstrained)
            seen.add(r["l0"])
    assert 1 in seen  # a non-trivial l0 certificate is checked


# ------------------------------------------------------------------------------------ no-box derived radii
@pytest.mark.parametrize("d", [1, 3, 6])
def test_gaussian_linf_and_small_l1_without_box(d):
    """Threat model: any perturbation (no box). The Gaussian linf radius R / sqrt(d) and the l1
    radius for R <= 1 (= R) never exceed the unconstrained distances gap / ||w||_1 and
    gap / ||w||_inf of random half-spaces, and R / sqrt(d) is attained by w = (1, ..., 1)."""
    rng = np.random.default_rng(300 + d)
    sigma = 0.4
    for _ in range(50):
        w = rng.normal(size=d)
        gap = rng.uniform(0.05, 0.9) * np.linalg.norm(w)  # R in (0.05, 0.9)
        p = float(sp_norm.cdf(gap / (sigma * np.linalg.norm(w))))
        r = Gaussian(sigma).radii(p, d)
        assert r["linf"] <= gap / np.sum(np.abs(w)) * (1 + 1e-9)
        assert r["l1"] <= gap / np.max(np.abs(w)) * (1 + 1e-9)
    w = np.ones(d)
    gap = 0.5 * math.sqrt(d)
    r = Gaussian(sigma).radii(float(sp_norm.cdf(gap / (sigma * math.sqrt(d)))), d)
    assert r["linf"] == pytest.approx(gap / d, rel=1e-9)  # tight: delta = (gap/d, ..., gap/d)


def test_derived_radii_through_smooth_certify():
    """End to end: Smooth.certify on the corner half-space (d = 4, boundary through (1, 1, 1, 1),
    R = 2 > 1) certifies l1 and l0 radii within the box truths (4 and 3) and close to them."""
    d, sigma = 4, 0.5
    w, x, tau = np.ones(d), np.zeros(d), float(d)
    sm = Smooth(halfspace_model(w, tau), 2, Gaussian(sigma))
    c = sm.certify(torch.zeros(d), 100, 100_000, 0.001, 50_000, seed=3)
    assert c.prediction == 0
    assert 1.0 < c.radii["l2"] <= 2.0
    assert 1.0 < c.radii["l1"] <= box_l1_truth(x, w, tau) == pytest.approx(4.0)
    assert c.radii["l0"] <= box_l0_truth(x, w, tau) == 3


@pytest.mark.parametrize("m,sigma", [(4, 0.6), (9, 2.0), (1, 1.0), (16, 2.0)])
def test_l0_from_l2_on_an_exact_threshold_is_not_rounded_up(m, sigma):
    """At p exactly Phi(sqrt(m) / sigma) the true l2 radius is sqrt(m), where changing m box coordinates
    reaches the boundary (a tie), so only m - 1 coordinates are certified. Gaussian.radius carries a
    rounding error of about 1e-10 either way (m = 4, sigma = 0.6 gives 2.0000000000000204); the derived
    l0 radius must still be m - 1, never m."""
    g = Gaussian(sigma)
    p = float(sp_norm.cdf(math.sqrt(m) / sigma))
    r = g.radii(p, 64)
    assert abs(r["l2"] - math.sqrt(m)) < 1e-8
    assert r["l0"] == m - 1
    assert g.derived_radii(math.sqrt(m) * (1 + 1e-14), 64)["l0"] == m - 1
