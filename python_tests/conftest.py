"""Shared fixtures: small models with known smoothed behaviour, and a digits checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch


class HalfSpace(torch.nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (class 1 on the positive side).

    Under N(0, sigma^2 I) noise, P(class 1 at x) = Phi((w.x + b) / (sigma ||w||)): the smoothed
    classifier is known in closed form and its exact l2 robustness radius is the distance to the
    hyperplane |w.x + b| / ||w||."""

    def __init__(self, w, b=0.0):
        super().__init__()
        self.w = torch.as_tensor(w, dtype=torch.float32).flatten()
        self.b = float(b)

    def forward(self, x):
        s = x.reshape(x.shape[0], -1) @ self.w + self.b
        return torch.stack([-s, s], 1)


@pytest.fixture
def halfspace():
    return HalfSpace


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory):
    """A small CNN trained on digits with Gaussian noise (sigma = 0.25), a few seconds on a CPU."""
    from fastcert.data import load_dataset
    from fastcert.training.loop import train

    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    train("cnn_small", load_dataset("digits", "train"), method="gaussian", sigma=0.25, epochs=6,
          batch_size=128, seed=0, out=path, progress=False, log=lambda *_: None)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
