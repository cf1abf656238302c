"""Triton kernels of the IBP engine (fp32 arithmetic), compiled on demand by :func:`build`.

Intervals travel in a *stacked* layout: one tensor whose dimension 1 holds the centers in its first
half and the radii in its second half, (B, 2C, H, W) for images and (B, 2D) for vectors. Flatten
keeps it (the flat row is [centers | radii]), average pools act on it per channel unchanged, and a
convolution with weights cat([W, |W|]) and twice the groups maps it to the next stacked tensor in one
launch. The kernels here:

- ``input_box``: x (B, C*S), eps (B,) -> stacked (B, 2*C*S): clip [x - eps, x + eps] to
  [x_min, x_max], then an optional per-channel affine (input normalization), in one pass.
- ``interval_linear``: stacked (M, 2K), W and |W| (N, K) -> stacked (M, 2N): center W c and radius
  |W| r in one launch (two accumulators over the same K loop), epilogue: per-column scale/shift
  (bias and an eval/clean-batch BatchNorm folded together), then ReLU on the interval.
- ``interval_epilogue``: in place on stacked (B, 2C, S): per-channel scale/shift, + a residual
  branch, ReLU on the interval; what follows a convolution, or a residual add.

Kernels are plain functions here and become Triton kernels in :func:`build`, which sets
TRITON_INTERPRET while decorating (Triton reads it at decoration time): the interpreter (CPU tensors,
tests) and compiled kernels (CUDA) can coexist in one process.
"""
from __future__ import annotations

import os
import threading

import triton
import triton.language as tl


def input_box(
    # pointers
    x_ptr, eps_ptr, scale_ptr, shift_ptr, y_ptr,
    # sizes: C channels of S elements per sample, total = B * C * S
    C, S, total,
    # clipping range
    x_min, x_max,
    # meta
    BLOCK: tl.constexpr,
):
    # x: (B, C*S), eps: (B,), scale/shift: (C,) -> y: (B, 2*C*S) stacked
    pid = tl.program_id(0)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    cs = C * S
    b = idx // cs
    rem = idx - b * cs
    ch = rem // S
    x = tl.load(x_ptr + idx, mask=mask, other=0.0)
    e = tl.load(eps_ptr + b, mask=mask, other=0.0)
    lo = tl.maximum(x - e, x_min)
    hi = tl.minimum(x + e, x_max)
    sc = tl.load(scale_ptr + ch, mask=mask, other=1.0)
    sh = tl.load(shift_ptr + ch, mask=mask, other=0.0)
    c = (hi + lo) * 0.5 * sc + sh
    r = (hi - lo) * 0.5 * tl.abs(sc)
    off = b * 2 * cs + rem
    tl.store(y_ptr + off, c, mask=mask)
    tl.store(y_ptr + off + cs, r, mask=mask)


