"""Soundness of sequential and input-adaptive certification (Smooth.certify(..., sequential=True)).

Base classifier f(z) = 1 iff z_0 > 0, Gaussian and Laplace noise: the smoothed classifier is the same
half-space and the true radius at x_0 = g is g (see test_sound_smoothing.py). Mode "radii": the
target radius r sits a hair above the truth (g = r (1 - 1e-6)), so certifying r is wrong, and the
probability at x equals the threshold of r up to 1e-6: the tightest possible case. Unsound control:
Clopper-Pearson at the full alpha at every look (naive repeated testing, no union bound over the
looks). Mode "adaptive": the returned radius must not exceed g; control: the point estimate.
"""
from __future__ import annotations

import pytest
import torch
from testing import FirstCoordinate

import fastcert
import fastcert.smoothing.smooth as smoothing
from fastcert.smoothing import sequential

ALPHA = 0.2
SEQ = dict(n0=20, batch_size=2048, first_n=32)
MAX_N = 2000
TRIALS = {"fast": 500, "full": 10000}
NOISES = {"gaussian": fastcert.Gaussian(0.25), "laplace": fastcert.Laplace(0.25)}


@pytest.mark.parametrize("name", sorted(NOISES))
def test_sequential_radii(name, mode, variant, judge, monkeypatch):
    if variant == "unsound":
        monkeypatch.setattr(sequential, "look_levels", lambda num, alpha, share: [alpha] * num)
    r = 0.1
    g = r * (1 - 1e-6)
    sm = fastcert.Smooth(FirstCoordinate(), 2, NOISES[name])
    x = torch.tensor([g, 0.5])
    trials = TRIALS[mode]
    wrong = 0
    for s in range(trials):
        c = sm.certify(x, n=MAX_N, alpha=ALPHA, seed=s, radii=[r], sequential=True, max_n=MAX_N, **SEQ)
        wrong += c.prediction == 0 or c.certified[r] or (c.prediction == 1 and c.radius > g)
    judge(wrong, trials, ALPHA, variant, noise=name)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_adaptive_radius(name, mode, variant, judge, monkeypatch):
    if variant == "unsound":
        monkeypatch.setattr(smoothing, "clopper_pearson_lower", lambda k, n, a: k / n)
    g = 0.15
    sm = fastcert.Smooth(FirstCoordinate(), 2, NOISES[name])
    x = torch.tensor([g, 0.5])
    trials = TRIALS[mode]
    wrong = informative = 0
    for s in range(trials):
        c = sm.certify(x, n=MAX_N, alpha=ALPHA, seed=s, sequential=True, max_n=MAX_N, mode="adaptive", **SEQ)
        informative += c.prediction == 1
        wrong += c.prediction == 0 or (c.prediction == 1 and c.radius > g)
    assert informative > trials // 2
    judge(wrong, trials, ALPHA, variant, noise=name)
