"""Smooth.predict / Smooth.certify (Cohen et al. 2019) on models whose smoothed classifier is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm

import fastcert
from fastcert.smoothing.reference import ReferenceSmooth
from fastcert.stats import clopper_pearson, clopper_pearson_lower, clopper_pearson_upper


def test_clopper_pearson_matches_scipy_beta():
    for k, n, a in [(0, 10, 0.05), (5, 10, 0.05), (10, 10, 0.01), (99990, 100000, 0.001), (1, 1, 0.3)]:
        want = 0.0 if k == 0 else beta.ppf(a, k, n - k + 1)
        assert clopper_pearson_lower(k, n, a) == pytest.approx(want, rel=1e-12, abs=0)
        want_u = 1.0 if k == n else beta.ppf(1 - a, k + 1, n - k)
        assert clopper_pearson_upper(k, n, a) == pytest.approx(want_u, rel=1e-12, abs=0)
    lo, hi = clopper_pearson(30, 100, 0.05)
    assert lo < 0.3 < hi


def test_clopper_pearson_coverage():
    """Monte Carlo: the one-sided lower bound covers the true p in >= 1 - alpha of trials."""
    rng = np.random.default_rng(1)
    for p in (0.5, 0.9, 0.99):
        n, alpha, trials = 200, 0.1, 4000
        ks = rng.binomial(n, p, size=trials)
        miss = np.mean([clopper_pearson_lower(int(k), n, alpha) > p for k in ks])
        assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def test_bad_counts_and_alpha():
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(3, 10, 1.5)
    with pytest.raises(ValueError, match="n must"):
        clopper_pearson_lower(0, 0, 0.1)
    with pytest.raises(ValueError, match="count"):
        clopper_pearson_lower(11, 10, 0.1)


def test_clopper_pearson_vectorized_equals_scalar():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 10**6, size=300)
    k = rng.integers(0, n + 1)
    k[:20], k[20:40] = 0, n[20:40]
    for a in (1e-4, 0.05):
        lo, up = clopper_pearson_lower(k, n, a), clopper_pearson_upper(k, n, a)
        assert lo.dtype == up.dtype == np.float64 and lo.shape == up.shape == k.shape
        assert lo.tolist() == [clopper_pearson_lower(int(c), int(m), a) for c, m in zip(k, n)]
        assert up.tolist() == [clopper_pearson_upper(int(c), int(m), a) for c, m in zip(k, n)]
        assert np.all(lo[:20] == 0) and np.all(up[20:40] == 1)
        two_lo, two_up = clopper_pearson(k, n, a)
        np.testing.assert_array_equal(two_lo, clopper_pearson_lower(k, n, a / 2))
        np.testing.assert_array_equal(two_up, clopper_pearson_upper(k, n, a / 2))
    # broadcasting: per-class counts (N, C) against their row totals (N, 1)
    counts = rng.integers(0, 40, size=(5, 4))
    tot = counts.sum(axis=1)
    up = clopper_pearson_upper(counts, tot[:, None], 0.01)
    assert up.shape == (5, 4)
    assert up[2, 3] == clopper_pearson_upper(int(counts[2, 3]), int(tot[2]), 0.01)
    assert type(clopper_pearson_lower(3, 10, 0.1)) is float
    with pytest.raises(ValueError, match="count"):
        clopper_pearson_lower(np.array([3, 11]), 10, 0.1)
    with pytest.raises(ValueError, match="n must"):
        clopper_pearson_upper(np.array([0, 0]), np.array([1, 0]), 0.1)
    with pytest.raises(ValueError, match="broadcast"):
        clopper_pearson_lower(np.array([1, 2]), np.array([3, 4, 5]), 0.1)
    with pytest.raises(TypeError, match="count"):
        clopper_pearson_lower(np.array([1.0]), 10, 0.1)
    with pytest.raises(TypeError, match="count"):
        clopper_pearson_lower([1, 2], 10, 0.1)


def test_linear_model_radius_sound_and_tight(halfspace):
    """Distance-to-hyperplane truth: certified radii never exceed it, and reach >= 90% of it on
    average at n = 100,000 (issue 2)."""
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5
    model = halfspace(w, b=-1.0)
    sm = fastcert.Smooth(model, 2, fastcert.Gaussian(0.5))
    ratios = []
    for i, t in enumerate(np.linspace(0.3, 0.9, 6)):
        x = torch.tensor([float(t), 0.2])
        truth = abs(float(w @ x) - 1.0) / 5.0
        c = sm.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=20_000, seed=i)
        assert c.prediction == (1 if float(w @ x) - 1.0 > 0 else 0)
        assert c.radius <= truth
        ratios.append(c.radius / truth)
        assert c.n_used == 100_100
        assert c.counts.sum() == 100_000
    assert np.mean(ratios) >= 0.9


def test_certify_soundness_over_repeats(halfspace):
    """With alpha = 0.1 and a point whose true radius is known, the fraction of certificates that
    exceed the truth stays below alpha (binomial tolerance)."""
    model = halfspace(torch.tensor([1.0]), b=0.0)
    sm = fastcert.Smooth(model, 2, fastcert.Gaussian(1.0))
    x = torch.tensor([0.2])
    truth = 0.2
    trials, alpha = 300, 0.1
    wrong = sum(sm.certify(x, 20, 300, alpha, 400, seed=s).radius > truth for s in range(trials))
    assert wrong / trials <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


def test_same_seed_same_certificate(halfspace):
    sm = fastcert.Smooth(halfspace(torch.ones(4)), 2, fastcert.Gaussian(0.25))
    x = torch.full((4,), 0.05)
    a = sm.certify(x, 50, 2000, 0.01, 300, seed=5)
    b = sm.certify(x, 50, 2000, 0.01, 128, seed=5)  # batch size does not change samples
    assert a.prediction == b.prediction and a.radius == b.radius and np.array_equal(a.counts, b.counts)
    c = sm.certify(x, 50, 2000, 0.01, 300, seed=6)
    assert not np.array_equal(a.counts, c.counts)
    r = sm.certify(x, 50, 2000, 0.01, 300)
    assert isinstance(r.seed, int)


def test_predict_matches_truth_and_abstains(halfspace):
    sm = fastcert.Smooth(halfspace(torch.tensor([1.0])), 2, fastcert.Gaussian(0.5))
    assert sm.predict(torch.tensor([1.0]), 1000, 0.001, 500, seed=0) == 1
    assert sm.predict(torch.tensor([-1.0]), 1000, 0.001, 500, seed=0) == 0
    # at the boundary the two classes are equally likely: abstention (almost always)
    abst = sum(sm.predict(torch.tensor([0.0]), 1000, 0.01, 500, seed=s) == -1 for s in range(50))
    assert abst >= 45


def test_fused_counts_match_reference_distribution(halfspace):
    """The fused path and the plain-PyTorch reference estimate the same class probability."""
    model = halfspace(torch.tensor([1.0, -1.0]), b=0.1)
    x = torch.tensor([0.3, 0.1])
    p_true = norm.cdf((0.2 + 0.1) / (0.5 * np.sqrt(2)))
    sm = fastcert.Smooth(model, 2, fastcert.Gaussian(0.5))
    ref = ReferenceSmooth(model, 2, 0.5)
    torch.manual_seed(0)
    n = 200_000
    ours = sm.sample_counts(x, n, 50_000, seed=1)[0][1] / n
    theirs = ref._sample_noise(x, n, 50_000)[1] / n
    tol = 5 * np.sqrt(p_true * (1 - p_true) / n)
    assert abs(ours - p_true) < tol and abs(theirs - p_true) < tol


def test_radii_dict_and_derived_norms(halfspace):
    sm = fastcert.Smooth(halfspace(torch.ones(16)), 2, fastcert.Gaussian(0.5))
    c = sm.certify(torch.full((16,), 0.1), 50, 5000, 0.01, 1000, seed=0)
    assert set(c.radii) == {"l0", "l1", "l2", "linf"}
    assert c.radii["l2"] == c.radius
    assert c.radii["linf"] == pytest.approx(c.radius / 4)
    assert c.radii["l1"] >= c.radius
    assert c.radii["l0"] == max(int(np.ceil(c.radius**2)) - 1, 0)


def test_target_radii_flags(halfspace):
    sm = fastcert.Smooth(halfspace(torch.tensor([1.0])), 2, fastcert.Gaussian(0.5))
    c = sm.certify(torch.tensor([0.5]), 50, 5000, 0.01, 1000, seed=0, radii=[0.1, 0.3, 10.0])
    assert c.certified == {0.1: c.radius >= 0.1, 0.3: c.radius >= 0.3, 10.0: False}


@pytest.mark.parametrize("kwargs,match", [
    (dict(n0=0), "n0"), (dict(n=0), "n must"), (dict(batch_size=0), "batch_size"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(alpha=float("nan")), "alpha"),
])
def test_bad_certify_arguments(halfspace, kwargs, match):
    sm = fastcert.Smooth(halfspace(torch.ones(2)), 2, fastcert.Gaussian(0.5))
    args = dict(n0=10, n=100, alpha=0.01, batch_size=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sm.certify(torch.zeros(2), **args)


def test_bad_inputs(halfspace):
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            fastcert.Gaussian(bad)
    with pytest.raises(TypeError, match="noise"):
        fastcert.Smooth(halfspace(torch.ones(2)), 2, "gaussian")
    sm = fastcert.Smooth(halfspace(torch.ones(2)), 2, fastcert.Gaussian(0.5))
    with pytest.raises(ValueError, match="NaN"):
        sm.certify(torch.tensor([float("nan"), 0.0]), 10, 100, 0.01, 10)
    with pytest.raises(ValueError, match="x: shape"):
        sm.certify(torch.zeros(3), 10, 100, 0.01, 10)
    with pytest.raises(TypeError, match="x must"):
        sm.certify([0.0, 0.0], 10, 100, 0.01, 10)
    with pytest.raises(ValueError, match="num_classes"):
        fastcert.Smooth(halfspace(torch.ones(2)), 3, fastcert.Gaussian(0.5)).certify(torch.zeros(2), 10, 100, 0.01, 10)
    with pytest.raises(ValueError, match="empty"):
        sm.certify(torch.zeros(0), 10, 100, 0.01, 10)


def test_nan_logits_raise(halfspace):
    class NaNModel(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.raises(ValueError, match="NaN logits"):
        fastcert.Smooth(NaNModel(), 2, fastcert.Gaussian(0.5)).certify(torch.zeros(2), 10, 100, 0.01, 10)


def test_discrete_input_must_be_on_grid(halfspace):
    sm = fastcert.Smooth(halfspace(torch.ones(2)), 2, fastcert.Discrete(0.8, 4))
    with pytest.raises(ValueError, match="grid"):
        sm.certify(torch.tensor([0.3, 0.5]), 10, 100, 0.01, 10)


def test_autocast_changes_the_base_classifier_on_cpu():
    """autocast=bfloat16 really runs the model in bf16 (on the CPU too): two logits 1e-4 apart in float32
    round to the same bf16 value, so the tie goes to the lower class."""
    D = 8
    lin = torch.nn.Linear(D, 2, bias=False)
    with torch.no_grad():
        lin.weight[0] = 1.0
        lin.weight[1] = 1.0 + 1e-4
    x = torch.full((D,), 0.5)
    fp32 = fastcert.Smooth(lin, 2, fastcert.Gaussian(0.01))
    bf16 = fastcert.Smooth(lin, 2, fastcert.Gaussian(0.01), autocast=torch.bfloat16)
    c32, _ = fp32.sample_counts(x, 500, 100, seed=1)
    c16, _ = bf16.sample_counts(x, 500, 100, seed=1)
    assert list(c32) == [0, 500] and list(c16) == [500, 0]
    with pytest.raises(ValueError, match="cuda_graph"):
        fastcert.Smooth(lin, 2, fastcert.Gaussian(0.5), cuda_graph=True)  # needs a CUDA device
    with pytest.raises(TypeError, match="cuda_graph"):
        fastcert.Smooth(lin, 2, fastcert.Gaussian(0.5), cuda_graph="yes")
