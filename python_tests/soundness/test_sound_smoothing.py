"""Soundness of Smooth.certify (Gaussian l2, Laplace l1, uniform l1/linf and every derived norm) and
Smooth.predict, through the public API with the compiled sampling kernels.

Base classifier: f(z) = 1 iff z_0 > 0 (class 0 otherwise). At x with x_0 = g > 0, each noise
family's smoothed classifier is the same half-space, because the noise on z_0 is symmetric with a
positive density at 0: P(f = 1) = F(g) with F the CDF of one noise coordinate. The true robustness
radius is g in l1, l2 and linf alike (only delta_0 matters and |delta_0| <= every norm of delta),
and 0 in l0 on the [0, 1] box (one changed coordinate may set x_0 to 0, where P(f = 1) = 1/2).
Each noise's own-norm radius at the true probability equals g exactly, so the Clopper-Pearson lower
bound is the only thing standing between the certificate and a violation: the case is tight.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testing import FirstCoordinate
from scipy.stats import norm as normal

import fastcert
import fastcert.smoothing.smooth as smoothing

ALPHA = 0.2
N0, N = 20, 200
TRIALS = {"fast": 1500, "full": 40000}


def true_p(noise, g):
    if isinstance(noise, fastcert.Gaussian):
        return float(normal.cdf(g / noise.sigma))
    if isinstance(noise, fastcert.Laplace):
        return 1.0 - 0.5 * math.exp(-g / noise.scale)
    return 0.5 + g / (2.0 * noise.width)


CASES = {  # noise, gap g (true radius), chosen so that P(f = 1) is about 0.65-0.75
    "gaussian": (fastcert.Gaussian(0.5), 0.2),
    "laplace": (fastcert.Laplace(0.5), 0.3),
    "uniform": (fastcert.Uniform(0.5), 0.2),
}


def _plugin(monkeypatch, variant):
    """The unsound control: the point estimate k/n in place of the Clopper-Pearson lower bound."""
    if variant == "unsound":
        monkeypatch.setattr(smoothing, "clopper_pearson_lower", lambda k, n, a: k / n)


@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_certify_every_norm(name, d, mode, variant, judge, monkeypatch):
    noise, g = CASES[name]
    own = noise.radius(true_p(noise, g), d)
    assert own == pytest.approx(g, rel=1e-9)  # the case is tight for the own norm
    truth = {"l1": g, "l2": g, "linf": g, "l0": 0}
    _plugin(monkeypatch, variant)
    sm = fastcert.Smooth(FirstCoordinate(), 2, noise)
    x = torch.full((d,), 0.5)
    x[0] = g
    trials = TRIALS[mode]
    wrong = 0
    abstain = 0
    for s in range(trials):
        c = sm.certify(x, N0, N, ALPHA, 256, seed=10_000 * d + s)
        if c.prediction == smoothing.ABSTAIN:
            abstain += 1
            continue
        over = any(c.radii[k] > truth[k] * (1 + 1e-12) for k in truth)
        wrong += c.prediction != 1 or over
    assert abstain < trials // 2  # the certificates are informative
    judge(wrong, trials, ALPHA, variant, noise=name, d=d)


def test_certify_radius_reaches_truth_with_many_samples():
    """Not vacuous: with many samples the certified radius approaches the true one from below."""
    for name, (noise, g) in CASES.items():
        sm = fastcert.Smooth(FirstCoordinate(), 2, noise)
        c = sm.certify(torch.tensor([g]), 100, 200_000, 0.001, 50_000, seed=1)
        assert 0.9 * g < c.radius <= g, (name, c.radius)


def test_predict_level_at_a_tie(mode, variant, judge, monkeypatch):
    """At x_0 = 0 both classes have probability exactly 1/2, so the smoothed classifier has no top
    class and every non-abstaining answer of PREDICT is an error; PREDICT's binomial test must keep
    these below alpha. Unsound control: answer without the test."""
    if variant == "unsound":
        monkeypatch.setattr(smoothing, "binom_pvalue", lambda k, n, p=0.5: 0.0)
    sm = fastcert.Smooth(FirstCoordinate(), 2, fastcert.Gaussian(0.5))
    x = torch.tensor([0.0, 0.5])
    trials = TRIALS[mode]
    answered = sum(sm.predict(x, N, ALPHA, 256, seed=s) != smoothing.ABSTAIN for s in range(trials))
    judge(answered, trials, ALPHA, variant)


def test_predict_wrong_class_rate(mode, judge):
    """Slightly off the boundary (P(f = 1) = 0.52) the wrong class 0 is returned rarely."""
    sm = fastcert.Smooth(FirstCoordinate(), 2, fastcert.Gaussian(0.5))
    x = torch.tensor([float(0.5 * normal.ppf(0.52)), 0.5])
    trials = TRIALS[mode]
    wrong = sum(sm.predict(x, N, ALPHA, 256, seed=s) == 0 for s in range(trials))
    judge(wrong, trials, ALPHA)
