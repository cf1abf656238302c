"""Soundness of Smooth.certify (Gaussian l2, Laplace l1, uniform l1/linf and every derived norm) and
Smooth.predict, through the public API with the compiled sampling kernels.

Base classifier: f(z) = 1 iff z_0 > 0 (class 0 otherwise). At x with x_0 = g > 0, each noise
family's smoothed classifier is the same half-space, because the noise on z_0 is symmetric with a
positive density at 0: P(f = 1) = F(g) with F the CDF of one noise coordinate. The true robustness
radius is g in l1, l2 and linf alike (only delta_0 matters and |delta_0| <= every norm of delta),
and 0 in l0 on the [0, 1] box (one changed coordinate may set x_0 to 0, where P(f = 1) = 1/2).
Each noise's own-norm radius at the true probability equals g exactly, so the Clopper-Pearson lower
bound is the only thing standing between the certificate and a violation: the case is tight.

Mildly unsound controls (one change each, monkeypatched into fastcert.smoothing.smooth): CERTIFY with
its Clopper-Pearson bound at level 2 alpha; PREDICT with its binomial test at 2 alpha (at a tie) or
3 alpha (wrong class). Their true failure rates follow exactly from the binomial distribution of the
counts (``*_rate`` below), and ``test_sizing`` checks that the trial counts give the promised power.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta as sp_beta
from scipy.stats import binom, binomtest
from scipy.stats import norm as normal
from testing import FirstCoordinate

import fastcert
import fastcert.smoothing.smooth as smoothing
from fastcert.stats import binom_pvalue, clopper_pearson_lower

ALPHA = 0.1
N0, N = 100, 200
CTRL_CERTIFY = 2  # control: Clopper-Pearson at 2 alpha
CTRL_TIE, CTRL_WRONG = 2, 3  # control: PREDICT's test at 2 alpha / 3 alpha
TRIALS = {"fast": 600, "full": 3000}
TRIALS_PREDICT = {"fast": 600, "full": 3000}
P_WRONG = 0.505  # P(f = 1) in the wrong-class case: just off the tie


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


# ------------------------------------------------------------------------ exact failure rates
def _select_rate(n0, p):
    """P(the n0 selection votes pick class 1): strictly more than half (ties go to class 0)."""
    return float(binom.sf(n0 // 2, n0, p))


def certify_rate(p, level, n0=N0, n=N):
    """Exact P(wrong) of CERTIFY at Clopper-Pearson level ``level`` on the case: class 1 selected and
    its lower bound above the true p (the radius then exceeds g), or class 0 selected and certified
    (its lower bound >= 1/2). Computed from the binomial law of the counts, by scipy's beta quantile
    (not fastcert's bound)."""
    k = np.arange(n + 1)
    lower = np.where(k > 0, sp_beta.ppf(level, np.maximum(k, 1), n - k + 1), 0.0)
    s = _select_rate(n0, p)
    over = binom.pmf(k, n, p)[lower > p].sum()
    cert0 = binom.pmf(k, n, 1 - p)[lower >= 0.5].sum()
    return s * over + (1 - s) * cert0


def _pvalues(n):
    return np.array([binomtest(int(k), n, 0.5).pvalue for k in range(n + 1)])


def tie_rate(level, n=N):
    """Exact P(PREDICT answers) at a tie, its test at ``level``."""
    k = np.arange(n + 1)
    return float(binom.pmf(k, n, 0.5)[(_pvalues(n) <= level) & (k != n - k)].sum())


def wrong_class_rate(level, p1=P_WRONG, n=N):
    """Exact P(PREDICT answers class 0) when P(f = 1) = p1, its test at ``level``."""
    k0 = np.arange(n + 1)
    return float(binom.pmf(k0, n, 1 - p1)[(k0 > n - k0) & (_pvalues(n) <= level)].sum())


def _cp_at(monkeypatch, factor):
    """Control: the real Clopper-Pearson bound at ``factor`` times the requested level."""
    monkeypatch.setattr(smoothing, "clopper_pearson_lower", lambda k, n, a: clopper_pearson_lower(k, n, factor * a))


def _test_at(monkeypatch, factor):
    """Control: PREDICT's binomial test at ``factor`` alpha (p-value / factor compared with alpha)."""
    monkeypatch.setattr(smoothing, "binom_pvalue", lambda k, n, p=0.5: binom_pvalue(k, n, p) / factor)


# ------------------------------------------------------------------------ the cases
@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_certify_every_norm(name, d, mode, variant, judge, monkeypatch):
    noise, g = CASES[name]
    own = noise.radius(true_p(noise, g), d)
    assert own == pytest.approx(g, rel=1e-9)  # the case is tight for the own norm
    truth = {"l1": g, "l2": g, "linf": g, "l0": 0}
    if variant == "control":
        _cp_at(monkeypatch, CTRL_CERTIFY)
    sm = fastcert.Smooth(FirstCoordinate(), 2, noise)
    x = torch.full((d,), 0.5)
    x[0] = g
    trials = TRIALS[mode]
    wrong = 0
    abstain = 0
    for s in range(trials):
        c = sm.certify(x, N0, N, ALPHA, 512, seed=10_000 * d + s)
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
    these below alpha. Control: the test at 2 alpha."""
    if variant == "control":
        _test_at(monkeypatch, CTRL_TIE)
    sm = fastcert.Smooth(FirstCoordinate(), 2, fastcert.Gaussian(0.5))
    x = torch.tensor([0.0, 0.5])
    trials = TRIALS_PREDICT[mode]
    answered = sum(sm.predict(x, N, ALPHA, 256, seed=s) != smoothing.ABSTAIN for s in range(trials))
    judge(answered, trials, ALPHA, variant)


def test_predict_wrong_class_rate(mode, variant, judge, monkeypatch):
    """Just off the tie (P(f = 1) = 0.505) PREDICT returns the wrong class 0 rarely. The reference
    is alpha / 2: the exact two-sided binomial test rejects symmetrically at p = 1/2, so a wrong
    answer (the minority class ahead and significant) has probability at most alpha / 2 whenever the
    true top class has p >= 1/2 (``test_sizing`` checks this exactly). Control: the test at 3 alpha."""
    if variant == "control":
        _test_at(monkeypatch, CTRL_WRONG)
    sm = fastcert.Smooth(FirstCoordinate(), 2, fastcert.Gaussian(0.5))
    x = torch.tensor([float(0.5 * normal.ppf(P_WRONG)), 0.5])
    trials = TRIALS_PREDICT[mode]
    wrong = sum(sm.predict(x, N, ALPHA, 256, seed=20_000 + s) == 0 for s in range(trials))
    judge(wrong, trials, ALPHA / 2, variant)


# ------------------------------------------------------------------------ sizing
def sizing_rows():
    """(case, trials per mode, a_ref, exact sound rate, exact control rate) of every case here."""
    rows = []
    for name, (noise, g) in sorted(CASES.items()):
        p = true_p(noise, g)
        rows.append((f"certify_every_norm {name}", TRIALS, ALPHA, certify_rate(p, ALPHA),
                     certify_rate(p, CTRL_CERTIFY * ALPHA)))
    rows.append(("predict_level_at_a_tie", TRIALS_PREDICT, ALPHA, tie_rate(ALPHA), tie_rate(CTRL_TIE * ALPHA)))
    rows.append(("predict_wrong_class_rate", TRIALS_PREDICT, ALPHA / 2, wrong_class_rate(ALPHA),
                 wrong_class_rate(CTRL_WRONG * ALPHA)))
    return rows


def test_sizing(decision):
    """Every case's exact sound failure rate is within its reference (the promise holds at the
    boundary), and full mode passes the sound procedure with probability >= 99% and detects the
    control with probability >= 90%."""
    # the wrong-class reference alpha / 2 holds for every p1 >= 1/2 (worst at the tie)
    assert wrong_class_rate(ALPHA, p1=0.5) <= ALPHA / 2
    for case, trials, a_ref, a_sound, a_ctrl in sizing_rows():
        assert a_sound <= a_ref, case
        s = decision.sizing(trials["full"], a_ref, a_ctrl)
        assert s["pass"] >= 1 - decision.P_FALSE_ALARM and s["power"] >= decision.MIN_POWER, (case, s)
