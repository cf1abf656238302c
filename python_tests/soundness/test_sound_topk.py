"""Soundness of top-k certification (Jia et al. 2020) through Smooth.certify_topk.

Base classifier on the first coordinate: class 0 on z_0 < a, class 1 on a <= z_0 < b, class 2 on
z_0 >= b. The smoothed class probabilities at x + t e_0 are differences of the noise CDF, and since
only delta_0 matters (|delta_0| <= ||delta|| in every norm), the true top-k radius of a class is the
smallest |t| at which it falls out of the top k; we find it by a dense scan plus bisection,
independently of fastcert. Gaussian k = 2: class 0 leaves the top 2 when the right class 2 overtakes
it (class 1 stays on top), the case in which Jia et al.'s bound is exact: R = (a + b)/2 - x_0.
Laplace k = 1 with two classes: Teng et al.'s l1 radius, exact for a half-line.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import laplace as sp_laplace
from scipy.stats import norm as sp_norm

import fastcert
import fastcert.smoothing.topk as topk

ALPHA = 0.2
N0, N = 30, 300
TRIALS = {"fast": 1000, "full": 20000}


class Slabs(torch.nn.Module):
    def __init__(self, cuts):
        super().__init__()
        self.cuts = torch.tensor(cuts, dtype=torch.float32)

    def forward(self, z):
        c = torch.bucketize(z.reshape(z.shape[0], -1)[:, 0].contiguous(), self.cuts, right=True)
        return torch.nn.functional.one_hot(c, len(self.cuts) + 1).float()


def class_probs(cdf, cuts, x0):
    edges = np.concatenate([[0.0], [cdf(c - x0) for c in cuts], [1.0]])
    return np.diff(edges)


def true_topk_radius(cdf, cuts, x0, label, k, span=5.0):
    """Smallest |t| such that at x0 + t at least k other classes are strictly more probable."""
    def margin(t):  # > 0 while label is in the top k
        p = class_probs(cdf, cuts, x0 + t)
        others = np.sort(np.delete(p, label))[::-1]
        return p[label] - others[k - 1]

    best = math.inf
    for sign in (1.0, -1.0):
        ts = np.linspace(0.0, span, 801)
        vals = np.array([margin(sign * t) for t in ts])
        bad = np.flatnonzero(vals <= 0)
        if bad.size:
            i = bad[0]
            root = brentq(lambda t: margin(sign * t), ts[i - 1], ts[i], xtol=1e-14) if i > 0 else 0.0
            best = min(best, root)
    return best


SIGMA, CUTS_G, K_G = 0.5, [-0.3, 0.6], 2
SCALE, CUTS_L = 0.5, [-0.3]


def gauss_cdf(v):
    return float(sp_norm.cdf(v / SIGMA))


def lap_cdf(v):
    return float(sp_laplace.cdf(v, scale=SCALE))


CASES = {
    "gaussian-k2": (fastcert.Gaussian(SIGMA), CUTS_G, K_G, gauss_cdf),
    "laplace-k1": (fastcert.Laplace(SCALE), CUTS_L, 1, lap_cdf),
}


def test_truth_matches_closed_forms():
    assert true_topk_radius(gauss_cdf, CUTS_G, 0.0, 0, 2) == pytest.approx(0.15, abs=1e-9)
    assert true_topk_radius(lap_cdf, CUTS_L, 0.0, 1, 1) == pytest.approx(0.3, abs=1e-9)
    # the theorem is tight here: at the exact probabilities the radius equals the truth
    p = class_probs(gauss_cdf, CUTS_G, 0.0)
    r = topk.topk_radius_from_bounds(p[0], np.delete(p, 0), 2, SIGMA, "gaussian")
    assert r == pytest.approx(0.15, rel=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_certify_topk(case, mode, variant, judge, monkeypatch):
    noise, cuts, k, cdf = CASES[case]
    if variant == "unsound":  # point estimates in place of the simultaneous Clopper-Pearson bounds
        monkeypatch.setattr(topk, "_cp_lower", lambda kk, n, a: np.asarray(kk, float) / np.asarray(n, float))
        monkeypatch.setattr(topk, "_cp_upper", lambda kk, n, a: np.asarray(kk, float) / np.asarray(n, float))
    C = len(cuts) + 1
    truth = {c: true_topk_radius(cdf, cuts, 0.0, c, k) for c in range(C)}
    sm = fastcert.Smooth(Slabs(cuts), C, noise)
    x = torch.tensor([0.0, 0.5])
    trials = TRIALS[mode]
    wrong = informative = 0
    for s in range(trials):
        cert = sm.certify_topk(x, k, N0, N, ALPHA, 512, seed=s)
        radii = cert.extra["class_radii"]
        informative += any(r > 0 for r in radii.values())
        wrong += any(r > truth[c] * (1 + 1e-9) for c, r in radii.items())
    assert informative > trials // 2
    judge(wrong, trials, ALPHA, variant, case=case, truth=truth)
