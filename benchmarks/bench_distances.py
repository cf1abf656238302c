"""Nearest other-class / same-class distances: blocked C++/OpenMP kernel vs chunked torch.cdist.

Fashion-MNIST subset (1,000 test points against 6,000 training points, 784 features), three norms.
Run: PYTHONPATH=. python -m pytest benchmarks/bench_distances.py --benchmark-enable -p no:cacheprovider
"""
import numpy as np
import pytest

import fastcert
from fastcert.robustness.distances import class_distances, class_distances_torch

NQ, NR = 1000, 6000


@pytest.fixture(scope="module")
def data():
    try:
        te = fastcert.load_dataset("fashion-mnist", "test")
        tr = fastcert.load_dataset("fashion-mnist", "train")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST not installed")
    return te.x[:NQ], te.y[:NQ], (tr.x[:NR], tr.y[:NR])


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_kernel(benchmark, data, norm):
    x, y, ref = data
    out = benchmark.pedantic(class_distances, args=(x, y, (norm,), ref), rounds=3, iterations=1)
    tor = class_distances_torch(x[:100], y[:100], (norm,), ref)
    np.testing.assert_allclose(out[norm]["inter"][:100], tor[norm]["inter"], rtol=1e-6)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_torch_cdist(benchmark, data, norm):
    x, y, ref = data
    benchmark.pedantic(class_distances_torch, args=(x, y, (norm,), ref), rounds=1, iterations=1)
