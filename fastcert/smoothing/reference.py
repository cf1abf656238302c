"""Reference randomized smoothing, written the way the original code does it (Cohen et al.'s
``core.py``): repeat the input, ``randn_like`` a noise tensor, add, forward, argmax, and bincount on
the host every batch. It is the baseline of the benchmarks and an independent oracle for the tests;
it uses torch's global generator (seeded per call), so it is not sample-for-sample equal to the
Philox streams of fastcert, only equal in distribution. The noise itself comes from each noise's one
torch sampler, :meth:`fastcert.smoothing.noise.Noise.sample_torch` (also used by training).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm

from fastcert.smoothing.noise import NOISES, Gaussian


def reference_noise(x: torch.Tensor, batch: int, kind: str, scale: float) -> torch.Tensor:
    """x: (*shape) -> (batch, *shape): x repeated, then a noisy copy drawn by the noise's torch sampler
    (``kind`` "gaussian" | "laplace" | "uniform", ``scale`` its parameter) from the global generator."""
    if kind not in ("gaussian", "laplace", "uniform"):
        raise ValueError(f"kind must be 'gaussian', 'laplace' or 'uniform', got {kind!r}")
    rep = x.unsqueeze(0).repeat((batch,) + (1,) * x.dim())
    return NOISES[kind](scale).sample_torch(rep)


class ReferenceSmooth:
    """Cohen et al.'s Smooth: Gaussian noise, PREDICT and CERTIFY, host-side counting."""

    ABSTAIN = -1

    def __init__(self, model, num_classes: int, sigma: float):
        self.model = model
        self.num_classes = num_classes
        self.sigma = sigma
        self.noise = Gaussian(sigma)

    @torch.no_grad()
    def _sample_noise(self, x: torch.Tensor, num: int, batch_size: int) -> np.ndarray:
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for _ in range(math.ceil(num / batch_size)):
            this_batch = min(batch_size, num)
            num -= this_batch
            batch = x.unsqueeze(0).repeat((this_batch,) + (1,) * x.dim())
            predictions = self.model(self.noise.sample_torch(batch)).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=self.num_classes)
        return counts

    def certify(self, x, n0, n, alpha, batch_size, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        self.model.eval()
        counts0 = self._sample_noise(x, n0, batch_size)
        c_a = int(counts0.argmax())
        counts = self._sample_noise(x, n, batch_size)
        n_a = int(counts[c_a])
        p_a = float(beta.ppf(alpha, n_a, n - n_a + 1)) if n_a > 0 else 0.0
        if p_a < 0.5:
            return self.ABSTAIN, 0.0
        return c_a, float(self.sigma * norm.ppf(p_a))

    def predict(self, x, n, alpha, batch_size, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        self.model.eval()
        counts = self._sample_noise(x, n, batch_size)
        top2 = counts.argsort()[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return self.ABSTAIN
        return int(top2[0])
