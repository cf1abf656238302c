"""Soundness of certified confidence (Kumar et al. 2020) through fastcert.certify_confidence.

Two base models, each with logits (-v, v) where v depends on z_0 only; under N(0, sigma^2 I) the
smoothed expected confidence at x + delta then depends on delta_0 only, so its minimum over the l2
ball of radius R is at delta_0 = -R (class 1) or +R (class 0).

``Step`` (v = +-100, the mildly unsound control's case): the score of the selected class is 0 or 1
(the indicator of a half-space), so the smoothed score is a Gaussian CDF, every bound reduces to one
Neyman-Pearson shift of the empirical frequency K/n minus a band eps, and a bound is wrong exactly
when K/n - eps exceeds the true probability. The DKW band (CDF bound) and Hoeffding's inequality
(expectation bound) have the same eps = sqrt(ln(1/alpha) / (2n)) here. Both are conservative even in
this, their worst case (a Bernoulli near 1/2 fails at about 1 - Phi(sqrt(2 ln(1/alpha)))): no level
between 2 alpha and 5 alpha makes them fail more often than alpha. So this case's reference is not
alpha but the exact failure rate of the documented bound on the case (``step_rate``, from the
binomial law of K; it is checked to be <= alpha), and the control, both bands at level 2 alpha
(``confidence.dkw_epsilon`` / ``hoeffding_lower`` monkeypatched; each bound depends on one of
them), must exceed it. A band that is narrower than documented is detected; a tighter but still
valid band would trip the case too, and then its reference needs recomputing.

``Logistic`` (v = 2 z_0): a continuous score whose level sets are half-spaces, so the CDF bound's
sum over many thresholds is exercised; the truth is a 1-D integral (scipy quadrature). Judged at
alpha, with the gross control of both bands removed (eps = 0): DKW and Hoeffding sit far below alpha
here, so only a gross error is visible.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import expit
from scipy.stats import binom
from scipy.stats import norm as sp_norm

import fastcert
import fastcert.smoothing.confidence as confidence

RADII = [0.0, 0.1, 0.25, 0.5]
SIGMA = 0.5
# Logistic case
ALPHA = 0.2
STEEP, X0 = 2.0, 0.2
N0, N = 20, 300
TRIALS = {"fast": 300, "full": 3000}
# Step case
ALPHA_STEP, CTRL_STEP = 0.1, 2  # control: both bands at 2 alpha
X0_STEP, N0_STEP, N_STEP = 0.1, 100, 300
TRIALS_STEP = {"fast": 1000, "full": 4000}


class Logistic(torch.nn.Module):
    def forward(self, z):
        v = STEEP * z.reshape(z.shape[0], -1)[:, 0]
        return torch.stack([-v, v], 1)


class Step(torch.nn.Module):
    def forward(self, z):
        v = 100.0 * torch.sign(z.reshape(z.shape[0], -1)[:, 0])
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


def step_truth(cls: int, measure: str) -> np.ndarray:
    """Worst smoothed score of the Step model within each radius: P(z_0 on cls's side) after moving
    x_0 by R towards the boundary, a Gaussian CDF."""
    s = sp_norm.cdf((X0_STEP - np.array(RADII)) / SIGMA) if cls == 1 else sp_norm.cdf(-(X0_STEP + np.array(RADII)) / SIGMA)
    return s if measure == "score" else 2 * s - 1


def _step_bound(v: np.ndarray) -> np.ndarray:
    """(len(v), R) score bounds from the band-corrected frequencies v: Phi(Phi^-1(v) - R / sigma)."""
    out = sp_norm.cdf(sp_norm.ppf(np.clip(v, 0, 1))[:, None] - np.array(RADII)[None, :] / SIGMA)
    return np.where(v[:, None] > 0, out, 0.0)


def step_rate(level: float, measure: str = "score") -> float:
    """Exact P(some bound > truth + 1e-6) for the Step case with eps = sqrt(ln(1/level) / (2n)):
    sum over the selected class (ties of the N0 votes go to class 0) and the count K of its ones."""
    p1 = float(sp_norm.cdf(X0_STEP / SIGMA))
    eps = np.sqrt(np.log(1 / level) / (2 * N_STEP))
    k = np.arange(N_STEP + 1)
    scale = 1.0 if measure == "score" else 2.0
    total = 0.0
    for cls, p, sel in ((1, p1, binom.sf(N0_STEP // 2, N0_STEP, p1)), (0, 1 - p1, binom.cdf(N0_STEP // 2, N0_STEP, p1))):
        bad = np.any(scale * (_step_bound(k / N_STEP - eps) - step_truth(cls, "score")[None, :]) > 1e-6, axis=1)
        total += sel * binom.pmf(k, N_STEP, p)[bad].sum()
    return float(total)


def test_truth_quadrature():
    # the integral against a Monte Carlo estimate, and monotone decrease in the radius
    rng = np.random.default_rng(0)
    z = X0 + SIGMA * rng.standard_normal(400_000)
    assert expected_score(1, X0) == pytest.approx(np.mean(expit(2 * STEEP * z)), abs=3e-3)
    t = truth(1, "score")
    assert np.all(np.diff(t) < 0)


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_certify_confidence(measure, mode, variant, judge, monkeypatch):
    if variant == "control":  # gross: both bands removed
        monkeypatch.setattr(confidence, "dkw_epsilon", lambda n, a: 0.0)
        monkeypatch.setattr(confidence, "hoeffding_lower", lambda mean, n, a, lo, hi: mean)
    truths = {c: truth(c, measure) for c in (0, 1)}
    sm = fastcert.Smooth(Logistic(), 2, fastcert.Gaussian(SIGMA))
    x = torch.tensor([X0, 0.5])
    trials = TRIALS[mode]
    wrong = {"cdf": 0, "expectation": 0}
    for s in range(trials):
        cert = fastcert.certify_confidence(sm, x, N0, N, ALPHA, 512, seed=s, radii=RADII, measure=measure)
        for bound in wrong:
            values = cert.cdf if bound == "cdf" else cert.expectation
            wrong[bound] += bool(np.any(values > truths[cert.selected] + 1e-6))  # float32 scores: 1e-6 slack
    for bound, w in wrong.items():
        judge(w, trials, ALPHA, variant, measure=measure, bound=bound)


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_certify_confidence_step(measure, mode, variant, judge, monkeypatch):
    if variant == "control":  # both bands at 2 alpha
        dkw, hoeffding = confidence.dkw_epsilon, confidence.hoeffding_lower
        monkeypatch.setattr(confidence, "dkw_epsilon", lambda n, a: dkw(n, CTRL_STEP * a))
        monkeypatch.setattr(confidence, "hoeffding_lower",
                            lambda mean, n, a, lo, hi: hoeffding(mean, n, CTRL_STEP * a, lo, hi))
    truths = {c: step_truth(c, measure) for c in (0, 1)}
    sm = fastcert.Smooth(Step(), 2, fastcert.Gaussian(SIGMA))
    x = torch.tensor([X0_STEP, 0.5])
    trials = TRIALS_STEP[mode]
    a_ref = step_rate(ALPHA_STEP, measure)
    wrong = {"cdf": 0, "expectation": 0}
    for s in range(trials):
        cert = fastcert.certify_confidence(sm, x, N0_STEP, N_STEP, ALPHA_STEP, 512, seed=s, radii=RADII,
                                           measure=measure)
        for bound in wrong:
            values = cert.cdf if bound == "cdf" else cert.expectation
            wrong[bound] += bool(np.any(values > truths[cert.selected] + 1e-6))
    for bound, w in wrong.items():
        judge(w, trials, a_ref, variant, measure=measure, bound=bound)


def sizing_rows():
    return [(f"certify_confidence_step {m} (cdf and expectation)", TRIALS_STEP, step_rate(ALPHA_STEP, m),
             step_rate(ALPHA_STEP, m), step_rate(CTRL_STEP * ALPHA_STEP, m)) for m in ("score", "margin")]


def test_sizing(decision):
    """The Step case's reference (the documented bound's exact failure rate) is within alpha, no
    frequency K/n - eps sits within 1e-4 of the truth (so float32 rounding cannot flip a decision),
    and full mode has the promised pass probability and power."""
    p1 = float(sp_norm.cdf(X0_STEP / SIGMA))
    for level in (ALPHA_STEP, CTRL_STEP * ALPHA_STEP):
        v = np.arange(N_STEP + 1) / N_STEP - np.sqrt(np.log(1 / level) / (2 * N_STEP))
        assert np.min(np.abs(v - p1)) > 1e-4 and np.min(np.abs(v - (1 - p1))) > 1e-4
    for case, trials, a_ref, a_sound, a_ctrl in sizing_rows():
        assert a_sound <= ALPHA_STEP, case
        s = decision.sizing(trials["full"], a_ref, a_ctrl)
        assert s["pass"] >= 1 - decision.P_FALSE_ALARM and s["power"] >= decision.MIN_POWER, (case, s)
