"""Certificate equality (issue 17): field by field, with the numpy ``counts`` (and arrays in ``extra``)
compared by value, so ``cert_a == cert_b`` is a bool instead of numpy's ambiguous-truth error."""
from __future__ import annotations

import numpy as np

from fastcert.smoothing.certificate import Certificate


def _cert(counts, **kw):
    base = {"prediction": 1, "radius": 0.5, "radii": {"l2": 0.5, "l1": 0.5, "linf": 0.1, "l0": 0},
            "counts": np.asarray(counts, dtype=np.int64), "p_lower": 0.9, "n_used": 110, "seed": 3}
    base.update(kw)
    return Certificate(**base)


def test_equal_counts_compare_equal():
    a, b = _cert([10, 90, 0]), _cert([10, 90, 0])
    assert a.counts is not b.counts
    assert a == b
    assert not (a != b)


def test_unequal_counts_compare_unequal():
    a = _cert([10, 90, 0])
    assert a != _cert([11, 89, 0])
    assert a != _cert([10, 90])  # another shape
    assert a != _cert([10, 90, 0], p_lower=0.8)  # another field
    assert (a == "not a certificate") is False


def test_arrays_in_extra_compare_by_value():
    a = _cert([1, 2], extra={"values": np.array([0.5, 0.25], np.float32)})
    assert a == _cert([1, 2], extra={"values": np.array([0.5, 0.25], np.float32)})
    assert a != _cert([1, 2], extra={"values": np.array([0.5, 0.5], np.float32)})
