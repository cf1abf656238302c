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


def channels_last(t: torch.Tensor, lead: int) -> bool | None:
    """How t (lead batch-like dims, then the features) is stored: False plain, True channels-last (the
    channel dim ``lead`` fastest, then 2-D spatial dims), None any other layout."""
    if t.is_contiguous():
        return False
    if t.dim() == lead + 3 and t.movedim(lead, -1).is_contiguous():
        return True
    return None


def rows(t: torch.Tensor, lead: int, last: bool) -> torch.Tensor:
    """t's feature dims (after the first ``lead``) flattened into one, in plain (C, H, W) or, with ``last``,
    channels-last (H, W, C) order: a view when t is stored that way, else a copy."""
    if last:
        t = t.movedim(lead, -1)
    return t.reshape(*t.shape[:lead], -1)


def interval_relu(c: torch.Tensor, r: torch.Tensor, owned: bool):
    """ReLU of the box (c, r) in center/radius form -> (c, r), or None when the kernel does not apply.
    ``owned``: c and r may be overwritten."""
    last = channels_last(c, 1)
    if not (fusable(c, r) and c.shape == r.shape and c.stride() == r.stride()) or last is None:
        return None
    c_out, r_out = (c, r) if owned else (torch.empty_like(c), torch.empty_like(r))  # same layout as c, r
    arrays = [rows(t, 1, last).view(-1).numpy() for t in (c, r, c_out, r_out)]
    if np.may_share_memory(arrays[0], arrays[1]):  # c and r views of one buffer: the torch ops handle it
        return None
    _native.interval_relu(*arrays, torch.get_num_threads())
    return c_out, r_out
