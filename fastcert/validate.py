"""Every argument check of the library, in one place.

Each function returns the value converted (``int``/``float``/array) or raises ``TypeError`` (wrong
kind) / ``ValueError`` (out of range) with a message that names the argument. Callers pass the
user-facing name (``"n0"``, ``"sigma"``...), never a generic one.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

NORMS = ("l1", "l2", "linf")  # the lp norms of attacks, curves, distances and IBP
CERT_NORMS = ("l0", "l1", "l2", "linf")  # the norms a smoothing certificate reports radii in


def check_int(name: str, value, minimum: int | None = 1, maximum: int | None = None) -> int:
    """An integer (bool refused) within [minimum, maximum] (either bound None = open)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return v


def _as_float(name: str, value, what: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {value!r}") from None


def check_positive(name: str, value) -> float:
    """A finite number > 0."""
    v = _as_float(name, value, "a positive number")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def check_nonnegative(name: str, value) -> float:
    """A finite number >= 0."""
    v = _as_float(name, value, "a number >= 0")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_float(name: str, value, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = True,
                hi_open: bool = True) -> float:
    """A finite number in the interval between lo and hi (open or closed at each end; by default any
    finite number)."""
    v = _as_float(name, value, "a number")
    bad = (not math.isfinite(v) or (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi))
    if bad:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                         f"got {value!r}")
    return v


def check_probability(name: str, value) -> float:
    """A probability strictly inside (0, 1) (failure probabilities, keep probabilities)."""
    v = _as_float(name, value, "a number in (0, 1)")
    if not (0.0 < v < 1.0) or math.isnan(v):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return v


def check_alpha(alpha, name: str = "alpha") -> float:
    """The failure probability of a certificate, in (0, 1)."""
    return check_probability(name, alpha)


def check_radii(radii, name: str = "radii") -> list[float]:
    """Target radii: one number or a non-empty list of finite numbers >= 0 (continuous norms)."""
    if isinstance(radii, (str, bytes)):
        raise TypeError(f"{name} must be a number or a list of numbers, got {radii!r}")
    if isinstance(radii, (int, float, np.integer, np.floating)) and not isinstance(radii, bool):
        radii = [radii]
    elif isinstance(radii, np.ndarray):
        if radii.ndim > 1:
            raise ValueError(f"{name} must be a number or a 1-D list of numbers, got shape {radii.shape}")
        radii = radii.reshape(-1).tolist()
    out = []
    for r in radii:
        if isinstance(r, bool):
            raise TypeError(f"{name} must be numbers, got {r!r}")
        try:
            v = float(r)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numbers, got {r!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {r!r}")
        out.append(v)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def check_int_list(name: str, values, minimum: int | None = 0, maximum: int | None = None) -> list[int]:
    """A sequence (list, tuple, range, 1-D array) of integers, each checked by :func:`check_int`
    (integer radii, say); a lone number or a string is refused. May be empty."""
    if isinstance(values, (str, bytes, int, np.integer)) or not isinstance(values, (Iterable, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers (e.g. range(11)), got {values!r}")
    return [check_int(name, v, minimum, maximum) for v in values]


def check_choice(name: str, value, choices) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_norm(norm, choices=NORMS, name: str = "norm") -> str:
    """An lp norm name: 'l1', 'l2' or 'linf' (or the given choices)."""
    return check_choice(name, norm, choices)


def check_device(device, name: str = "device") -> torch.device:
    """Parse a torch device and check that this machine has it: ValueError naming ``name`` otherwise
    (instead of torch's RuntimeError / AssertionError deep inside a forward pass)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{name}: not a torch device: {device!r} ({str(e).splitlines()[0]})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"{name}: device type {dev.type!r} is not supported (cpu or cuda)")
    return dev
