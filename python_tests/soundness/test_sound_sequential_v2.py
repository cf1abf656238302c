"""Soundness of the issue-19 sequential tests (fastcert.smoothing.sequential): the finer look
schedule (growth 1.25), the "power" alpha spending, r = 0 as an always-present target (sampling goes
on while the prediction is undecided) and the adaptive mode's anytime-valid confidence sequence, all
run through the batched engine ``certify_many_sequential`` (every trial is one input of one batched
run: the trials share forward batches, each keeps its own seed).

Base classifier f(z) = 1 iff z_0 > 0 (Gaussian and Laplace noise): the smoothed classifier is the same
half-space and the true radius at x_0 = g is g. Each case puts p_A at (or a hair past) the boundary
of the claim it checks, the tightest possible case. Mildly unsound control, the same for every case:
peeking with a fixed-n bound at every look (each look's Clopper-Pearson bound at the full alpha
instead of its alpha-spending level: ``sequential.look_levels`` monkeypatched), which the union bound
of the module docstring forbids.
"""
from __future__ import annotations

import pytest
import torch
from testing import FirstCoordinate

import fastcert
from fastcert.smoothing import sequential

ALPHA = 0.1
MAX_N = 2000
TRIALS = {"fast": 300, "full": 1500}
NOISES = {"gaussian": fastcert.Gaussian(0.25), "laplace": fastcert.Laplace(0.25)}
KW = {"n0": 20, "batch_size": 4096, "first_n": 32, "max_n": MAX_N}


def _control(monkeypatch, variant):
    if variant == "control":
        monkeypatch.setattr(sequential, "look_levels", lambda num, alpha, share, *rest: [alpha] * num)


def _run(noise, g, trials, **kw):
    sm = fastcert.Smooth(FirstCoordinate(), 2, noise)
    x = torch.tensor([g, 0.5])
    return sequential.certify_many_sequential(sm, [x] * trials, list(range(trials)), alpha=ALPHA, **KW, **kw)


@pytest.mark.parametrize("spending", ["uniform", "power"])
@pytest.mark.parametrize("name", sorted(NOISES))
def test_radii_fine_schedule(name, spending, mode, variant, judge, monkeypatch):
    """Target r = 0.1 a hair above the truth g: certifying r (or any radius above g) is wrong."""
    _control(monkeypatch, variant)
    r = 0.1
    g = r * (1 - 1e-6)
    trials = TRIALS[mode]
    certs = _run(NOISES[name], g, trials, radii=[r], growth=1.25, spending=spending)
    wrong = sum(c.prediction == 0 or c.certified[r] or (c.prediction == 1 and c.radius > g) for c in certs)
    assert all(len(c.extra["looks"]) >= 1 for c in certs)
    judge(wrong, trials, ALPHA, variant, noise=name, spending=spending)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_prediction_kept_sampling(name, mode, variant, judge, monkeypatch):
    """p_A = 1/2 exactly (x_0 = 0) and a target far out of reach: the target is ruled out at once, and
    sampling goes on for r = 0; any prediction at all claims p > 1/2 for its class and is wrong."""
    _control(monkeypatch, variant)
    trials = TRIALS[mode]
    certs = _run(NOISES[name], 0.0, trials, radii=[0.5], growth=1.25)
    assert all(c.certified == {0.5: False} for c in certs)
    wrong = sum(c.prediction != -1 for c in certs)
    judge(wrong, trials, ALPHA, variant, noise=name)


@pytest.mark.parametrize("price", [None, 3e4, sequential.DEFAULT_PRICE])
@pytest.mark.parametrize("name", sorted(NOISES))
def test_adaptive_confidence_sequence(name, price, mode, variant, judge, monkeypatch):
    """Adaptive mode (anytime-valid lower confidence sequence; stop when the radius cannot grow by more
    than tol, or, with a price, when no later look is predicted to be worth its samples: 3e4 stops
    early and often, where the bound is loosest): the returned radius must not exceed the truth g."""
    _control(monkeypatch, variant)
    g = 0.15
    trials = TRIALS[mode]
    certs = _run(NOISES[name], g, trials, mode="adaptive", tol=0.01, price=price)
    informative = sum(c.prediction == 1 for c in certs)
    wrong = sum(c.prediction == 0 or (c.prediction == 1 and c.radius > g) for c in certs)
    assert informative > trials // 2
    judge(wrong, trials, ALPHA, variant, noise=name, price=price)


def test_batched_equals_alone():
    """The batched engine's certificate of each trial is the certificate of that input alone."""
    sm = fastcert.Smooth(FirstCoordinate(), 2, NOISES["gaussian"])
    xs = [torch.tensor([g, 0.5]) for g in (0.0, 0.05, 0.1, 0.3, 1.0)]
    many = sequential.certify_many_sequential(sm, xs, [7, 8, 9, 10, 11], alpha=ALPHA, radii=[0.1, 0.2],
                                              **{**KW, "batch_size": 100})
    for x, s, c in zip(xs, [7, 8, 9, 10, 11], many):
        alone = sm.certify(x, n=MAX_N, alpha=ALPHA, seed=s, radii=[0.1, 0.2], sequential=True,
                           **{k: v for k, v in KW.items() if k != "max_n"})
        c.extra.pop("seconds")
        alone.extra.pop("seconds")
        assert c == alone
