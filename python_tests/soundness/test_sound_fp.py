"""Floating-point soundness of Gaussian smoothing (issue 18): a false certificate of the ordinary mode,
and the sound mode (``Smooth(..., sound=True)``, fastcert.smoothing.sound) not producing it.

The construction (our own, in the spirit of Voráček & Hein 2023). Inputs on the 8-bit grid, d = 784:
x' = (1/255, ..., 1/255) and x = 0, so ||x - x'||_2 = 28/255 ~ 0.110; sigma = 12.5/255 ~ 0.049.
The ordinary mode feeds the network y = float32(x + float32 noise n). At x = 0, y = n exactly, and a
float32 n with |n| < delta/2 (delta = float32(1/255) ~ 2^-8) has ulp <= 2^-33, so it is often NOT a
multiple of 2^-32. At x' = delta, |y| < delta/2 needs n in (-3 delta/2, -delta/2): then delta + n is
exact (Sterbenz) and a multiple of 2^-32 (delta is a multiple of 2^-31, n of 2^-32). The base
classifier answers 1 iff some coordinate has |y| < delta/2 and y not a multiple of 2^-32, else 0.
At x' it never answers 1, so the ordinary mode certifies class 0 with radius ~3 sigma > 0.110; at x
nearly every sample has such a coordinate, so the ordinary smoothed prediction at x is 1: the
certificate is false for the smoothed classifier as the ordinary mode computes it. In exact
arithmetic the event has probability 0 everywhere, so no real-arithmetic certificate is contradicted;
the sound mode realizes an exact-arithmetic process, so Cohen's theorem (and the module's proof)
apply: whatever it certifies at x' must hold at x.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastcert

D = 784
DELTA = float(np.float32(1.0 / 255.0))
SIGMA = 12.5 / 255.0


class LowBits(torch.nn.Module):
    """Class 1 iff some coordinate y has |y| < DELTA/2 and y * 2^32 is not an integer."""

    def forward(self, y):
        y = y.reshape(y.shape[0], -1)
        scaled = y * 2.0**32  # exact in float32: a power-of-two scaling
        hit = ((y.abs() < DELTA / 2) & (torch.frac(scaled) != 0)).any(dim=1).float()
        return torch.stack([1.0 - hit, hit], dim=1)


@pytest.mark.parametrize("mode", ["fast", pytest.param("full", marks=pytest.mark.slow)])
def test_float32_false_certificate_not_produced_by_sound_mode(mode):
    n = 2000 if mode == "fast" else 100_000
    x_far = torch.full((D,), 1.0 / 255.0)   # x': the certified point
    x_near = torch.zeros(D)                 # x: a grid point inside the ordinary radius
    dist = float(torch.linalg.vector_norm(x_far - x_near))
    model = LowBits()

    # control: the ordinary (float32) mode produces the false certificate
    plain = fastcert.Smooth(model, 2, fastcert.Gaussian(SIGMA))
    cert = plain.certify(x_far, n0=100, n=n, alpha=0.001, batch_size=1000, seed=1)
    assert cert.prediction == 0 and cert.radius > dist, (cert.prediction, cert.radius, dist)
    assert plain.predict(x_near, n=1000, alpha=0.001, batch_size=1000, seed=2) == 1

    # sound mode: whatever it certifies at x' holds at x (its own smoothed prediction there)
    sound = fastcert.Smooth(model, 2, fastcert.Gaussian(SIGMA), sound=True, levels=256)
    scert = sound.certify(x_far, n0=100, n=n, alpha=0.001, batch_size=1000, seed=1)
    assert scert.extra["sound"] is True
    if scert.prediction != -1 and scert.radius > dist:
        at_x = sound.predict(x_near, n=1000, alpha=0.001, batch_size=1000, seed=2)
        assert at_x in (scert.prediction, -1), (scert.prediction, scert.radius, at_x)
    # the lattice inputs float32(z / 510) never carry the low-bit feature (|z / 510| < DELTA/2 means
    # z = 0), at x' as at x: the sound smoothed classifier is class 0 at both points
    counts_far, _ = sound.sample_counts(x_far, 500, 500, seed=3)
    counts_near, _ = sound.sample_counts(x_near, 500, 500, seed=3)
    assert counts_far.tolist() == [500, 0] and counts_near.tolist() == [500, 0]
