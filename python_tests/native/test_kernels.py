"""The fused sample-and-count kernels of fastcert._core against the distributions they claim and
against plain numpy counting."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fastcert import _core

G, L, U, DSC = _core.NOISE_GAUSSIAN, _core.NOISE_LAPLACE, _core.NOISE_UNIFORM, _core.NOISE_DISCRETE


def noise(B, D, ntype, scale=1.0, seed=7, stream=0, start=0, keep=0, K=0):
    out = np.empty((B, D), dtype=np.float32)
    _core.noise(out, seed, stream, start, ntype, scale, keep, K)
    return out


@pytest.mark.parametrize("D", [1, 3, 4, 5, 37, 784])
def test_gaussian_moments_and_ks(D):
    z = noise(max(20000 // D, 50), D, G, scale=1.0).ravel().astype(np.float64)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 6 * np.sqrt(2 / z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-4


def test_gaussian_scale_and_shift():
    x = np.linspace(0, 1, 10, dtype=np.float32)
    out = np.empty((50000, 10), dtype=np.float32)
    _core.sample(x, out, 3, 1, 0, G, 0.5)
    assert np.allclose(out.mean(0), x, atol=5 * 0.5 / np.sqrt(50000))
    assert np.allclose(out.std(0), 0.5, rtol=0.02)
    # coordinates are uncorrelated (including the Box-Muller partners k and k + G)
    c = np.corrcoef(out.T)
    assert np.max(np.abs(c - np.eye(10))) < 0.03


def test_gaussian_tails():
    z = noise(2000, 1000, G).ravel().astype(np.float64)
    for t in (2.0, 3.0, 4.0):
        p = 2 * stats.norm.sf(t)
        frac = np.mean(np.abs(z) > t)
        assert abs(frac - p) < 6 * np.sqrt(p / z.size) + 1e-6


def test_laplace_and_uniform_distributions():
    z = noise(400, 101, L, scale=1.0).ravel().astype(np.float64)
    assert stats.kstest(z, "laplace").pvalue > 1e-4
    u = noise(400, 101, U, scale=2.0).ravel().astype(np.float64)
    assert u.min() >= -2 and u.max() <= 2
    assert stats.kstest(u, "uniform", args=(-2, 4)).pvalue > 1e-4


@pytest.mark.parametrize("K", [1, 2, 255])
def test_discrete_frequencies(K):
    alpha = 0.7
    keep = int(alpha * 2**64)
    x = np.full(64, 0.0, dtype=np.float32)
    x[::2] = 1.0  # levels 0 and K
    out = np.empty((4000, 64), dtype=np.float32)
    _core.sample(x, out, 11, 0, 0, DSC, 1.0, keep, K)
    lv = np.rint(out * K).astype(int)
    assert np.all(np.abs(out * K - lv) < 1e-3)
    kept = lv == np.rint(x * K).astype(int)[None, :]
    assert abs(kept.mean() - alpha) < 5 * np.sqrt(alpha * (1 - alpha) / kept.size)
    if K > 1:  # replacements are uniform over the K other levels
        repl = lv[:, 1::2][~kept[:, 1::2]]  # coordinates at level 0 that moved
        hist = np.bincount(repl, minlength=K + 1)[1:]
        assert hist.min() > 0
        assert stats.chisquare(hist).pvalue > 1e-4


def test_deterministic_and_batch_independent():
    x = np.random.default_rng(0).random(50).astype(np.float32)
    whole = np.empty((100, 50), dtype=np.float32)
    _core.sample(x, whole, 42, 1, 0, G, 0.3)
    parts = np.empty((100, 50), dtype=np.float32)
    for s in range(0, 100, 7):
        b = min(7, 100 - s)
        _core.sample(x, parts[s:s + b], 42, 1, s, G, 0.3)
    assert np.array_equal(whole, parts)
    again = np.empty_like(whole)
    _core.sample(x, again, 42, 1, 0, G, 0.3)
    assert np.array_equal(whole, again)
    other_seed = np.empty_like(whole)
    _core.sample(x, other_seed, 43, 1, 0, G, 0.3)
    other_stream = np.empty_like(whole)
    _core.sample(x, other_stream, 42, 2, 0, G, 0.3)
    assert not np.array_equal(whole, other_seed) and not np.array_equal(whole, other_stream)
    # different streams are uncorrelated
    assert abs(np.corrcoef((whole - x).ravel(), (other_stream - x).ravel())[0, 1]) < 0.03


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_matches_numpy_argmax_with_ties(dtype, rng):
    logits = rng.integers(0, 4, size=(5000, 7)).astype(dtype)  # many ties
    counts = np.zeros(7, dtype=np.int64)
    assert _core.count(logits, counts) == 0
    want = np.bincount(np.argmax(logits, axis=1), minlength=7)  # numpy: first maximum
    assert np.array_equal(counts, want)
    _core.count(logits, counts)
    assert np.array_equal(counts, 2 * want)


def test_count_nan_rows_are_reported_not_counted():
    logits = np.array([[0, 1], [np.nan, 0], [2, 1], [1, np.nan]], dtype=np.float32)
    counts = np.zeros(2, dtype=np.int64)
    assert _core.count(logits, counts) == 2
    assert counts.tolist() == [1, 1]


def test_count_confidence_values(rng):
    logits = rng.normal(size=(300, 5)).astype(np.float32)
    counts = np.zeros(5, dtype=np.int64)
    sc = np.empty(300, np.float32)
    mg = np.empty(300, np.float32)
    _core.count(logits, counts, 2, sc, mg)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.allclose(sc, p[:, 2], atol=1e-6)
    other = np.delete(p, 2, axis=1).max(1)
    assert np.allclose(mg, p[:, 2] - other, atol=1e-6)


def test_bad_arguments_raise_not_crash():
    x = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="out.shape"):
        _core.sample(x, np.zeros((2, 5), np.float32), 0, 0, 0, G, 1.0)
    with pytest.raises(ValueError, match="scale"):
        _core.sample(x, np.zeros((2, 4), np.float32), 0, 0, 0, G, -1.0)
    with pytest.raises(ValueError, match="noise type"):
        _core.sample(x, np.zeros((2, 4), np.float32), 0, 0, 0, 9, 1.0)
    with pytest.raises(ValueError, match="K"):
        _core.sample(x, np.zeros((2, 4), np.float32), 0, 0, 0, DSC, 1.0, 0, 0)
    with pytest.raises(ValueError, match="counts"):
        _core.count(np.zeros((3, 4), np.float32), np.zeros(3, np.int64))
    with pytest.raises(TypeError):
        _core.count(np.zeros((3, 4), np.float32), np.zeros(4, np.int32))  # no silent dtype conversion
    with pytest.raises(ValueError, match="cls"):
        _core.count(np.zeros((3, 4), np.float32), np.zeros(4, np.int64), 7)
