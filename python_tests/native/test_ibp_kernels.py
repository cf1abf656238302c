"""The fused interval ReLU and CROWN kernels (csrc/ibp) against plain numpy, and their argument checks (both in
fastcert._native and in the compiled module itself)."""
from __future__ import annotations

import numpy as np
import pytest

from fastcert import _core, _native


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 16384, 16385, 100_003])
def test_interval_relu_matches_numpy_bit_for_bit(n, dtype):
    rng = np.random.default_rng(n)
    c = rng.standard_normal(n).astype(dtype)
    r = rng.random(n).astype(dtype)
    c[::11] = np.nan  # NaN propagates, as torch's clamp
    lo, hi = np.maximum(c - r, 0), np.maximum(c + r, 0)
    want_c, want_r = (hi + lo) * dtype(0.5), (hi - lo) * dtype(0.5)
    co, ro = np.empty_like(c), np.empty_like(r)
    _native.interval_relu(c, r, co, ro, threads=2)
    np.testing.assert_array_equal(co, want_c)
    np.testing.assert_array_equal(ro, want_r)
    _native.interval_relu(c, r, c, r)  # in place
    np.testing.assert_array_equal(c, want_c)
    np.testing.assert_array_equal(r, want_r)


def test_interval_relu_bad_arguments():
    a = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="r_out must have shape"):
        _native.interval_relu(a, a, a.copy(), np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="r must have dtype float32"):
        _native.interval_relu(a, a.astype(np.float64), a.copy(), a.copy())
    ro = a.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="c_out must be writeable"):
        _native.interval_relu(a, a, ro, a.copy())
    with pytest.raises(ValueError, match="same number of entries"):
        _core.interval_relu(a, a, a.copy(), np.zeros(6, np.float32), 1)  # the compiled module checks again


def _case(rng, B, K, F, dtype):
    lam = rng.standard_normal((B, K, F)).astype(dtype)
    lam[:, :, ::7] = 0.0  # exact zeros take the lower line
    lo = rng.standard_normal((B, F))
    hi = lo + rng.random((B, F)) * 2
    unstable = (lo < 0) & (hi > 0)
    a_u = np.where(unstable, hi / np.where(unstable, hi - lo, 1), lo >= 0).astype(dtype)
    a_l = np.where(unstable, hi > -lo, lo >= 0).astype(dtype)
    t = np.where(unstable, -lo, 0).astype(dtype)
    return lam, a_l, a_u, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,K,F", [(1, 1, 1), (3, 5, 7), (2, 18, 513), (4, 3, 1030)])
def test_relu_back_matches_numpy(B, K, F, dtype):
    rng = np.random.default_rng(B * 1000 + F)
    lam, a_l, a_u, t = _case(rng, B, K, F, dtype)
    bias = rng.standard_normal((B, K)).astype(dtype)
    new = lam * np.where(lam >= 0, a_l[:, None], a_u[:, None])
    want_bias = bias.astype(np.float64) + (np.minimum(new, 0).astype(np.float64) * t[:, None]).sum(2)
    _native.crown_relu_back(lam, a_l, a_u, t, bias, threads=2)
    assert np.array_equal(lam, new)  # one multiply per entry: bit-identical
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(bias, want_bias, rtol=tol, atol=tol)


