"""Shared fixtures: small models with known smoothed behaviour, and a digits checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
from testing import HalfSpace


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
