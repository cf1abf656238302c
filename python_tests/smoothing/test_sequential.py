"""Sequential / adaptive certification (fastcert.smoothing.sequential).

The base classifier is a threshold on the first coordinate: f(z) = 1 iff z_0 > 0. With x_0 = a and
i.i.d. noise on each coordinate, p_1 = P(a + e > 0) is known in closed form, and for Gaussian,
Laplace and Uniform noise the certified radius at the true p_1 is exactly a (Phi(a/sigma);
1 - exp(-a/b)/2; 1/2 + a/(2w)). Putting a = r therefore places the top-class probability exactly at
the certification boundary of the target radius r.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testing import FirstCoordinate
from scipy.stats import beta as beta_dist
from scipy.stats import binom
from scipy.stats import norm as normal

import fastcert
from fastcert.smoothing.certificate import STREAM_ESTIMATE
from fastcert.smoothing.noise import Gaussian, Laplace, Noise, Uniform
from fastcert.smoothing.sequential import (_min_certifying_count, look_levels, look_schedule, threshold_for_radius)
from fastcert.stats import clopper_pearson_lower


NOISES = {"gaussian": Gaussian(0.25), "laplace": Laplace(0.25), "uniform": Uniform(0.5)}


def true_p(noise, a):
    if isinstance(noise, Gaussian):
        return float(normal.cdf(a / noise.sigma))
    if isinstance(noise, Laplace):
        return 1 - 0.5 * math.exp(-a / noise.scale) if a >= 0 else 0.5 * math.exp(a / noise.scale)
    return min(max(0.5 + a / (2 * noise.width), 0.0), 1.0)


def smooth_for(noise):
    return fastcert.Smooth(FirstCoordinate(), 2, noise)


def tolerance(rate, reps):
    """One-sided binomial 99.9% upper limit on the count of events under rate ``rate``."""
    return int(binom.ppf(0.999, reps, rate))


SEQ = dict(n0=20, alpha=0.2, batch_size=4096, max_n=2000, first_n=32)


# ------------------------------------------------------------------------------ helpers
def test_schedule_and_levels():
    looks = look_schedule(32, 2000, 2.0)
    assert looks == [32, 64, 128, 256, 512, 1024, 2000]
    assert look_schedule(5, 5, 2.0) == [5]
    assert look_schedule(10, 12, 1.01) == [10, 11, 12]
    for k in (1, 2, 7):
        lv = look_levels(k, 0.01, 0.5)
        assert len(lv) == k and math.isclose(sum(lv), 0.01, rel_tol=1e-12)
        assert all(v > 0 for v in lv)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_threshold_inversion(name):
    noise = NOISES[name]
    for r in (0.0, 0.01, 0.1, 0.2, 0.24):
        t = threshold_for_radius(noise, r, 1)
        assert 0.5 <= t <= 1
        if r > 0:
            assert noise.radius(t + 1e-9, 1) >= r - 1e-9
            assert noise.radius(t - 1e-6, 1) < r
            assert math.isclose(t, true_p(noise, r), rel_tol=1e-12)


class OpaqueGaussian(Noise):
    """A noise the closed forms do not recognise: forces the generic bisection."""

    norm = "l2"

    def __init__(self, sigma):
        self.g = Gaussian(sigma)

    def radius(self, p, d=1):
        return min(self.g.radius(p, d), 10.0)  # capped, so huge radii are never certifiable


def test_threshold_bisection_matches_closed_form():
    for r in (0.05, 0.3, 0.9):
        t = threshold_for_radius(OpaqueGaussian(0.5), r, 1)
        assert abs(t - normal.cdf(r / 0.5)) < 1e-10
    assert threshold_for_radius(OpaqueGaussian(0.5), 100.0, 1) > 1  # not certifiable at any p <= 1


def test_min_certifying_count_brute_force():
    noise = Gaussian(0.5)
    for n in (1, 7, 40):
        for r in (0.0, 0.1, 0.4, 2.0):
            brute = next((k for k in range(1, n + 1)
                          if clopper_pearson_lower(k, n, 0.05) > 0.5
                          and noise.radius(clopper_pearson_lower(k, n, 0.05), 1) >= r), n + 1)
            assert _min_certifying_count(noise, r, n, 0.05, 1) == brute


# ------------------------------------------------------------------------------ soundness
@pytest.mark.parametrize("name", sorted(NOISES))
def test_soundness_exactly_at_boundary(name):
    """p_1 sits exactly at the threshold of r = 0.1: certifying r happens only on the event
    'lower confidence bound >= p_1', which must have probability <= alpha over all looks."""
    noise = NOISES[name]
    s = smooth_for(noise)
    r = 0.1
    x = torch.tensor([r, 0.0])
    reps = 300
    wrong = 0
    for rep in range(reps):
        c = s.certify(x, n=SEQ["max_n"], seed=1000 + rep, radii=[r], sequential=True, **SEQ)
        wrong += c.certified[r]
    assert wrong <= tolerance(SEQ["alpha"], reps), (wrong, reps)


def test_naive_repeated_testing_is_caught():
    """The same test setting detects the invalid procedure (fixed-n Clopper-Pearson at full alpha
    applied at every look): its error rate is well above alpha, so the test above can fail."""
    noise = NOISES["gaussian"]
    s = smooth_for(noise)
    r = 0.1
    x = torch.tensor([r, 0.0])
    looks = look_schedule(SEQ["first_n"], SEQ["max_n"], 2.0)
    reps = 300
    wrong = 0
    for rep in range(reps):
        counts, _ = s.sample_counts(x, SEQ["max_n"], 4096, 1000 + rep, stream=STREAM_ESTIMATE)
        # reproduce the per-look counts by drawing prefixes (deterministic given the seed)
        hit = False
        for n_k in looks:
            c_k, _ = s.sample_counts(x, n_k, 4096, 1000 + rep, stream=STREAM_ESTIMATE)
            lo = clopper_pearson_lower(int(c_k[1]), n_k, SEQ["alpha"])
            hit |= lo > 0.5 and noise.radius(lo, 2) >= r
        assert int(c_k[1]) == int(counts[1])  # same prefix property the sequential test relies on
        wrong += hit
    assert wrong > tolerance(SEQ["alpha"], reps)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_soundness_random_near_boundary(name):
    """p_1 drawn at random just below the threshold of the largest target: every certificate of a
    radius above the true one is wrong, and wrong certificates must stay below alpha."""
    noise = NOISES[name]
    s = smooth_for(noise)
    rng = np.random.default_rng(7)
    radii = [0.05, 0.1, 0.15]
    reps = 300
    wrong = 0
    for rep in range(reps):
        a = float(rng.uniform(0.02, 0.15))  # true radius a
        c = s.certify(torch.tensor([a, 0.0]), n=SEQ["max_n"], seed=rep, radii=radii, sequential=True, **SEQ)
        wrong += (c.prediction == 0 or any(ok and rad > a for rad, ok in c.certified.items())
                  or (c.prediction == 1 and c.radius > a))
    assert wrong <= tolerance(SEQ["alpha"], reps), (wrong, reps)


def test_adaptive_mode_soundness():
    """The adaptive radius overclaims (radius > true radius a) with probability <= alpha."""
    noise = NOISES["gaussian"]
    s = smooth_for(noise)
    rng = np.random.default_rng(11)
    reps = 300
    wrong = 0
    for rep in range(reps):
        a = float(rng.uniform(0.05, 0.6))
        c = s.certify(torch.tensor([a, 0.0]), n0=50, n=4000, alpha=0.2, batch_size=4096, seed=rep,
                      sequential=True, mode="adaptive", max_n=4000, first_n=64, tol=0.02)
        wrong += c.prediction == 0 or (c.prediction == 1 and c.radius > a)
    assert wrong <= tolerance(0.2, reps), (wrong, reps)


# ------------------------------------------------------------------------------ efficiency
def test_far_from_boundary_stops_early():
    s = smooth_for(Gaussian(0.25))
    max_n = 100_000
    far_above = s.certify(torch.tensor([1.5, 0.0]), n0=100, n=max_n, alpha=0.001, batch_size=8192, seed=3,
                          radii=[0.25, 0.5], sequential=True)
    assert far_above.certified == {0.25: True, 0.5: True}
    assert far_above.n_used < max_n / 10
    # p = Phi(0.8) = 0.79: both targets ruled out and the prediction (r = 0, always a target) settled early
    far_below = s.certify(torch.tensor([0.2, 0.0]), n0=100, n=max_n, alpha=0.001, batch_size=8192, seed=3,
                          radii=[0.5, 0.75], sequential=True)
    assert far_below.certified == {0.5: False, 0.75: False}
    assert far_below.n_used < max_n / 50
    assert far_below.prediction == 1 and far_below.extra["decided"][0.0] is True
    # p = Phi(0.2) = 0.58: the targets are ruled out at once, but sampling goes on until r = 0 is settled,
    # so the prediction is kept (issue 19: never an abstention where fixed n certifies a small radius)
    close = s.certify(torch.tensor([0.05, 0.0]), n0=100, n=max_n, alpha=0.001, batch_size=8192, seed=3,
                      radii=[0.5, 0.75], sequential=True)
    assert close.certified == {0.5: False, 0.75: False}
    assert close.prediction == 1 and 0 < close.radius < 0.05 and close.n_used < max_n / 5
    # with the conservative futility rule (upper bound at each look's own level) a point exactly at the
    # boundary needs every sample; the default futility level (0.05) gives up earlier, as fixed n would
    # certify it only with probability <= alpha
    near = s.certify(torch.tensor([0.5, 0.0]), n0=100, n=20_000, alpha=0.001, batch_size=8192, seed=3,
                     radii=[0.5], sequential=True, futility=None)
    assert near.n_used == 100 + 20_000  # exactly at the boundary it needs every sample
    near_default = s.certify(torch.tensor([0.5, 0.0]), n0=100, n=20_000, alpha=0.001, batch_size=8192, seed=3,
                             radii=[0.5], sequential=True)
    assert near_default.certified == {0.5: False} and near_default.n_used < near.n_used


def test_adaptive_spends_less_on_interior_probabilities():
    s = smooth_for(Gaussian(0.25))
    kw = dict(n0=200, n=100_000, alpha=0.001, batch_size=8192, seed=5, sequential=True, mode="adaptive", tol=0.05)
    mid = s.certify(torch.tensor([0.3, 0.0]), **kw)  # p = 0.885: radius saturates quickly
    top = s.certify(torch.tensor([3.0, 0.0]), **kw)  # p ~ 1: radius keeps growing with n
    assert mid.n_used < top.n_used
    fixed = s.certify(torch.tensor([0.3, 0.0]), n0=200, n=100_000, alpha=0.001, batch_size=8192, seed=5)
    assert mid.radius >= fixed.radius - 0.05 - 0.02  # tol plus sampling slack


# ------------------------------------------------------------------------------ certificate fields
def test_certificate_fields_consistent():
    s = smooth_for(Gaussian(0.25))
    c = s.certify(torch.tensor([0.4, 0.0]), n0=100, n=50_000, alpha=0.01, batch_size=8192, seed=2,
                  radii=[0.0, 0.25, 0.5], sequential=True)
    assert isinstance(c, fastcert.Certificate)
    assert c.prediction == 1
    assert c.n_used == 100 + int(c.counts.sum()) == 100 + c.extra["n_estimation"]
    assert set(c.certified) == {0.0, 0.25, 0.5}
    for r, ok in c.certified.items():
        assert ok == (c.prediction != -1 and c.radius >= r)
    assert c.radius == pytest.approx(0.25 * normal.ppf(c.p_lower))
    assert c.radii["l2"] == c.radius
    # the reported lower bound is the best Clopper-Pearson bound over the looks taken, each at its level
    bounds = []
    for n_k, a_k in zip(c.extra["looks"], c.extra["levels"]):
        ck, _ = s.sample_counts(torch.tensor([0.4, 0.0]), n_k, 8192, 2, stream=STREAM_ESTIMATE)
        k = int(ck[1])
        bounds.append(beta_dist.ppf(a_k, k, n_k - k + 1) if k else 0.0)
    assert c.p_lower == pytest.approx(max(bounds), rel=1e-12)
    assert math.isclose(sum(look_levels(len(c.extra["schedule"]), 0.01, 0.5)), 0.01)


class _ArgmaxOfThree(torch.nn.Module):
    """Three classes, the largest of the first three coordinates: at x = 0 each has probability 1/3."""

    def forward(self, z):
        return z.reshape(z.shape[0], -1)[:, :3]


def test_abstain_when_no_class_dominates():
    s = fastcert.Smooth(_ArgmaxOfThree(), 3, Gaussian(0.25))
    for seed in range(3):
        c = s.certify(torch.zeros(3), n0=100, n=100_000, alpha=0.01, batch_size=8192, seed=seed,
                      radii=[0.1], sequential=True)
        assert c.prediction == -1 and c.radius == 0.0 and c.certified == {0.1: False}
        # p_A = 1/3 is far below the 1/2 that r = 0 needs: futility settles it within the first looks
        assert c.n_used < 100 + 2_000, c.extra["looks"]


def test_deterministic_given_seed():
    s = smooth_for(Gaussian(0.25))
    x = torch.tensor([0.3, 0.0])
    kw = dict(n0=100, n=30_000, alpha=0.01, radii=[0.25, 0.5], sequential=True)
    a = s.certify(x, batch_size=4096, seed=42, **kw)
    b = s.certify(x, batch_size=333, seed=42, **kw)
    assert a.certified == b.certified and a.n_used == b.n_used and a.p_lower == b.p_lower
    assert np.array_equal(a.counts, b.counts)
    for mode in ("adaptive",):
        a = s.certify(x, n0=100, n=30_000, alpha=0.01, batch_size=4096, seed=9, sequential=True, mode=mode)
        b = s.certify(x, n0=100, n=30_000, alpha=0.01, batch_size=1000, seed=9, sequential=True, mode=mode)
        assert a.radius == b.radius and a.n_used == b.n_used


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, err", [
    (dict(mode="radii"), ValueError),                      # no target radii
    (dict(radii=[0.1], mode="bogus"), ValueError),
    (dict(radii=[-0.1]), ValueError),
    (dict(radii=[float("nan")]), ValueError),
    (dict(radii=["a"]), TypeError),
    (dict(radii=[0.1], first_n=5000), ValueError),           # first_n > max_n
    (dict(radii=[0.1], growth=1.0), ValueError),
    (dict(radii=[0.1], final_share=1.0), ValueError),
    (dict(radii=[0.1], final_share=0.0), ValueError),
    (dict(radii=[0.1], tol=-1.0), ValueError),
    (dict(radii=[0.1], max_n=0), ValueError),
    (dict(radii=[0.1], max_n=2.5), TypeError),
    (dict(radii=[0.1], first_n=True), TypeError),
    (dict(radii=[0.1], bogus_option=3), TypeError),
])
def test_bad_arguments(kwargs, err):
    s = smooth_for(Gaussian(0.25))
    kw = dict(n0=10, n=1000, alpha=0.01, batch_size=100, seed=0, sequential=True)
    kw.update(kwargs)
    with pytest.raises(err):
        s.certify(torch.tensor([0.3, 0.0]), **kw)


def test_bad_input_x_and_alpha():
    s = smooth_for(Gaussian(0.25))
    with pytest.raises(ValueError, match="NaN"):
        s.certify(torch.tensor([float("nan"), 0.0]), 10, 100, 0.01, 100, radii=[0.1], sequential=True)
    with pytest.raises(ValueError, match="alpha"):
        s.certify(torch.tensor([0.1, 0.0]), 10, 100, 1.5, 100, radii=[0.1], sequential=True)
    with pytest.raises(ValueError, match="alpha"):
        fastcert.smoothing.sequential.certify_sequential(s, torch.tensor([0.1, 0.0]), n0=10, alpha=0.0, batch_size=10,
                                               radii=[0.1], max_n=100)


def test_final_look_sees_the_fixed_n_samples():
    """An input undecided until the last look is certified from exactly fixed-n CERTIFY's samples
    (same seed): the counts agree, and the bound is Clopper-Pearson on them at the last look's level."""
    noise = NOISES["gaussian"]
    s = smooth_for(noise)
    x = torch.tensor([0.2, 0.0])  # p_1 = Phi(0.8) ~ 0.79: the target 0.2 needs p_1 >= 0.79, never settled early
    c = s.certify(x, n=SEQ["max_n"], seed=7, radii=[0.2], sequential=True, futility=None, **SEQ)
    assert c.extra["looks"][-1] == SEQ["max_n"]
    fixed = s.certify(x, SEQ["n0"], SEQ["max_n"], SEQ["alpha"], SEQ["batch_size"], seed=7)
    assert np.array_equal(c.counts, fixed.counts)
    k = int(c.counts[1])
    last = clopper_pearson_lower(k, SEQ["max_n"], c.extra["levels"][-1])
    assert c.p_lower >= last and c.p_lower <= fixed.p_lower + 1e-12


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_price_rule_predictions_match_scalar_bounds(name):
    """The vectorized predicted radii of the adaptive price rule equal the scalar computation (Clopper-
    Pearson at each look's level on the count rate * n_m, then the noise's radius)."""
    from fastcert.smoothing.sequential import SequentialPlan, _predicted_radius

    noise = NOISES[name]
    plan = SequentialPlan(noise, 2, 0.001, 50_000, "adaptive", None, 128, 1.25, 0.5, "uniform", 0.05, 0.01, 3e5)
    for rate in (0.6, 0.97, 0.9995, 1.0):
        for start in (0, 7, len(plan.looks) - 1):
            got = plan.predicted_radii(rate, start)
            want = [_predicted_radius(noise, rate, n, a, 2) for n, a in zip(plan.looks[start:], plan.levels[start:])]
            assert np.allclose(got, want, rtol=1e-12, atol=0), (rate, start)


def test_price_rule_spends_fewer_samples_where_the_radius_grows_slowly():
    """At pA ~ 1 the radius grows like sqrt(log n) and never stops growing, so the tol rule alone
    (tol = 0) runs to max_n; the price rule stops once later looks add less radius than their samples
    are worth, and a higher price buys more samples."""
    s = smooth_for(Gaussian(0.25))
    x = torch.tensor([2.0, 0.0])  # pA = Phi(8)
    kw = dict(n0=100, n=100_000, alpha=0.001, batch_size=8192, seed=3, sequential=True, mode="adaptive", tol=0.0)
    full = s.certify(x, price=None, **kw)
    cheap = s.certify(x, price=3e4, **kw)
    dear = s.certify(x, price=1e5, **kw)
    assert full.n_used == 100 + 100_000
    assert cheap.n_used < dear.n_used < full.n_used
    assert 0 < cheap.radius < dear.radius <= full.radius
    assert cheap.extra["price"] == 3e4 and full.extra["price"] is None
    # the default price (3e5 per sigma) values the last look's larger share of alpha: run to the end
    assert s.certify(x, **kw).n_used == full.n_used
