"""The Triton path: the same bounds as the torch path, with fused passes (inference only).

What is fused (see ``_kernels`` for the stacked [centers | radii] layout):
- the input box: clip to [x_min, x_max] and the input normalization (or any leading per-channel
  affine) in one elementwise kernel;
- Linear: one Triton kernel computes W c and |W| r over the same K loop, with bias, any following
  BatchNorm (folded to a per-column scale/shift) and the ReLU on the interval in its epilogue;
- Conv2d: through torch (cuDNN), but as ONE grouped convolution of the stacked tensor with weights
  cat([W, |W|]) (no im2col), followed by one Triton epilogue kernel for bias + BatchNorm
  (+ residual add) + ReLU on the interval;
- residual blocks: the shortcut's result is added in the epilogue of the main branch's last layer,
  together with the block's final ReLU.
Pools and Flatten act on the stacked tensor directly (per channel, non-negative weights). The final
specification (C folded into the last Linear) runs in torch (a batched (B, m, D) product).

No backward: the caller (ibp_bounds) uses the torch path whenever a gradient is needed.
|W| and cat([W, |W|]) are memoized per module while the weight is exactly unchanged (torch_path.memo).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastcert.ibp.graph import Op, bn_affine
from fastcert.ibp.torch_path import abs_weight, memo, propagate

_BLOCK_EW = 1024  # elementwise kernels: 1024 elements per program (4 warps x 8 per thread x 32)


def _cat_weight(module) -> torch.Tensor:
    """cat([W, |W|]) of a Conv2d (memoized while W is unchanged)."""
    w = module.weight
    return memo(module, "cat", (w,), lambda: torch.cat([w.detach(), w.detach().abs()], 0).contiguous())


class _Runner:
    def __init__(self, kernels: dict, stats: dict):
        self.k = kernels
        self.stats = stats

    # -- launchers ----------------------------------------------------------------------------
    def box(self, x, eps, x_min, x_max, scale, shift):
        # x: (B, C, ...) float32, eps: (B,) float32, scale/shift: (1,) or (C,) float32 -> (B, 2C, ...)
        _check_launch("x", x, min_dim=2, contiguous=False)
        B = x.shape[0]
        per = x[0].numel()
        C = scale.numel()  # 1 (no affine, or a scalar one) or the channel count
        _check_launch("eps", eps, device=x.device, contiguous=False)
        if eps.numel() != B:
            raise ValueError(f"eps: one budget per sample is needed, got {eps.numel()} for a batch of {B}")
        _check_launch("scale", scale, device=x.device, contiguous=False)
        _check_launch("shift", shift, device=x.device, contiguous=False)
        if C not in (1, x.shape[1]) or shift.numel() != C:
            raise ValueError(f"scale/shift: 1 or {x.shape[1]} (channel) entries each, got {C} and {shift.numel()}")
        S = per // C
        y = torch.empty((B, 2 * per), dtype=torch.float32, device=x.device)
        total = x.numel()
        grid = (triton_cdiv(total, _BLOCK_EW),)
        self.k["input_box"][grid](x.contiguous(), eps.contiguous(), scale.contiguous(), shift.contiguous(), y,
                                  C, S, total, float(x_min), float(x_max), BLOCK=_BLOCK_EW)
        # [centers | radii] per sample is the channel-stacked (B, 2C, ...) layout
        return y.view(B, 2 * x.shape[1], *x.shape[2:])

    def epilogue(self, y, scale=None, shift=None, add=None, relu=False, out=None, err=None):
        # y: (B, 2C, ...) stacked [centers | radii] float32, contiguous; scale/shift: (C,); add, out: like y
        _check_launch("y", y, min_dim=2)
        B, C2 = y.shape[0], y.shape[1]
        if C2 % 2:
            raise ValueError(f"y: the stacked [centers | radii] layout needs an even dim 1, got shape {tuple(y.shape)}")
        C = C2 // 2
        for name, t in (("scale", scale), ("shift", shift), ("err", err)):
            if t is not None:
                _check_launch(name, t, device=y.device)
                if t.numel() != C:
                    raise ValueError(f"{name}: {C} (channel) entries needed, got {t.numel()}")
        for name, t in (("add", add), ("out", out)):
            if t is not None:
                _check_launch(name, t, device=y.device)
                if t.shape != y.shape:
                    raise ValueError(f"{name}: shape {tuple(t.shape)} differs from y's {tuple(y.shape)}")
        S = y[0].numel() // C2
        total = B * C * S
        out = y if out is None else out
        dummy = y
        grid = (triton_cdiv(total, _BLOCK_EW),)
        self.k["interval_epilogue"][grid](
            y, add if add is not None else dummy, scale if scale is not None else dummy,
            shift if shift is not None else dummy, out, C, S, total,
            HAS_AFFINE=scale is not None, HAS_ADD=add is not None, RELU=bool(relu), BLOCK=_BLOCK_EW,
            HAS_ERR=err is not None, err_ptr=err if err is not None else dummy)
        return out

    def linear(self, y, m, scale, shift, relu, err=None):
        # y: (M, 2K) stacked float32 (unit inner stride), W: (N, K), scale/shift: (N,) -> (M, 2N)
        _check_launch("y", y, min_dim=2, contiguous=False)
        if y.dim() != 2 or y.shape[1] % 2 or y.stride(1) != 1:
            raise ValueError(f"y: a (M, 2K) stacked tensor with unit inner stride is needed, got shape "
                             f"{tuple(y.shape)}, strides {y.stride()}")
        M, K2 = y.shape
        K = K2 // 2
        N = m.weight.shape[0]
        if tuple(m.weight.shape) != (N, K):
            raise ValueError(f"y: {K} input features, but the Linear weight has shape {tuple(m.weight.shape)}")
        for name, t in (("scale", scale), ("shift", shift), ("err", err)):
            if t is None:
                continue
            _check_launch(name, t, device=y.device, contiguous=False)
            if t.numel() != N:
                raise ValueError(f"{name}: {N} (output) entries needed, got {t.numel()}")
        out = torch.empty((M, 2 * N), dtype=torch.float32, device=y.device)
        w = m.weight.detach().contiguous()
        wa = abs_weight(m).contiguous()
        # 64x64 output tiles, K in steps of 32: fits the H100's shared memory with two accumulators
        bm, bn, bk = 64, 64, 32
        grid = (triton_cdiv(M, bm), triton_cdiv(N, bn))
        self.k["interval_linear"][grid](y, w, wa, scale.contiguous(), shift.contiguous(), out, M, N, K,
                                        y.stride(0), out.stride(0), RELU=bool(relu),
                                        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, HAS_ERR=err is not None,
                                        err_ptr=err.contiguous() if err is not None else out)
        return out

    # -- plan ---------------------------------------------------------------------------------
    def _fallback(self, op, y):
        """One op through the torch path on the halves of the stacked tensor."""
        C = y.shape[1] // 2
        c, r = propagate([op], y[:, :C], y[:, C:], self.stats)
        return torch.cat([c, r], 1).contiguous()

    def run(self, ops: list[Op], y, add=None, relu_end=False):
        n = len(ops)
        i = 0
        while i < n:
            op = ops[i]
            if op.kind in ("linear", "conv"):
                m = op.module
                dev = y.device
                cout = m.weight.shape[0]
                scale = torch.ones(cout, dtype=torch.float32, device=dev)
                shift = (m.bias.detach().float() if m.bias is not None
                         else torch.zeros(cout, dtype=torch.float32, device=dev))
                j = i + 1
                while j < n and ops[j].kind == "chaffine":
                    s, t = bn_affine(ops[j], self.stats)
                    s, t = s.detach().float().expand(cout), t.detach().float().expand(cout)
                    scale, shift = scale * s, shift * s + t
                    j += 1
                relu = j < n and ops[j].kind == "relu"
                if relu:
                    j += 1
                take = j == n and not relu  # the pending residual add and final ReLU fit here
                if op.kind == "linear":
                    if y.dim() != 2:
                        y = self._fallback(op, y)
                        for o in ops[i + 1:j]:
                            y = self._fallback(o, y)
                        i = j
                        continue
                    if take and add is not None:
                        y = self.linear(y, m, scale, shift, False)
                        y = self.epilogue(y, add=add, relu=relu_end)
                    else:
                        y = self.linear(y, m, scale, shift, relu or (take and relu_end))
                else:
                    y = F.conv2d(y, _cat_weight(m), None, m.stride, m.padding, m.dilation, 2 * m.groups)
                    y = self.epilogue(y, scale.contiguous(), shift.contiguous(), add if take else None,
                                      relu or (take and relu_end))
                if take:
                    add, relu_end = None, False
                i = j
            elif op.kind == "chaffine":
                s, t = bn_affine(op, self.stats)
                C = y.shape[1] // 2
                y = self.epilogue(y, s.detach().float().expand(C).contiguous(),
                                  t.detach().float().expand(C).contiguous(), out=torch.empty_like(y))
                i += 1
            elif op.kind == "relu":
                y = self.epilogue(y, relu=True, out=torch.empty_like(y))
                i += 1
            elif op.kind == "pool":
                y = op.module(y).contiguous()
                i += 1
            elif op.kind == "flatten":
                fl = op.module
                if fl.start_dim == 1 and fl.end_dim == -1:
                    y = y.flatten(1)
                else:
                    y = self._fallback(op, y)
                i += 1
            elif op.kind == "residual":
                s = self.run(op.shortcut, y)
                fuse_relu = i + 1 < n and ops[i + 1].kind == "relu"
                if op.main:
                    y = self.run(op.main, y, add=s, relu_end=fuse_relu)
                else:
                    y = self.epilogue(y, add=s, relu=fuse_relu, out=torch.empty_like(y))
                i += 2 if fuse_relu else 1
            else:  # pragma: no cover
                raise AssertionError(op.kind)
        if add is not None or relu_end:
            y = self.epilogue(y, add=add, relu=relu_end, out=torch.empty_like(y))
        return y


def _check_launch(name: str, t, device=None, min_dim: int = 1, contiguous: bool = True) -> None:
    """The launchers' input check: a float32 tensor (on ``device``), at least ``min_dim``-D, contiguous
    unless told otherwise. ValueError / TypeError naming the argument; a wrong shape never reaches a kernel."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: a torch.Tensor is needed, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name}: float32 is needed, got {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(f"{name}: at least {min_dim}-D is needed, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: on {t.device}, the other inputs on {device}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def propagate_triton(ops: list[Op], x, eps, x_min, x_max, stats: dict, interpret: bool, spec=None):
    """IBP with the Triton kernels -> (center, radius) of the output (or of C f(x) with a spec)."""
    from fastcert.ibp.triton.kernels import build

    runner = _Runner(build(interpret), stats)
    first = 0
    C = x.shape[1] if x.dim() >= 2 else 1
    scale = torch.ones(1, dtype=torch.float32, device=x.device)
    shift = torch.zeros(1, dtype=torch.float32, device=x.device)
    if ops and ops[0].kind == "chaffine" and x.dim() in (2, 4):
        s, t = bn_affine(ops[0], stats)
        if s.numel() in (1, C):
            scale, shift = s.detach().float(), t.detach().float()
            first = 1
    y = runner.box(x, eps, x_min, x_max, scale, shift)
    rest = ops[first:]
    fold = spec is not None and rest and rest[-1].kind == "linear"
    if fold:
        y = runner.run(rest[:-1], y)
        D = y.shape[1] // 2
        c, r = propagate(rest[-1:], y[:, :D], y[:, D:], stats, spec=spec, fold_last=True)
        return c, r
    y = runner.run(rest, y)
    D = y.shape[1] // 2
    c, r = y[:, :D], y[:, D:]
    if spec is not None:
        c, r = torch.einsum("bmo,bo->bm", spec, c), torch.einsum("bmo,bo->bm", spec.abs(), r)
    return c, r
