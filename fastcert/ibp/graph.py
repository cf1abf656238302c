"""Turn a model into a flat list of interval operations, and run the clean forward pass over it.

Supported modules (anything else raises ``UnsupportedLayerError`` naming the layer):

- ``nn.Sequential`` (the plain container; subclasses overriding ``forward`` are rejected),
- ``nn.Linear``, ``nn.Conv2d`` (zero padding), ``nn.ReLU``, ``nn.Flatten``, ``nn.Identity``,
  ``nn.Dropout`` in eval mode, ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``,
- ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` (eval: running statistics; train mode or without running
  statistics: the statistics of the clean batch, see :func:`bn_affine`),
- ``fastcert.models.zoo.Normalize`` (per-channel affine),
- residual networks: ``fastcert.models.zoo.BasicBlock`` and ``fastcert.models.zoo.CifarResNet`` of the zoo,
  and the generic container :class:`Residual` (``main(x) + shortcut(x)``).

An op is a small record: ``kind`` in {"linear", "conv", "chaffine", "relu", "flatten", "pool",
"identity", "residual"}, the module, a dotted ``name`` for messages, and for "residual" the two
branches (lists of ops).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fastcert.models.zoo import BasicBlock, CifarResNet, Normalize


class UnsupportedLayerError(TypeError):
    """A module that interval bound propagation does not know how to bound."""


class Residual(nn.Module):
    """``main(x) + shortcut(x)`` (shortcut defaults to the identity): a residual container whose
    semantics ``ibp_bounds`` knows. Put an ``nn.ReLU`` after it for the usual post-add activation."""

    def __init__(self, main: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.main = main
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x):
        return self.main(x) + self.shortcut(x)


@dataclass(eq=False)
class Op:
    kind: str
    name: str
    module: nn.Module | None = None
    main: list = field(default_factory=list)
    shortcut: list = field(default_factory=list)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unsupported(module: nn.Module, name: str, why: str = "") -> UnsupportedLayerError:
    label = name or "<model>"
    msg = f"ibp_bounds: unsupported layer {label!r} ({type(module).__name__})"
    return UnsupportedLayerError(msg + (f": {why}" if why else ""))


def trace(module: nn.Module, name: str = "") -> list[Op]:
    """Flatten ``module`` into a list of ops (residual blocks stay nested)."""
    t = type(module)
    if t is nn.Sequential or (isinstance(module, nn.Sequential) and t.forward is nn.Sequential.forward):
        ops: list[Op] = []
        for child_name, child in module.named_children():
            ops += trace(child, _join(name, child_name))
        return ops
    if isinstance(module, nn.Linear):
        return [Op("linear", name, module)]
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise _unsupported(module, name, f"padding_mode={module.padding_mode!r} (only 'zeros')")
        if isinstance(module.padding, str):
            raise _unsupported(module, name, f"padding={module.padding!r} (give the padding as integers)")
        return [Op("conv", name, module)]
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return [Op("chaffine", name, module)]
    if isinstance(module, Normalize):
        return [Op("chaffine", name, module)]
    if isinstance(module, nn.ReLU):
        return [Op("relu", name, module)]
    if isinstance(module, nn.Flatten):
        return [Op("flatten", name, module)]
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return [Op("pool", name, module)]
    if isinstance(module, nn.Identity):
        return []
    if isinstance(module, nn.Dropout):
        if module.training and module.p > 0:
            raise _unsupported(module, name, "dropout in training mode is random; call model.eval()")
        return []
    if isinstance(module, Residual):
        return [Op("residual", name, module, trace(module.main, _join(name, "main")),
                   trace(module.shortcut, _join(name, "shortcut")))]
    if type(module) is BasicBlock:
        main = (trace(module.conv1, _join(name, "conv1")) + trace(module.bn1, _join(name, "bn1"))
                + trace(module.relu, _join(name, "relu")) + trace(module.conv2, _join(name, "conv2"))
                + trace(module.bn2, _join(name, "bn2")))
        return [Op("residual", name, module, main, trace(module.shortcut, _join(name, "shortcut"))),
                *trace(module.relu, _join(name, "relu"))]
    if type(module) is CifarResNet:
        return (trace(module.conv, _join(name, "conv")) + trace(module.bn, _join(name, "bn"))
                + trace(module.relu, _join(name, "relu")) + trace(module.layers, _join(name, "layers"))
                + trace(module.pool, _join(name, "pool")) + [Op("flatten", _join(name, "flatten"), nn.Flatten())]
                + trace(module.fc, _join(name, "fc")))
    raise _unsupported(module, name)


def walk(ops: list[Op]):
    """Every op, residual branches included (depth first)."""
    for op in ops:
        yield op
        if op.kind == "residual":
            yield from walk(op.main)
            yield from walk(op.shortcut)


def bn_uses_batch_stats(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)


def needs_clean_pass(ops: list[Op]) -> bool:
    return any(op.kind == "chaffine" and bn_uses_batch_stats(op.module) for op in walk(ops))


def channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a per-channel vector (C,) to broadcast over (B, C, ...) of ``ndim`` dimensions."""
    return t.view(1, -1, *([1] * (ndim - 2)))


def bn_affine(op: Op, stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of a channel-affine op: y = scale * x + shift.

    BatchNorm in eval mode: scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale.
    BatchNorm in training mode (or without running statistics): the same formula with the mean and
    the biased variance of the *clean* batch at this layer (what ``model(x)`` in train mode uses to
    normalize), taken from ``stats`` (filled by :func:`clean_forward`). The bounds then hold for the
    network whose BN layers are frozen to these clean-batch statistics, the usual semantics of IBP
    certified training (Gowal et al. 2018; Shi et al. 2021). Running statistics are never updated.
    Normalize: scale = 1 / std, shift = -mean / std.
    """
    m = op.module
    if isinstance(m, Normalize):
        return 1.0 / m.std, -m.mean / m.std
    if bn_uses_batch_stats(m):
        if id(op) not in stats:
            raise RuntimeError(f"ibp_bounds: no clean-batch statistics for {op.name!r}")
        mean, var = stats[id(op)]
    else:
        mean, var = m.running_mean, m.running_var
    scale = torch.rsqrt(var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -mean * scale
    if m.bias is not None:
        shift = shift + m.bias
    return scale, shift


def _chaffine_apply(op: Op, z: torch.Tensor, stats: dict) -> torch.Tensor:
    m = op.module
    if isinstance(m, Normalize):
        return m(z)
    scale, shift = bn_affine(op, stats)
    return z * channel_view(scale, z.dim()) + channel_view(shift, z.dim())


def clean_forward(ops: list[Op], z: torch.Tensor, stats: dict) -> torch.Tensor:
    """Run the network on the clean batch ``z``; record (mean, biased var) of every BN layer that
    normalizes with batch statistics into ``stats`` (keyed by id(op)). Differentiable."""
    for op in ops:
        if op.kind == "residual":
            z = clean_forward(op.main, z, stats) + clean_forward(op.shortcut, z, stats)
        elif op.kind == "chaffine":
            m = op.module
            if bn_uses_batch_stats(m):
                dims = [0] + list(range(2, z.dim()))
                stats[id(op)] = (z.mean(dims), z.var(dims, unbiased=False))
            z = _chaffine_apply(op, z, stats)
        elif op.kind == "relu":
            z = F.relu(z)
        else:  # linear, conv, flatten, pool are plain modules
            z = op.module(z)
    return z