def test_relu_back_thread_count_does_not_change_the_result():
    rng = np.random.default_rng(3)
    lam, a_l, a_u, t = _case(rng, 5, 7, 2000, np.float32)
    outs = []
    for threads in (1, 2, 3):
        L, b = lam.copy(), np.zeros((5, 7), np.float32)
        _native.crown_relu_back(L, a_l, a_u, t, b, threads=threads)
        outs.append((L, b))
    for L, b in outs[1:]:
        assert np.array_equal(L, outs[0][0]) and np.array_equal(b, outs[0][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dual", [0, 1, 2])
def test_concretize_matches_numpy(dual, dtype):
    rng = np.random.default_rng(dual)
    B, K, F = 3, 4, 1500
    lam = rng.standard_normal((B, K, F)).astype(dtype)
    c, r, x = (rng.random((B, F)).astype(dtype) for _ in range(3))
    out = _native.crown_concretize(lam, c, r, x if dual else None, dual)
    L = lam.astype(np.float64)
    want = np.zeros((B, K, 4))
    want[..., 0] = (L * c[:, None]).sum(2)
    want[..., 1] = (np.abs(L) * r[:, None]).sum(2)
    if dual:
        want[..., 2] = (L * x[:, None]).sum(2)
        want[..., 3] = (L * L).sum(2) if dual == 1 else np.abs(L).max(2)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    assert out.dtype == np.float64 and out.shape == (B, K, 4)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_bad_arguments_raise_not_crash():
    lam = np.zeros((2, 3, 4), np.float32)
    ps = np.zeros((2, 4), np.float32)
    bias = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="a_u must have shape"):
        _native.crown_relu_back(lam, ps, np.zeros((2, 5), np.float32), ps, bias)
    with pytest.raises(TypeError, match="t must have dtype float32"):
        _native.crown_relu_back(lam, ps, ps, ps.astype(np.float64), bias)
    with pytest.raises(ValueError, match="bias must have shape"):
        _native.crown_relu_back(lam, ps, ps, ps, np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="lam must be C-contiguous"):
        _native.crown_relu_back(np.zeros((2, 4, 3), np.float32).transpose(0, 2, 1), ps, ps, ps, bias)
    ro = lam.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="lam must be writeable"):
        _native.crown_relu_back(ro, ps, ps, ps, bias)
    with pytest.raises(TypeError, match="lam must have dtype"):
        _native.crown_relu_back(lam.astype(np.float16), ps, ps, ps, bias)
    with pytest.raises(ValueError, match="dual must be"):
        _native.crown_concretize(lam, ps, ps, None, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        _native.crown_concretize(lam, ps, ps, np.zeros((2, 3), np.float32), 1)
    # the compiled module checks again: no read outside a buffer when called directly
    with pytest.raises(ValueError, match="a_l must have shape"):
        _core.crown_relu_back(lam, np.zeros((2, 2), np.float32), ps, ps, bias, 1)
    with pytest.raises(ValueError, match="bias must be writable"):
        b = bias.copy()
        b.flags.writeable = False
        _core.crown_relu_back(lam, ps, ps, ps, b, 1)
    with pytest.raises(ValueError, match="dual must be"):
        _core.crown_concretize(lam, ps, ps, None, 5, 1)
    with pytest.raises(TypeError):
        _core.crown_relu_back(lam, ps, ps, ps.astype(np.float64), bias, 1)  # no silent dtype conversion


def test_threads_and_overlap_are_refused_by_name():
    lam = np.zeros((2, 3, 4), np.float32)
    ps = np.zeros((2, 4), np.float32)
    bias = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="threads"):
        _native.crown_relu_back(lam, ps, ps.copy(), ps.copy(), bias, threads=10**6)
    with pytest.raises(ValueError, match="threads"):
        _native.crown_concretize(lam, ps, ps.copy(), threads=-1)
    flat = lam.reshape(-1)
    with pytest.raises(ValueError, match="lam and a_l must not overlap"):
        _native.crown_relu_back(lam, flat[:8].reshape(2, 4), ps, ps, bias)
    with pytest.raises(ValueError, match="lam and bias must not overlap"):
        _native.crown_relu_back(lam, ps, ps, ps, flat[:6].reshape(2, 3))
    c = np.zeros(10, np.float32)
    r = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="c_out and r_out must not overlap"):
        out = np.zeros(10, np.float32)
        _native.interval_relu(c, r, out, out)
    with pytest.raises(ValueError, match="c and r_out must not overlap"):
        _native.interval_relu(c, r, r, c)  # swapped outputs: not the same-index in-place update
    buf = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="c and c_out must not overlap"):
        _native.interval_relu(buf[:10], r, buf[2:12], np.zeros(10, np.float32))  # shifted: not exactly c
    # the compiled module refuses a converted x (dtype or layout) on its own
    with pytest.raises(ValueError, match="x must have lam's dtype"):
        _core.crown_concretize(lam, ps, ps, ps.astype(np.float64), 1, 1)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _core.crown_concretize(lam, ps, ps, np.zeros((4, 2), np.float32).T, 1, 1)
