"""Helpers shared by the test suite: stub models with a known smoothed behaviour, the devices and
dtypes this machine can test, and the location of the published logs in ../shared/data.

Imported as ``from testing import ...`` (python_tests/ is on sys.path through its conftest.py)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FASTCERT_SHARED_DATA", REPO.parent / "shared" / "data"))

# every device / float dtype the kernels are tested on here (CUDA only where a GPU is visible)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def shared_data(name: str) -> Path:
    """Path of a published log in ../shared/data; skips (naming the file) where the folder is absent,
    as in CI's clean clone, which holds the repository only."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"published data {name} not found under {SHARED_DATA} (set FASTCERT_SHARED_DATA)")
    return path


class FirstCoordinate(torch.nn.Module):
    """Two classes decided by the sign of the first coordinate (class 1 iff z_0 > 0): under any noise
    that is independent per coordinate, P(class 1 at x) is the noise's CDF at x_0."""

    def forward(self, z):
        v = z.reshape(z.shape[0], -1)[:, 0]
        return torch.stack([-v, v], 1)


class HalfSpace(torch.nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (class 1 on the positive side).

    Under N(0, sigma^2 I) noise, P(class 1 at x) = Phi((w.x + b) / (sigma ||w||)): the smoothed
    classifier is known in closed form and its exact l2 robustness radius is the distance to the
    hyperplane |w.x + b| / ||w||."""

    def __init__(self, w, b=0.0):
        super().__init__()
        self.w = torch.as_tensor(np.asarray(w, dtype=np.float32)).flatten()
        self.b = float(b)

    def forward(self, x):
        s = x.reshape(x.shape[0], -1) @ self.w + self.b
        return torch.stack([-s, s], 1)


def halfspace_model(w, tau) -> HalfSpace:
    """Class 0 iff w.z < tau (the half-space of the derived-radius oracles)."""
    return HalfSpace(w, -float(tau))
