"""What every smoothing certificate returns, and the random streams its samples come from.

Kept apart from ``smooth.py`` so that the certification procedures (sequential, top-k, confidence)
and ``Smooth`` import it from below instead of from each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ABSTAIN = -1

# Philox stream of each use of a test point's seed: selection, estimation, predict, confidence values.
# Selection and estimation never share a stream, so the selected class is independent of the samples
# that bound its probability. The sequential looks read the estimation stream's prefixes, so the last
# look of a sequential run sees exactly the samples of fixed-n CERTIFY with the same seed (stream 3,
# their former stream, stays unused).
STREAM_SELECT, STREAM_ESTIMATE, STREAM_PREDICT, STREAM_CONFIDENCE = 0, 1, 2, 5


@dataclass(eq=False)
class Certificate:
    """Result of :meth:`Smooth.certify` / :meth:`Smooth.certify_topk`.

    prediction: class (int; a tuple of k classes for top-k), -1 = abstain.
    radius: certified radius in the noise's own norm (int l0 radius for Discrete noise); 0 on abstain.
    radii: {"l0", "l1", "l2", "linf"} -> radius certified in that norm (derived ones included).
    counts: per-class counts of the n estimation samples. p_lower: lower confidence bound on the
    top-class probability. n_used: samples drawn in total (selection included).
    certified: {radius: bool} when target radii were given. seed: the seed actually used.
    """

    prediction: object
    radius: float
    radii: dict
    counts: np.ndarray
    p_lower: float
    n_used: int
    certified: dict | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    def __eq__(self, other):
        """Field by field, with ``counts`` (and arrays anywhere in ``extra``) compared by value."""
        if not isinstance(other, Certificate):
            return NotImplemented
        return all(_equal(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b))
    return bool(a == b)