def interval_linear(
    # pointers
    x_ptr, w_ptr, wabs_ptr, scale_ptr, shift_ptr, y_ptr,
    # sizes
    M, N, K,
    # strides: rows of x (M, 2K) and y (M, 2N); W and |W| are (N, K) contiguous
    stride_xm, stride_ym,
    # meta
    RELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_ERR: tl.constexpr = False, err_ptr=None,  # sound mode only: per-channel error bound (fastcert.ibp.sound)
):
    # x: stacked (M, 2K) -> y: stacked (M, 2N); y_c = scale * (W x_c) + shift, y_r = |scale| (|W| x_r)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # tl.full, not tl.zeros: tl.zeros is itself a @jit function, which the interpreter cannot call
    # when triton.language was imported before TRITON_INTERPRET was set (one test process)
    acc_c = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    acc_r = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        xmask = (rm[:, None] < M) & (kk[None, :] < K)
        xrow = x_ptr + rm[:, None] * stride_xm + kk[None, :]
        xc = tl.load(xrow, mask=xmask, other=0.0)
        xr = tl.load(xrow + K, mask=xmask, other=0.0)
        wmask = (kk[:, None] < K) & (rn[None, :] < N)
        woff = rn[None, :] * K + kk[:, None]
        w = tl.load(w_ptr + woff, mask=wmask, other=0.0)
        wa = tl.load(wabs_ptr + woff, mask=wmask, other=0.0)
        # ieee: TF32 would round the inputs to 10 mantissa bits, far beyond the 1e-5 contract
        acc_c = tl.dot(xc, w, acc_c, input_precision="ieee")
        acc_r = tl.dot(xr, wa, acc_r, input_precision="ieee")
    nmask = rn < N
    sc = tl.load(scale_ptr + rn, mask=nmask, other=1.0)
    sh = tl.load(shift_ptr + rn, mask=nmask, other=0.0)
    c = acc_c * sc[None, :] + sh[None, :]
    r = acc_r * tl.abs(sc)[None, :]
    if HAS_ERR:  # sound mode: the per-column rounding-error bound (fastcert.ibp.sound), ordinary float ops
        r = r + tl.load(err_ptr + rn, mask=nmask, other=0.0)[None, :]
    if RELU:
        lo = tl.maximum(c - r, 0.0)
        hi = tl.maximum(c + r, 0.0)
        c = (hi + lo) * 0.5
        r = (hi - lo) * 0.5
    ymask = (rm[:, None] < M) & nmask[None, :]
    yrow = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    tl.store(yrow, c, mask=ymask)
    tl.store(yrow + N, r, mask=ymask)


def interval_epilogue(
    # pointers (y may alias out; add is ignored unless HAS_ADD, scale/shift unless HAS_AFFINE)
    y_ptr, add_ptr, scale_ptr, shift_ptr, out_ptr,
    # sizes: C channels of S elements per sample, total = B * C * S
    C, S, total,
    # meta
    HAS_AFFINE: tl.constexpr, HAS_ADD: tl.constexpr, RELU: tl.constexpr, BLOCK: tl.constexpr,
    HAS_ERR: tl.constexpr = False, err_ptr=None,  # sound mode only: per-channel error bound (fastcert.ibp.sound)
):
    # y, add, out: stacked (B, 2C, S); out = relu_interval(affine(y) + add)
    pid = tl.program_id(0)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    cs = C * S
    b = idx // cs
    rem = idx - b * cs
    off = b * 2 * cs + rem
    c = tl.load(y_ptr + off, mask=mask, other=0.0)
    r = tl.load(y_ptr + off + cs, mask=mask, other=0.0)
    if HAS_AFFINE:
        ch = rem // S
        sc = tl.load(scale_ptr + ch, mask=mask, other=1.0)
        sh = tl.load(shift_ptr + ch, mask=mask, other=0.0)
        c = c * sc + sh
        r = r * tl.abs(sc)
    if HAS_ERR:  # sound mode: per-channel rounding-error bound added to the radius
        r = r + tl.load(err_ptr + rem // S, mask=mask, other=0.0)
    if HAS_ADD:
        c = c + tl.load(add_ptr + off, mask=mask, other=0.0)
        r = r + tl.load(add_ptr + off + cs, mask=mask, other=0.0)
    if RELU:
        lo = tl.maximum(c - r, 0.0)
        hi = tl.maximum(c + r, 0.0)
        c = (hi + lo) * 0.5
        r = (hi - lo) * 0.5
    tl.store(out_ptr + off, c, mask=mask)
    tl.store(out_ptr + off + cs, r, mask=mask)


_BUILT: dict = {}
_LOCK = threading.Lock()


def build(interpret: bool) -> dict:
    """The three kernels, interpreted (``interpret=True``) or compiled for the GPU; cached."""
    with _LOCK:
        if interpret not in _BUILT:
            old = os.environ.get("TRITON_INTERPRET")
            os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
            try:
                _BUILT[interpret] = {f.__name__: triton.jit(f) for f in (input_box, interval_linear, interval_epilogue)}
            finally:
                if old is None:
                    del os.environ["TRITON_INTERPRET"]
                else:
                    os.environ["TRITON_INTERPRET"] = old
        return _BUILT[interpret]
