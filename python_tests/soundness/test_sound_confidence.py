"""Soundness of certified confidence (Kumar et al. 2020) through fastcert.certify_confidence.

Base model: logits (-c z_0, c z_0), so the softmax score of class 1 is sigmoid(2 c z_0), a monotone
function of z_0 alone, and the margin is 2 score - 1. Under N(0, sigma^2 I) the smoothed expected
confidence at x + delta depends on delta_0 only, so its minimum over the l2 ball of radius R is at
delta_0 = -R (class 1) or +R (class 0): a one-dimensional integral (scipy.integrate.quad). Every
level set {score >= t} is a half-space, for which the Neyman-Pearson shift in the CDF bound is exact;
what keeps the bounds below the truth is the DKW band (CDF bound) and Hoeffding's inequality
(expectation bound). Unsound control: both replaced by the point estimates (eps = 0).

Note: DKW and Hoeffding are conservative for this case, so the sound rates sit well below alpha; the
control shows that dropping the confidence band is detected, not a smaller error in its width.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm as sp_norm

import fastcert
import fastcert.smoothing.confidence as confidence

ALPHA = 0.2
SIGMA, STEEP, X0 = 0.5, 2.0, 0.2
RADII = [0.0, 0.1, 0.25, 0.5]
N0, N = 20, 300
TRIALS = {"fast": 600, "full": 10000}


class Logistic(torch.nn.Module):
    def forward(self, z):
        v = STEEP * z.reshape(z.shape[0], -1)[:, 0]
        return torch.stack([-v, v], 1)


def expected_score(cls: int, center: float) -> float:
    """E[softmax_cls(logits(center + sigma N))] by quadrature."""
    sign = 1.0 if cls == 1 else -1.0
    f = lambda u: expit(sign * 2 * STEEP * (center + SIGMA * u)) * sp_norm.pdf(u)  # noqa: E731
    return integrate.quad(f, -12, 12, points=[-center / SIGMA], epsabs=1e-12, epsrel=1e-12, limit=200)[0]


def truth(cls: int, measure: str) -> np.ndarray:
    worst = [min(expected_score(cls, X0 - r), expected_score(cls, X0 + r)) for r in RADII]
    s = np.array(worst)
    return s if measure == "score" else 2 * s - 1


def test_truth_quadrature():
    # the integral against a Monte Carlo estimate, and monotone decrease in the radius
    rng = np.random.default_rng(0)
    z = X0 + SIGMA * rng.standard_normal(400_000)
    assert expected_score(1, X0) == pytest.approx(np.mean(expit(2 * STEEP * z)), abs=3e-3)
    t = truth(1, "score")
    assert np.all(np.diff(t) < 0)


@pytest.mark.parametrize("bound", ["cdf", "expectation"])
@pytest.mark.parametrize("measure", ["score", "margin"])
def test_certify_confidence(measure, bound, mode, variant, judge, monkeypatch):
    if variant == "unsound":
        monkeypatch.setattr(confidence, "dkw_epsilon", lambda n, a: 0.0)
        monkeypatch.setattr(confidence, "hoeffding_lower", lambda mean, n, a, lo, hi: mean)
    truths = {c: truth(c, measure) for c in (0, 1)}
    sm = fastcert.Smooth(Logistic(), 2, fastcert.Gaussian(SIGMA))
    x = torch.tensor([X0, 0.5])
    trials = TRIALS[mode]
    wrong = 0
    for s in range(trials):
        cert = fastcert.certify_confidence(sm, x, N0, N, ALPHA, 512, seed=s, radii=RADII, measure=measure)
        values = cert.cdf if bound == "cdf" else cert.expectation
        wrong += bool(np.any(values > truths[cert.selected] + 1e-6))  # float32 scores: 1e-6 slack
    judge(wrong, trials, ALPHA, variant, measure=measure, bound=bound)
