"""Exact stratified (l0) thresholds: compiled path vs the gmpy2 reference.

Target (issue 3): every threshold rho_r^{-1}(1/2) for K = 255, r = 0..100 at one alpha at least 100x
faster than the straightforward gmpy2 reference (fastcert.smoothing.reference_stratified). Both produce exact
Fractions and are checked equal here.

Run: pytest benchmarks/bench_stratified.py --benchmark-enable --benchmark-group-by=group
(the reference takes seconds per round, so it runs 3 rounds; the compiled path runs many).
"""
from __future__ import annotations

import pytest

from fastcert.smoothing import stratified

ALPHA, K, RADII = "0.8", 255, range(101)


@pytest.fixture(scope="module")
def reference_values():
    return stratified.threshold(ALPHA, K, RADII, backend="reference")


@pytest.mark.benchmark(group="thresholds K=255 r=0..100 alpha=0.8")
def test_core_thresholds_k255_r100(benchmark, reference_values):
    got = benchmark(stratified.threshold, ALPHA, K, RADII)
    assert got == reference_values


@pytest.mark.benchmark(group="thresholds K=255 r=0..100 alpha=0.8")
def test_reference_thresholds_k255_r100(benchmark, reference_values):
    got = benchmark.pedantic(stratified.threshold, args=(ALPHA, K, RADII), kwargs={"backend": "reference"},
                             rounds=3, iterations=1)
    assert got == reference_values


@pytest.mark.benchmark(group="thresholds K=255 large radii alpha=0.95 (compiled only)")
def test_core_threshold_k255_r1000(benchmark):
    got = benchmark.pedantic(stratified.threshold, args=("0.95", 255, [1000]), rounds=3, iterations=1)
    assert 0 < got[0] < 1


@pytest.mark.benchmark(group="thresholds K=255 large radii alpha=0.95 (compiled only)")
def test_core_thresholds_k255_all_r0_1000(benchmark):
    got = benchmark.pedantic(stratified.threshold, args=("0.95", 255, range(1001)), rounds=2, iterations=1)
    assert all(t0 <= t1 for t0, t1 in zip(got, got[1:]))


@pytest.mark.benchmark(group="certified_l0_radius (cached thresholds)")
def test_certified_l0_radius_cached(benchmark):
    # alpha = 0.2 (an ImageNet setting of the paper): p = 0.9999 certifies several radii.
    stratified.certified_l0_radius(0.9999, "0.2", K, max_radius=784)  # fill the cache
    r = benchmark(stratified.certified_l0_radius, 0.9999, "0.2", K, max_radius=784)
    assert r >= 5
