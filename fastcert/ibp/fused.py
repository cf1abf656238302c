"""The switch and the glue of the fused CPU kernels of fastcert.ibp (csrc/ibp, reached through
fastcert._native): the interval ReLU of inference IBP and CROWN's backward ReLU step and concretization.

They run where they apply, on CPU tensors of one float dtype (float32 or float64) that need no gradient,
and give the torch ops' results: the interval ReLU bit for bit, the CROWN sums up to rounding (they
accumulate in double). Everywhere else the torch ops run. :data:`FUSED` = False turns them off (tests
compare the two paths with it).
"""
from __future__ import annotations

import numpy as np
import torch

from fastcert import _native

FUSED = True


def fusable(*ts) -> bool:
    """Whether the fused kernels can take these tensors: CPU, one float dtype, nothing that needs a gradient."""
    if not FUSED:
        return False
    d = ts[0].dtype
    return d in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == d and not t.requires_grad for t in ts)


def _flat(t: torch.Tensor):
    """A 1-D view of a dense tensor in its memory order (plain or channels-last), or None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)
    return None


def interval_relu(c: torch.Tensor, r: torch.Tensor, owned: bool):
    """ReLU of the box (c, r) in center/radius form -> (c, r), or None when the kernel does not apply.
    ``owned``: c and r may be overwritten."""
    if not (fusable(c, r) and c.shape == r.shape and c.stride() == r.stride()):
        return None
    if not owned:
        c_out, r_out = torch.empty_like(c), torch.empty_like(r)
    else:
        c_out, r_out = c, r
    if c_out.stride() != c.stride() or r_out.stride() != r.stride():
        return None
    views = [_flat(t) for t in (c, r, c_out, r_out)]
    if any(v is None for v in views):
        return None
    arrays = [v.numpy() for v in views]
    if np.may_share_memory(arrays[0], arrays[1]):  # c and r views of one buffer: the torch ops handle it
        return None
    _native.interval_relu(*arrays, torch.get_num_threads())
    return c_out, r_out
