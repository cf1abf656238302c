"""Sound smoothing for grid inputs (fastcert.smoothing.sound): the threshold table's law, the lattice
kernel's distribution and batch-size independence, the outward-rounded certificate, bad input."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import chi2

import fastcert
from fastcert import _native
from fastcert.smoothing.sound import (
    lattice_params,
    lattice_table,
    sound_radius,
    verified_cp_lower,
)
from fastcert.stats import clopper_pearson_lower


def _exact_law(sigma, denom, j_min, n):
    """P(J = j) of the clamped discretized Gaussian, j = j_min .. j_min + n (mpmath, 100 digits)."""
    mp = mpmath.mp.clone()
    mp.dps = 100
    h = mp.mpf(1) / denom
    cdf = [mp.ncdf((j_min + i + mp.mpf(0.5)) * h / mp.mpf(sigma)) for i in range(n)]
    edges = [mp.mpf(0)] + cdf + [mp.mpf(1)]
    return [edges[i + 1] - edges[i] for i in range(n + 1)], mp


@pytest.mark.parametrize("sigma,levels", [(0.25, 17), (0.5, 256), (0.12, 256)])
def test_table_law_matches_discretized_gaussian(sigma, levels):
    L, m, denom = lattice_params(levels)
    assert denom == L * m and 1.0 / denom <= 1.0 / 256 + 1e-15 and m == math.ceil(256 / L)
    thr, j_min, tv1 = lattice_table(sigma, denom)
    n = thr.size
    assert thr.dtype == np.uint64 and np.all(np.diff(thr.astype(object)) >= 0)
    assert j_min == -math.ceil(12 * sigma * denom) and n == -2 * j_min
    # symmetric table: t_i + t_{n-1-i} = 2^64 up to the two roundings
    for i in (0, n // 3, n // 2, n - 1):
        assert abs(int(thr[i]) + int(thr[n - 1 - i]) - 2**64) <= 2
    p, mp = _exact_law(sigma, denom, j_min, n)
    edges = [0] + [int(t) for t in thr] + [2**64]
    q = [mp.mpf(edges[i + 1] - edges[i]) / mp.mpf(2) ** 64 for i in range(n + 1)]
    l1 = sum(abs(a - b) for a, b in zip(p, q))
    tail = 2 * mp.ncdf(-(-j_min + mp.mpf(0.5)) / (mp.mpf(sigma) * denom))
    # TV(q, ideal) <= TV(q, clamped ideal) + tail <= tv1, and tv1 is tiny
    assert l1 / 2 + tail <= tv1
    assert tv1 < 1e-15 and tv1 >= n * 2.0**-66


def test_kernel_distribution_and_batch_independence():
    sigma, denom = 0.5, 4  # h = 1/4: J over [-24, 24], most mass in |J| <= 6
    thr, j_min, _ = lattice_table(sigma, denom)
    B, D = 4000, 50
    off = np.empty((B, D), dtype=np.int64)
    _native.lattice_sample_cpu(None, off, 11, 1, 0, thr, j_min, denom, offsets=True)
    assert off.min() >= j_min and off.max() <= j_min + thr.size
    p, _ = _exact_law(sigma, denom, j_min, thr.size)
    p = np.array([float(v) for v in p])
    counts = np.bincount(off.ravel() - j_min, minlength=thr.size + 1).astype(float)
    expect = p * off.size
    keep = expect >= 5  # pool the rare tail cells into one bin
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expect[keep], expect[~keep].sum())
    stat = float(((obs - exp) ** 2 / exp).sum())
    assert chi2.sf(stat, len(obs) - 1) > 1e-4, stat
    assert abs(off.mean()) < 0.02 and abs(off.std() - sigma * denom) < 0.02
    # chunked sampling equals one-shot sampling; the float output is (base + J) / denom of the same J
    chunk = np.empty_like(off)
    for s in range(0, B, 333):
        b = min(333, B - s)
        _native.lattice_sample_cpu(None, chunk[s:s + b], 11, 1, s, thr, j_min, denom, offsets=True)
    assert np.array_equal(chunk, off)
    base = (np.arange(D, dtype=np.int64) % 5) * 3
    out = np.empty((B, D), dtype=np.float32)
    _native.lattice_sample_cpu(base, out, 11, 1, 0, thr, j_min, denom)
    assert np.array_equal(out, ((base + off).astype(np.float64) / denom).astype(np.float32))
    # a different stream or seed gives different samples
    other = np.empty_like(off)
    _native.lattice_sample_cpu(None, other, 11, 2, 0, thr, j_min, denom, offsets=True)
    assert not np.array_equal(other, off)


def _linear(d=64, classes=10, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, classes))


def test_sound_certify_batch_independent_and_recorded():
    model = _linear()
    x = torch.randint(0, 17, (1, 8, 8)).float() / 16
    sm = fastcert.Smooth(model, 10, fastcert.Gaussian(0.25), sound=True, levels=17)
    a = sm.certify(x, 50, 3000, 0.001, 1000, seed=5)
    b = sm.certify(x, 50, 3000, 0.001, 7, seed=5)
    assert a == b
    assert a.extra["sound"] is True and a.extra["levels"] == 17
    assert 0 < a.extra["tv_correction"] < 1e-12
    assert a.p_lower < a.extra["p_lower_sampled"] <= clopper_pearson_lower(int(a.counts[a.prediction]), 3000, 0.001)
    if a.prediction != -1:
        assert a.radius < 0.25 * float(mpmath.sqrt(2) * mpmath.erfinv(2 * mpmath.mpf(a.p_lower) - 1))
        assert a.radii["l2"] == a.radius and a.radii["linf"] < a.radius / 8
    assert sm.predict(x, 500, 0.001, 100, seed=1) == sm.predict(x, 500, 0.001, 250, seed=1)
    # the ordinary mode on the same model and point: same class, radius close (independent samples)
    plain = fastcert.Smooth(model, 10, fastcert.Gaussian(0.25)).certify(x, 50, 3000, 0.001, 1000, seed=5)
    assert plain.prediction == a.prediction and "sound" not in plain.extra


def test_verified_bounds_are_below_the_exact_ones():
    mp = mpmath.mp.clone()
    mp.dps = 60
    for k, n in [(9990, 10000), (10000, 10000), (520, 1000), (1, 50)]:
        p = verified_cp_lower(k, n, 0.001)
        assert p <= clopper_pearson_lower(k, n, 0.001)
        tail = mp.betainc(k, n - k + 1, 0, mp.mpf(p), regularized=True) if n <= 1000 else None
        if tail is not None:
            assert tail <= mp.mpf(0.001)
    assert verified_cp_lower(10000, 10000, 0.001) ** 10000 <= 0.001
    for p in (0.5000001, 0.6, 0.9, 0.999999):
        r = sound_radius(p, 0.25)
        assert r < 0.25 * float(mp.sqrt(2) * mp.erfinv(2 * mp.mpf(p) - 1))
        assert r > 0.25 * float(mp.sqrt(2) * mp.erfinv(2 * mp.mpf(p) - 1)) * (1 - 1e-12)
    assert sound_radius(0.5, 1.0) == 0.0


def test_bad_input():
    model = _linear()
    with pytest.raises(ValueError, match="noise"):
        fastcert.Smooth(model, 10, fastcert.Laplace(0.5), sound=True)
    with pytest.raises(ValueError, match="levels"):
        fastcert.Smooth(model, 10, fastcert.Gaussian(0.25), sound=True, levels=1)
    with pytest.raises(TypeError, match="levels"):
        fastcert.Smooth(model, 10, fastcert.Gaussian(0.25), sound=True, levels=2.5)
    with pytest.raises(TypeError, match="sound"):
        fastcert.Smooth(model, 10, fastcert.Gaussian(0.25), sound="yes")
    sm = fastcert.Smooth(model, 10, fastcert.Gaussian(0.25), sound=True, levels=17)
    off_grid = torch.full((1, 8, 8), 0.5)
    off_grid[0, 0, 3] = 0.51
    with pytest.raises(ValueError, match="x must lie on the grid.*coordinate 3"):
        sm.certify(off_grid, 10, 100, 0.001, 100)
    with pytest.raises(ValueError, match="x must lie on the grid"):
        sm.predict(torch.full((1, 8, 8), 1.0625), 100, 0.001, 100)
    with pytest.raises(ValueError, match="x must lie on the grid"):
        sm.certify(torch.full((1, 8, 8), -0.0625), 10, 100, 0.001, 100)
    x = torch.zeros(1, 8, 8)
    with pytest.raises(ValueError, match="sequential"):
        sm.certify(x, 10, 100, 0.001, 100, radii=[0.1], sequential=True)
    with pytest.raises(ValueError, match="k"):
        sm.certify_topk(x, 2, 10, 100, 0.001, 100)
    with pytest.raises(ValueError, match="measure"):
        sm.sample_counts(x, 10, 10, seed=0, cls=0, measure="score")
    thr, j_min, _ = lattice_table(0.25, 256)
    out = np.empty((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="base"):
        _native.lattice_sample_cpu(np.zeros(3, dtype=np.int32), out, 0, 0, 0, thr, j_min, 256)
    with pytest.raises(ValueError, match="out"):
        _native.lattice_sample_cpu(np.zeros(4, dtype=np.int64), out, 0, 0, 0, thr, j_min, 256)
    with pytest.raises(ValueError, match="denom"):
        _native.lattice_sample_cpu(np.zeros(3, dtype=np.int64), out, 0, 0, 0, thr, j_min, 0)
    with pytest.raises(ValueError, match="non-decreasing"):
        _native.lattice_sample_cpu(np.zeros(3, dtype=np.int64), out, 0, 0, 0, thr[::-1].copy(), j_min, 256)
    with pytest.raises(ValueError, match="base value"):
        _native.lattice_sample_cpu(np.full(3, 2**52, dtype=np.int64), out, 0, 0, 0, thr, j_min, 256)
    with pytest.raises(TypeError, match="thresholds"):
        _native.lattice_sample_cpu(np.zeros(3, dtype=np.int64), out, 0, 0, 0, thr.astype(np.int64), j_min, 256)
