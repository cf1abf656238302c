"""Soundness of sequential and input-adaptive certification (Smooth.certify(..., sequential=True)).

Base classifier f(z) = 1 iff z_0 > 0, Gaussian and Laplace noise: the smoothed classifier is the same
half-space and the true radius at x_0 = g is g (see test_sound_smoothing.py). Mode "radii": the
target radius r sits a hair above the truth (g = r (1 - 1e-6)), so certifying r is wrong, and the
probability at x equals the threshold of r up to 1e-6: the tightest possible case. Mode "adaptive":
the returned radius must not exceed g, i.e. the confidence sequence's bound B must not exceed the
true probability (tight for any g).

Mildly unsound control (both modes): every look at the full alpha instead of its alpha-spending
level (naive repeated testing, no union bound over the looks; ``sequential.look_levels``
monkeypatched). Its failure rate is not a closed form (early stopping, futility, the adaptive
stopping rule), so ``SOUND_RATE_SIM`` / ``CTRL_RATE_SIM`` record simulations (SOUNDNESS.md says
how); the full-mode trial counts leave a wide margin for their error.
"""
from __future__ import annotations

import pytest
import torch
from testing import FirstCoordinate

import fastcert
from fastcert.smoothing import sequential

ALPHA = 0.1
SEQ = {"n0": 20, "batch_size": 2048, "first_n": 32}
MAX_N = 2000
TRIALS = {"fast": 200, "full": 1500}
TRIALS_ADAPTIVE = {"fast": 200, "full": 1500}
NOISES = {"gaussian": fastcert.Gaussian(0.25), "laplace": fastcert.Laplace(0.25)}
# simulated failure rates (simulate_rates.py: 3,000 runs of Smooth.certify on seeds 1,000,000 + i,
# standard error <= 0.009; re-run it when the sequential procedure changes; SOUNDNESS.md)
SOUND_RATE_SIM = {"radii": {"gaussian": 0.0390, "laplace": 0.0517},
                  "adaptive": {"gaussian": 0.0117, "laplace": 0.0140}}
CTRL_RATE_SIM = {"radii": {"gaussian": 0.3300, "laplace": 0.3347},
                 "adaptive": {"gaussian": 0.2713, "laplace": 0.2817}}
G_ADAPTIVE = 0.15


def _per_look_alpha(monkeypatch):
    """The control: every look at the full alpha (the real schedule, levels not spent)."""
    monkeypatch.setattr(sequential, "look_levels", lambda num, alpha, share: [alpha] * num)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_sequential_radii(name, mode, variant, judge, monkeypatch):
    if variant == "control":
        _per_look_alpha(monkeypatch)
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
    if variant == "control":
        _per_look_alpha(monkeypatch)
    g = G_ADAPTIVE
    sm = fastcert.Smooth(FirstCoordinate(), 2, NOISES[name])
    x = torch.tensor([g, 0.5])
    trials = TRIALS_ADAPTIVE[mode]
    wrong = informative = 0
    for s in range(trials):
        c = sm.certify(x, n=MAX_N, alpha=ALPHA, seed=s, sequential=True, max_n=MAX_N, mode="adaptive", **SEQ)
        informative += c.prediction == 1
        wrong += c.prediction == 0 or (c.prediction == 1 and c.radius > g)
    assert informative > trials // 2
    judge(wrong, trials, ALPHA, variant, noise=name)


def sizing_rows():
    rows = []
    for mode, trials in (("radii", TRIALS), ("adaptive", TRIALS_ADAPTIVE)):
        for name in sorted(NOISES):
            rows.append((f"sequential {mode} {name}", trials, ALPHA, SOUND_RATE_SIM[mode][name],
                         CTRL_RATE_SIM[mode][name]))
    return rows


def test_sizing(decision):
    for case, trials, a_ref, a_sound, a_ctrl in sizing_rows():
        assert a_sound <= a_ref, case
        s = decision.sizing(trials["full"], a_ref, a_ctrl)
        assert s["pass"] >= 1 - decision.P_FALSE_ALARM and s["power"] >= decision.MIN_POWER, (case, s)
