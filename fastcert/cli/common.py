"""Flags and helpers every subcommand shares: the common flags of DESIGN.md and the test-point
selection (``--skip``/``--max``)."""
from __future__ import annotations

import argparse

from fastcert.errors import CliError

__all__ = ["CliError", "add_common", "selected_indices"]


def add_common(p: argparse.ArgumentParser, dataset: bool = True, model: bool = True) -> None:
    """Flags every subcommand shares (DESIGN.md)."""
    if dataset:
        p.add_argument("--dataset", default="digits",
                       help="digits | fashion-mnist | mnist:PATH | cifar10:PATH | folder:PATH (default digits)")
    if model:
        p.add_argument("--model", default=None, help="checkpoint written by `train`")
    p.add_argument("--out", default=None, help="output path")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--batch", type=int, default=1000, help="batch size")


def selected_indices(n_points: int, skip: int, max_points: int) -> list[int]:
    """Indices of the points a run visits: every ``skip``-th, at most ``max_points`` (-1: all)."""
    idx = list(range(0, n_points, skip))
    return idx if max_points < 0 else idx[:max_points]
