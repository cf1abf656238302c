"""Seed derivation: the one place where a run seed and an index (test point, epoch, batch) become the
seed of one independent random stream. Same keys, same seed, whatever else the process did."""
from __future__ import annotations

import secrets

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on ``keys`` (SeedSequence hashing, so nearby keys give unrelated
    streams): ``derive_seed(run_seed, point_index)`` makes a certification row independent of
    ``--skip``/``--max``, resuming and sharding."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def resolve_seed(seed):
    """The seed of a call: ``seed`` checked (an integer in [0, 2^64)), or a fresh random one for None."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    return seed


def torch_generator(seed: int, index: int, device="cpu"):
    """A torch.Generator on ``device`` seeded with ``derive_seed(seed, index)`` (one per epoch of
    training, say), independent of the global RNG."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, index))
    return g
