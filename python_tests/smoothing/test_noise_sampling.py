"""The one torch sampler of each noise (Noise.sample_torch, used by the reference path and by
noise-augmentation training) and the one derivation of all-norm radii (Noise.derived_radii)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastcert.smoothing.noise import Discrete, Gaussian, Laplace, Uniform
from fastcert.smoothing.reference import ReferenceSmooth, reference_noise
from fastcert.training.loop import augmentation_noise

N = 200_000


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("noise,var", [(Gaussian(0.5), 0.25), (Laplace(0.5), 2 * 0.25), (Uniform(0.5), 0.25 / 3)])
def test_continuous_moments(noise, var):
    x = torch.full((N,), 0.3, dtype=torch.float64)
    z = noise.sample_torch(x, _gen()) - x
    # mean 0 and the family's variance, within 5 standard errors
    assert abs(float(z.mean())) < 5 * math.sqrt(var / N)
    assert float(z.var()) == pytest.approx(var, rel=0.03)
    if isinstance(noise, Uniform):
        assert float(z.abs().max()) <= 0.5
    if isinstance(noise, Laplace):  # E|z| = scale
        assert float(z.abs().mean()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.5), Uniform(0.5), Discrete(0.8, 4)])
def test_same_generator_same_noise_dtype_shape(noise):
    x = torch.randint(0, 5, (3, 1, 4, 4)).to(torch.float32) / 4
    a, b = noise.sample_torch(x, _gen(7)), noise.sample_torch(x, _gen(7))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, noise.sample_torch(x, _gen(8)))


def test_discrete_keeps_or_moves_to_another_level():
    K, keep = 4, 0.8
    x = torch.randint(0, K + 1, (N,)).to(torch.float32) / K
    z = Discrete(keep, K).sample_torch(x, _gen())
    lv_x, lv_z = torch.round(x * K).long(), torch.round(z * K).long()
    assert torch.allclose(z * K, lv_z.float(), atol=1e-5)  # on the grid
    assert float((lv_x == lv_z).float().mean()) == pytest.approx(keep, abs=5 * math.sqrt(keep * (1 - keep) / N))
    # a replaced coordinate takes each of the K other levels with probability 1/K
    moved = lv_x != lv_z
    offset = (lv_z[moved] - lv_x[moved]) % (K + 1)  # in 1..K
    freq = np.bincount(offset.numpy(), minlength=K + 1)[1:] / int(moved.sum())
    np.testing.assert_allclose(freq, np.full(K, 1 / K), atol=0.01)


def test_training_and_reference_use_the_noise_sampler():
    x = torch.rand(64, 3)
    for method, noise in (("gaussian", Gaussian(0.3)), ("laplace", Laplace(0.3)), ("uniform", Uniform(0.3))):
        assert torch.equal(augmentation_noise(method, sigma=0.3).sample_torch(x, _gen(1)),
                           noise.sample_torch(x, _gen(1)))
        torch.manual_seed(3)
        ref = reference_noise(x[0], 5, method, 0.3)
        torch.manual_seed(3)
        assert torch.equal(ref, noise.sample_torch(x[0].repeat(5, 1)))
    assert augmentation_noise("none") is None
    d = augmentation_noise("discrete", keep=0.7, K=3)
    assert isinstance(d, Discrete) and d.K == 3 and float(d.keep) == 0.7
    with pytest.raises(ValueError, match="method"):
        augmentation_noise("ibp")
    with pytest.raises(ValueError, match="kind"):
        reference_noise(x[0], 2, "discrete", 0.5)
    assert ReferenceSmooth(torch.nn.Identity(), 3, 0.5).noise.sigma == 0.5


# ------------------------------------------------------------------------------------- derived radii
@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.5), Discrete(0.8, 4)])
@pytest.mark.parametrize("p", [0.3, 0.5, 0.6, 0.9, 0.999, 1.0])
def test_radii_are_the_derived_radii_of_the_own_radius(noise, p):
    d = 16
    r = noise.radius(p, d) if p > 0.5 else (0 if not isinstance(noise, Discrete) else -1)
    assert noise.radii(p, d) == noise.derived_radii(r, d)


@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.5), Uniform(0.5)])
def test_derived_radii_caps_l0_at_the_dimension(noise):
    d = 10
    big = noise.derived_radii(math.inf, d)
    assert big["l0"] == d and big[noise.norm] == math.inf
    assert noise.derived_radii(1e6, d)["l0"] == d
    assert noise.derived_radii(0.0, d) == {"l0": 0, "l1": 0.0, "l2": 0.0, "linf": 0.0}


def test_derived_radii_values():
    g = Gaussian(1.0).derived_radii(2.5, 100)  # l0: largest k with sqrt(k) < 2.5
    assert g == {"l2": 2.5, "l1": 6.25, "linf": 0.25, "l0": 6}
    lap = Laplace(1.0).derived_radii(3.0, 100)  # l0: largest k with k < 3
    assert lap == {"l1": 3.0, "l2": 0.3, "linf": 0.03, "l0": 2}
    assert Uniform(1.0).derived_radii(3.0, 100) == lap  # from the l1 radius alone
    # Uniform.radii certifies at least the l1-derived radii
    u = Uniform(1.0)
    for p in (0.6, 0.9, 0.99):
        own, der = u.radii(p, 9), u.derived_radii(u.radius(p, 9), 9)
        assert all(own[k] >= der[k] for k in own)
    disc = Discrete(0.8, 4)
    assert disc.derived_radii(-1, 5) == {"l0": 0, "l1": 0.0, "l2": 0.0, "linf": 0.0}
    assert disc.derived_radii(2, 5) == {"l0": 2, "l1": 0.75, "l2": math.sqrt(3) / 4, "linf": 0.25}
    assert disc.derived_radii(5, 5)["linf"] == math.inf
