"""Triton kernels for interval bound propagation.

One kernel, ``interval_linear``, does what the torch path does in several passes for a Linear
layer: the center product c W^T + b and the radius product r |W|^T in one launch (two accumulators
over the same K loop, |W| kept alongside W and reused while W is unchanged), with the interval ReLU
of the next layer fused into the epilogue. Convolutions, batch norm and pooling go through the torch
ops (documented limitation: convolutions are not fused). No backward: ``fastcert.ibp_bounds`` falls
back to the torch path whenever gradients are needed. Arithmetic is fp32 with IEEE dot products (no
TF32), so the two backends agree to ~1e-5.

On a CPU the kernels run only under TRITON_INTERPRET=1 (set before this module is imported); they
are never launched on CPU tensors otherwise.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .graph import Op, clean_forward, needs_clean_pass
from .propagate import _affine_box, input_box


@triton.jit
def _interval_linear_kernel(
    # pointers
    c_ptr, r_ptr, w_ptr, wabs_ptr, b_ptr, oc_ptr, or_ptr,
    # sizes: (M, K) inputs, (N, K) weights
    M, N, K,
    # strides
    stride_cm, stride_ck, stride_rm, stride_rk, stride_wn, stride_wk, stride_om, stride_on,
    # meta-parameters
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # c, r: (M, K) -> oc, or: (M, N); oc = c W^T + b, or = r |W|^T, then optionally the interval ReLU
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc_c = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        in_mask = (rm[:, None] < M) & (kk[None, :] < K)
        w_mask = (kk[:, None] < K) & (rn[None, :] < N)
        c = tl.load(c_ptr + rm[:, None] * stride_cm + kk[None, :] * stride_ck, mask=in_mask, other=0.0)
        r = tl.load(r_ptr + rm[:, None] * stride_rm + kk[None, :] * stride_rk, mask=in_mask, other=0.0)
        w = tl.load(w_ptr + rn[None, :] * stride_wn + kk[:, None] * stride_wk, mask=w_mask, other=0.0)
        wa = tl.load(wabs_ptr + rn[None, :] * stride_wn + kk[:, None] * stride_wk, mask=w_mask, other=0.0)
        acc_c += tl.dot(c, w, input_precision="ieee")
        acc_r += tl.dot(r, wa, input_precision="ieee")
    if HAS_BIAS:
        acc_c += tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if RELU:
        lo = tl.maximum(acc_c - acc_r, 0.0)
        hi = tl.maximum(acc_c + acc_r, 0.0)
        acc_c = (hi + lo) * 0.5
        acc_r = (hi - lo) * 0.5
    out_mask = (rm[:, None] < M) & (rn[None, :] < N)
    offs = rm[:, None] * stride_om + rn[None, :] * stride_on
    tl.store(oc_ptr + offs, acc_c, mask=out_mask)
    tl.store(or_ptr + offs, acc_r, mask=out_mask)


# Block sizes: 32 keeps the interpreter cheap and every tl.dot legal (>= 16); 64x64x32 suits sm_80/90.
def _blocks(device: torch.device):
    return (64, 64, 32) if device.type == "cuda" else (32, 32, 32)


_ABS_CACHE: dict = {}


def _abs_weight(w: torch.Tensor) -> torch.Tensor:
    """|W| kept alongside W, recomputed only when W changes (tensor version counter)."""
    key = (w.data_ptr(), tuple(w.shape), w.device)
    hit = _ABS_CACHE.get(key)
    if hit is not None and hit[0] == w._version:
        return hit[1]
    wa = w.detach().abs().contiguous()
    _ABS_CACHE[key] = (w._version, wa)
    return wa


def interval_linear(c: torch.Tensor, r: torch.Tensor, weight: torch.Tensor, bias, relu: bool):
    """Launcher: c, r (M, K) float32; weight (N, K); bias (N,) or None -> (center, radius) (M, N)."""
    assert c.shape == r.shape and c.dim() == 2 and weight.dim() == 2 and c.shape[1] == weight.shape[1]
    c = c.contiguous().float()
    r = r.contiguous().float()
    w = weight.detach().contiguous().float()
    wa = _abs_weight(weight).float()
    M, K = c.shape
    N = w.shape[0]
    oc = torch.empty((M, N), device=c.device, dtype=torch.float32)
    orr = torch.empty_like(oc)
    bm, bn, bk = _blocks(c.device)
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    b = bias.detach().contiguous().float() if bias is not None else oc  # dummy pointer when no bias
    _interval_linear_kernel[grid](c, r, w, wa, b, oc, orr, M, N, K,
                                  c.stride(0), c.stride(1), r.stride(0), r.stride(1), w.stride(0), w.stride(1),
                                  oc.stride(0), oc.stride(1),
                                  HAS_BIAS=bias is not None, RELU=relu, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    return oc, orr


def _run(ops: list[Op], c, r, stats):
    i = 0
    while i < len(ops):
        op = ops[i]
        if op.kind == "linear":
            fuse = i + 1 < len(ops) and ops[i + 1].kind == "relu"
            c, r = interval_linear(c, r, op.module.weight, op.module.bias, fuse)
            i += 2 if fuse else 1
            continue
        if op.kind == "relu":
            lo, hi = torch.relu(c - r), torch.relu(c + r)
            c, r = (hi + lo) / 2, (hi - lo) / 2
        elif op.kind == "residual":
            c1, r1 = _run(op.main, c, r, stats)
            c2, r2 = _run(op.shortcut, c, r, stats)
            c, r = c1 + c2, r1 + r2
        else:
            c, r = _affine_box(op, c, r, stats)
        i += 1
    return c, r


@torch.no_grad()
def ibp_triton(ops: list[Op], x, eps, C, x_min, x_max):
    """Same semantics as fastcert.ibp.propagate.ibp_torch, Linear layers on the Triton kernel."""
    stats: dict = {}
    if needs_clean_pass(ops):
        clean_forward(ops, x, stats)
    c, r = input_box(x, eps, x_min, x_max)
    if C is not None and ops and ops[-1].kind == "linear":
        c, r = _run(ops[:-1], c, r, stats)
        lin = ops[-1].module
        W = torch.matmul(C, lin.weight)  # C folded into the last layer (per-sample weights: torch)
        b = torch.matmul(C, lin.bias) if lin.bias is not None else 0.0
        c_out = torch.matmul(W, c.unsqueeze(-1)).squeeze(-1) + b
        r_out = torch.matmul(W.abs(), r.unsqueeze(-1)).squeeze(-1)
        return c_out - r_out, c_out + r_out
    c, r = _run(ops, c, r, stats)
    if C is not None:
        c_out = torch.matmul(C, c.unsqueeze(-1)).squeeze(-1)
        r_out = torch.matmul(C.abs(), r.unsqueeze(-1)).squeeze(-1)
        return c_out - r_out, c_out + r_out
    return c - r, c + r
