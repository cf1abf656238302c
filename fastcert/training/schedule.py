"""The learning-rate schedule of fastcert's training loops: one cycle (Smith & Topin 2019), warming up for
``pct_start`` of the steps, then annealing.

torch's ``OneCycleLR`` cannot run a schedule whose warm-up phase has no step of its own
(``pct_start * total_steps <= 1``): at exactly 1 it divides by zero, and below it the first step already
runs at (near) the peak rate and a one-step run at ~0. Runs that short (``--epochs 1`` on a few hundred
points, smoke tests) train at the constant rate ``lr`` instead; every longer run keeps the one-cycle
schedule unchanged.
"""
from __future__ import annotations

import torch


def one_cycle(opt: torch.optim.Optimizer, lr: float, total_steps: int, pct_start: float):
    """The scheduler of ``total_steps`` optimizer steps (stepped once after each ``opt.step()``):
    ``OneCycleLR(max_lr=lr, pct_start=pct_start)``, or a constant rate ``lr`` when the warm-up phase
    would be at most one step (see the module docstring)."""
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if float(pct_start) * total_steps > 1:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct_start)
    return torch.optim.lr_scheduler.LambdaLR(opt, _constant)


def _constant(step: int) -> float:  # a module-level function: the scheduler's state_dict stays plain data
    return 1.0
