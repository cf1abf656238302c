"""Certified confidence (Kumar, Levine, Feizi & Goldstein 2020): coverage of the CDF- and
expectation-based bounds on models with known smoothed confidence, a brute-force cross-check of the
CDF bound, input validation, end-to-end runs through Smooth, and the authors' published logs."""
from __future__ import annotations

import csv
import glob
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import expit

import fastcert
from fastcert.io.readers import ConfidenceLog, read_kumar_log
from fastcert.smoothing.confidence import (DEFAULT_RADII, MEASURES, _cdf_bounds, _expectation_transform,
                                           certified_accuracy_at_confidence, certify_confidence, confidence_bounds,
                                           confidence_columns, confidence_values, dkw_epsilon, kumar_log_columns)

DATA = os.environ.get("FASTCERT_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
KUMAR_LOGS = sorted(glob.glob(os.path.join(DATA, "kumar_*")))
RADII = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.5])


# ------------------------------------------------------------------ models with known truth
# Each base confidence depends on the input only through its first coordinate u and is
# non-decreasing in u. Under N(0, sigma^2 I) noise at x the smoothed confidence is
# F(x) = E[h(x_0 + sigma g)], g ~ N(0, 1); over the l2 ball of radius R it is smallest at x - R e_0.
K = 3.0
MODELS = {
    # softmax score of class 0 for logits (k u, 0): sigmoid(k u)
    "score_sigmoid": ("score", lambda u: expit(K * u), None),
    # margin of class 0 for logits (k u, 0, 0): (e^{ku} - 1) / (e^{ku} + 2), in (-1/2, 1)
    "margin_softmax3": ("margin", lambda u: np.expm1(K * u) / (np.exp(K * u) + 2.0), None),
    # two-valued (atoms, ties in the samples): 0.05 or 0.95
    "score_step": ("score", lambda u: np.where(u > 0, 0.95, 0.05), (0.05, 0.9)),
    "margin_step": ("margin", lambda u: np.where(u > 0, 0.8, -0.6), (-0.6, 1.4)),
}


def true_worst(model, x0, sigma, radii):
    """min over the l2 ball of radius R of E[h(x + delta)]: E[h(x0 - R + sigma g)]."""
    _, h, step = MODELS[model]
    out = []
    for r in radii:
        if step is not None:  # low + jump * P(x0 - R + sigma g > 0)
            out.append(step[0] + step[1] * stats.norm.cdf((x0 - r) / sigma))
        else:
            out.append(integrate.quad(lambda g: h(np.array(x0 - r + sigma * g)) * stats.norm.pdf(g), -12, 12,
                                      epsabs=1e-12, points=[(r - x0) / sigma])[0])
    return np.array(out)


def sample(model, x0, sigma, n, rng):
    return MODELS[model][1](x0 + sigma * rng.standard_normal(n))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_coverage_both_methods(model):
    """Over repeated trials, a bound exceeds the true worst-case smoothed confidence (at any radius)
    in at most an alpha fraction of trials (up to binomial noise); with the statistical margins
    removed the same check fails often, so it has the power to catch an unsound bound."""
    measure = MODELS[model][0]
    lo, hi = MEASURES[measure]
    sigma, x0, n, trials, alpha = 0.5, 0.4, 400, 1000, 0.1
    truth = true_worst(model, x0, sigma, RADII)
    rng = np.random.default_rng(sorted(MODELS).index(model))
    fail = {"cdf": 0, "exp": 0, "cdf_no_band": 0, "exp_no_hoeffding": 0}
    gap0 = {"cdf": [], "exp": []}
    for _ in range(trials):
        y = sample(model, x0, sigma, n, rng)
        cdf, exp = confidence_bounds(y, sigma, RADII, alpha, measure=measure)
        assert cdf.shape == exp.shape == RADII.shape
        fail["cdf"] += bool(np.any(cdf > truth))
        fail["exp"] += bool(np.any(exp > truth))
        gap0["cdf"].append(truth[0] - cdf[0])
        gap0["exp"].append(truth[0] - exp[0])
        # unsound variants (no DKW band / no Hoeffding term) for the power check
        fail["cdf_no_band"] += bool(np.any(_cdf_bounds(np.sort(y), 0.0, sigma, RADII, lo) > truth))
        fail["exp_no_hoeffding"] += bool(np.any(_expectation_transform(float(np.mean(y)), sigma, RADII, lo, hi)
                                                > truth))
    limit = stats.binom.ppf(1 - 1e-4, trials, alpha)
    assert fail["cdf"] <= limit, fail
    assert fail["exp"] <= limit, fail
    assert fail["cdf_no_band"] > 3 * alpha * trials, fail
    assert fail["exp_no_hoeffding"] > 3 * alpha * trials, fail
    # not trivially loose: at R = 0 both sit about (b - a) * eps below the truth on average
    eps = dkw_epsilon(n, alpha)
    assert np.mean(gap0["cdf"]) < 1.2 * (hi - lo) * eps
    assert np.mean(gap0["exp"]) < 1.2 * (hi - lo) * eps


def test_cdf_bound_is_tight_for_halfspace_level_sets():
    """For a confidence that is monotone in one coordinate every level set is a half-space, where the
    Neyman-Pearson shift is exact: with the true CDF (huge n, tiny band) the CDF bound approaches the
    true worst case at every radius, while the expectation bound stays far below at R > 0."""
    sigma, x0 = 0.5, 0.4
    truth = true_worst("score_sigmoid", x0, sigma, RADII)
    y = sample("score_sigmoid", x0, sigma, 400_000, np.random.default_rng(3))
    cdf, exp = confidence_bounds(y, sigma, RADII, 0.4)
    assert np.all(cdf <= truth + 1e-9)
    gap = truth - cdf
    assert np.all(gap[RADII <= 0.5] < 0.003) and np.all(gap < 0.015), gap  # the band grows with R
    assert np.all(exp[1:] < cdf[1:] - 0.02)


def test_expectation_transform_is_valid_with_exact_mean():
    """The Lipschitz transform alone (no sampling) never exceeds the truth."""
    for model in MODELS:
        measure = MODELS[model][0]
        lo, hi = MEASURES[measure]
        for sigma, x0 in [(0.25, 0.1), (0.5, 0.4), (1.0, -0.2)]:
            truth = true_worst(model, x0, sigma, RADII)
            bound = _expectation_transform(truth[0], sigma, RADII, lo, hi)
            assert bound[0] == pytest.approx(truth[0], abs=1e-12)
            assert np.all(bound <= truth + 1e-9), (model, sigma, x0)


# ------------------------------------------------------------------ brute force and properties
def brute_cdf_bound(y, sigma, radius, alpha, lo, thresholds=None):
    """The theorem written out: thresholds t_1 <= ... <= t_m (default: every distinct sample),
    p_k = max(#{y >= t_k} / n - eps, 0), bound = lo + sum (t_k - t_{k-1}) Phi(Phi^-1(p_k) - R / sigma)."""
    n = len(y)
    eps = math.sqrt(math.log(1 / alpha) / (2 * n)) if alpha <= 0.5 else math.sqrt(math.log(2 / alpha) / (2 * n))
    ts = sorted(set(float(v) for v in y)) if thresholds is None else list(thresholds)
    total, prev = lo, lo
    for t in ts:
        p = max(sum(1 for v in y if v >= t) / n - eps, 0.0)
        if p > 0:
            total += (t - prev) * stats.norm.cdf(stats.norm.ppf(p) - radius / sigma)
        prev = t
    return total


@pytest.mark.parametrize("measure", ["score", "margin"])
@pytest.mark.parametrize("alpha", [0.001, 0.2, 0.7])
def test_cdf_bound_matches_brute_force(measure, alpha, rng):
    lo, hi = MEASURES[measure]
    y = np.round(rng.uniform(lo, hi, 150), 2)  # rounding makes ties
    y[:5] = hi
    cdf, _ = confidence_bounds(y, 0.3, RADII, alpha, measure=measure)
    ref = [brute_cdf_bound(list(y), 0.3, r, alpha, lo) for r in RADII]
    np.testing.assert_allclose(cdf, ref, rtol=0, atol=1e-12)


def test_num_thresholds_reproduces_authors_scheme(rng):
    """Without ties and with m | n, every (n/m)-th sorted sample with the authors' level (m - i)/m."""
    n, m, sigma, alpha = 1000, 100, 0.25, 0.001
    y = rng.beta(5, 2, n)
    srt = np.sort(y)
    eps = math.sqrt(math.log(1 / alpha) / (2 * n))
    th = srt[:: n // m]
    for r in RADII:
        ref, prev = 0.0, 0.0
        for i, t in enumerate(th):
            p = max((m - i) / m - eps, 0.0)
            ref += (t - prev) * stats.norm.cdf(stats.norm.ppf(p) - r / sigma)
            prev = t
        got = confidence_bounds(y, sigma, [r], alpha, num_thresholds=m)[0][0]
        assert got == pytest.approx(ref, abs=1e-12)
        assert got <= confidence_bounds(y, sigma, [r], alpha)[0][0] + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=120),
    st.floats(0.05, 3.0),
    st.floats(1e-4, 0.99),
    st.sampled_from(["score", "margin"]),
    st.integers(1, 50),
)
def test_bound_properties(vals, sigma, alpha, measure, m):
    lo, hi = MEASURES[measure]
    y = lo + (hi - lo) * np.array(vals)
    radii = [0.0, 0.1, 0.3, 1.0, 3.0]
    cdf, exp = confidence_bounds(y, sigma, radii, alpha, measure=measure)
    mean = float(np.mean(y))
    for b in (cdf, exp):
        assert np.all(np.diff(b) <= 1e-12)  # non-increasing in R
        assert np.all((b >= lo) & (b <= hi))
        assert b[0] <= mean + 1e-12  # at R = 0 below the empirical mean
    coarse, _ = confidence_bounds(y, sigma, radii, alpha, measure=measure, num_thresholds=m)
    assert np.all(coarse <= cdf + 1e-12)  # fewer thresholds never help


def test_constant_scores():
    """A base classifier that always outputs confidence 1: both bounds are 1 - eps-ish at R = 0."""
    n, alpha = 1000, 0.01
    cdf, exp = confidence_bounds(np.ones(n), 0.5, [0.0, 0.5], alpha)
    eps = dkw_epsilon(n, alpha)
    assert cdf[0] == pytest.approx(1 - eps)
    assert exp[0] == pytest.approx(1 - eps)
    assert cdf[1] == pytest.approx(stats.norm.cdf(stats.norm.ppf(1 - eps) - 1.0))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(scores=[0.5, 1.2]), ValueError, "scores"),
    (dict(scores=[0.5, -0.1]), ValueError, "scores"),
    (dict(scores=[0.5, float("nan")]), ValueError, "scores"),
    (dict(scores=[]), ValueError, "scores"),
    (dict(scores=np.ones((2, 2)) / 2), ValueError, "scores"),
    (dict(scores=["a"]), TypeError, "scores"),
    (dict(scores=[-1.5], measure="margin"), ValueError, "scores"),
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma=-1.0), ValueError, "sigma"),
    (dict(sigma=float("nan")), ValueError, "sigma"),
    (dict(sigma="x"), TypeError, "sigma"),
    (dict(radii=[0.0, -0.5]), ValueError, "radii"),
    (dict(radii=[]), ValueError, "radii"),
    (dict(radii=[float("inf")]), ValueError, "radii"),
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha=1.0), ValueError, "alpha"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(measure="logit"), ValueError, "measure"),
    (dict(num_thresholds=0), ValueError, "num_thresholds"),
    (dict(num_thresholds=2.5), TypeError, "num_thresholds"),
])
def test_bad_input(kwargs, exc, word):
    args = dict(scores=[0.2, 0.9, 0.7], sigma=0.5, radii=[0.0, 0.5], alpha=0.01, measure="score")
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        confidence_bounds(**args)


def test_margins_accepted_and_public_name():
    cdf, exp = fastcert.confidence_bounds([-0.5, 0.9, 1.0], 0.5, 0.25, 0.1, measure="margin")
    assert cdf.shape == exp.shape == (1,)
    assert cdf.dtype == np.float64


# ------------------------------------------------------------------ end to end through Smooth
class OneCoordinate(torch.nn.Module):
    """Three classes with logits (k x_0, 0, 0): score/margin of class 0 as in MODELS."""

    def forward(self, x):
        u = K * x.reshape(x.shape[0], -1)[:, 0]
        z = torch.zeros_like(u)
        return torch.stack([u, z, z], 1)


@pytest.mark.parametrize("measure, model", [("score", None), ("margin", "margin_softmax3")])
def test_certify_confidence_synthetic(measure, model):
    sigma, x0 = 0.5, 0.6
    smooth = fastcert.Smooth(OneCoordinate(), 3, fastcert.Gaussian(sigma))
    x = torch.tensor([x0, 0.3, -0.2, 0.9])
    cert = certify_confidence(smooth, x, n0=64, n=4000, alpha=0.001, batch_size=1000, seed=11, radii=RADII,
                              measure=measure)
    if model is None:  # score of class 0 among 3 classes: e^{ku} / (e^{ku} + 2)
        truth = np.array([integrate.quad(lambda g: 1 / (1 + 2 * np.exp(-K * (x0 - r + sigma * g))) *
                                         stats.norm.pdf(g), -12, 12)[0] for r in RADII])
    else:
        truth = true_worst(model, x0, sigma, RADII)
    assert cert.selected == 0 and cert.prediction == 0
    assert cert.n_used == 4064 and cert.measure == measure
    assert np.all(cert.cdf <= truth) and np.all(cert.expectation <= truth)
    assert truth[0] - cert.cdf[0] < 0.06
    assert abs(cert.mean - truth[0]) < 5 * 0.5 / math.sqrt(4000)
    # the bounds are confidence_bounds of stream 5's per-sample values
    _, vals = smooth.sample_counts(x, 4000, 700, 11, 5, cls=0, measure=measure)
    cdf, exp = confidence_bounds(vals, sigma, RADII, 0.001, measure=measure)
    np.testing.assert_array_equal(cdf, cert.cdf)
    np.testing.assert_array_equal(exp, cert.expectation)
    # deterministic given the seed
    again = certify_confidence(smooth, x, n0=64, n=4000, alpha=0.001, batch_size=999, seed=11, radii=RADII,
                               measure=measure)
    np.testing.assert_array_equal(again.cdf, cert.cdf)


@pytest.mark.parametrize("trials", [50, pytest.param(600, marks=pytest.mark.slow)])
def test_coverage_through_smooth(trials):
    """Repeated certify_confidence runs (fresh seeds) on the synthetic model: the bounds fail in at most
    an alpha fraction (up to binomial noise), for both measures; the kernels' values are the samples."""
    sigma, x0, alpha = 0.5, 0.8, 0.2
    smooth = fastcert.Smooth(OneCoordinate(), 3, fastcert.Gaussian(sigma))
    x = torch.tensor([x0, 0.5])
    truth = {"score": np.array([integrate.quad(lambda g: 1 / (1 + 2 * np.exp(-K * (x0 - r + sigma * g))) *
                                               stats.norm.pdf(g), -12, 12)[0] for r in RADII]),
             "margin": true_worst("margin_softmax3", x0, sigma, RADII)}
    fails = {"score": 0, "margin": 0}
    for t in range(trials):
        for measure in fails:
            c = certify_confidence(smooth, x, 16, 300, alpha, 316, seed=1000 + t, radii=RADII, measure=measure)
            assert c.selected == 0
            fails[measure] += bool(np.any(c.cdf > truth[measure]) or np.any(c.expectation > truth[measure]))
    limit = stats.binom.ppf(1 - 1e-4, trials, 2 * alpha)  # either of two bounds, each at level alpha
    assert max(fails.values()) <= limit, fails


@pytest.mark.parametrize("measure", ["score", "margin"])
def test_certify_confidence_abstains(measure):
    """At x_0 = -1 class 0 is rare; classes 1 and 2 tie, so neither has expected score > 1/2 or a
    positive expected margin: abstain."""
    smooth = fastcert.Smooth(OneCoordinate(), 3, fastcert.Gaussian(0.5))
    cert = certify_confidence(smooth, torch.tensor([-1.0, 0.0]), n0=50, n=500, alpha=0.01, batch_size=500, seed=2,
                              radii=[0.5, 1.0], measure=measure)
    assert cert.selected in (1, 2)
    assert cert.prediction == -1
    assert cert.cdf.shape == (2,)


def test_certify_confidence_bad_input():
    smooth = fastcert.Smooth(OneCoordinate(), 3, fastcert.Laplace(0.5))
    with pytest.raises(ValueError, match="noise"):
        certify_confidence(smooth, torch.zeros(2), 10, 10, 0.01, 10, seed=0)
    smooth = fastcert.Smooth(OneCoordinate(), 3, fastcert.Gaussian(0.5))
    with pytest.raises(ValueError, match="measure"):
        certify_confidence(smooth, torch.zeros(2), 10, 10, 0.01, 10, seed=0, measure="logit")
    with pytest.raises(ValueError, match="radii"):
        certify_confidence(smooth, torch.zeros(2), 10, 10, 0.01, 10, seed=0, radii=[-1])
    with pytest.raises(ValueError, match="alpha"):
        certify_confidence(smooth, torch.zeros(2), 10, 10, 1.5, 10, seed=0)
    with pytest.raises(ValueError, match="n0"):
        certify_confidence(smooth, torch.zeros(2), 0, 10, 0.1, 10, seed=0)


def test_certify_confidence_digits_model():
    """A small CNN on digits after a few noisy training steps, certified with both measures."""
    from fastcert.data import load_dataset
    from fastcert.models.zoo import build_model

    torch.manual_seed(0)
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    model = build_model("cnn_small", (1, 8, 8), 10, train.mean, train.std)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(train.x), torch.as_tensor(train.y)
    for step in range(25):
        idx = torch.randint(0, len(yt), (128,))
        xb = xt[idx] + 0.25 * torch.randn_like(xt[idx])
        loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    smooth = fastcert.Smooth(model, 10, fastcert.Gaussian(0.25))
    radii = [0.0, 0.25, 0.5]
    for i in range(2):
        x = torch.as_tensor(test.x[i])
        for measure in ("score", "margin"):
            lo, hi = MEASURES[measure]
            cert = certify_confidence(smooth, x, n0=32, n=300, alpha=0.01, batch_size=150, seed=i, radii=radii,
                                      measure=measure)
            assert cert.prediction in (-1, cert.selected)
            assert 0 <= cert.selected < 10
            for b in (cert.cdf, cert.expectation):
                assert b.shape == (3,) and np.all(np.diff(b) <= 0) and np.all((b >= lo) & (b <= hi))
            assert cert.cdf[0] <= cert.mean + 1e-12
            if cert.prediction != -1:
                assert cert.cdf[0] > (0.5 if measure == "score" else 0.0)
            row = confidence_values(cert)
            assert list(row) == confidence_columns(radii)
            assert all(float(row[c]) <= v for c, v in zip(row, list(cert.cdf) + list(cert.expectation)))


# ------------------------------------------------------------------ logs
def test_columns():
    tags = ("00", "25", "50", "75", "100", "125", "150")
    assert confidence_columns(DEFAULT_RADII) == [f"exp_cdf_{t}" for t in tags] + [f"exp_{t}" for t in tags]
    assert confidence_columns([0.125, 2]) == ["exp_cdf_12p5", "exp_cdf_200", "exp_12p5", "exp_200"]
    with pytest.raises(ValueError, match="radii"):
        confidence_columns([0.25, 0.25])
    assert kumar_log_columns([0.5])[:3] == ["idx", "label", "predict"]
    assert kumar_log_columns([0.5])[-2:] == ["correct", "time"]


@pytest.mark.skipif(len(KUMAR_LOGS) != 8, reason="the authors' logs are not in ../shared/data")
@pytest.mark.parametrize("path", KUMAR_LOGS, ids=os.path.basename)
def test_read_kumar_logs(path):
    log = read_kumar_log(path)
    assert isinstance(log, ConfidenceLog) and len(log) == 500
    np.testing.assert_allclose(log.radii, DEFAULT_RADII)
    assert log.cdf.shape == log.exp.shape == (500, 7)
    assert np.all(log.time > 0) and np.all(np.isfinite(log.cdf))
    assert set(np.unique(log.correct)) <= {0, 1}
    np.testing.assert_array_equal(log.correct, (log.predict == log.label).astype(np.int64))
    ab = log.predict == -1
    assert np.all(log.cdf[ab] == 0) and np.all(log.exp[ab] == 0)
    # our expectation transform reproduces the authors' exp_XX columns from their exp_00, up to the
    # 3-significant-digit rounding of the log (propagated through the transform as an interval)
    measure = "margin" if "margin" in path else "score"
    lo, hi = MEASURES[measure]
    sigma = float(path.rsplit("_", 1)[1])

    def half_ulp(v):
        a = np.abs(v)
        return np.where(a > 0, 0.5 * 10.0 ** (np.floor(np.log10(np.where(a > 0, a, 1))) - 2), 0) * (1 + 1e-9)

    checked = 0
    for i in np.flatnonzero(~ab):
        e0 = log.exp[i, 0]
        lo_b = _expectation_transform(e0 - half_ulp(e0), sigma, log.radii, lo, hi)
        hi_b = _expectation_transform(e0 + half_ulp(e0), sigma, log.radii, lo, hi)
        h = half_ulp(log.exp[i])
        assert np.all(log.exp[i] + h >= lo_b) and np.all(log.exp[i] - h <= hi_b), (i, log.exp[i], lo_b, hi_b)
        checked += 1
    assert checked > 250
    # the authors abstain when the R = 0 CDF bound is below 1/2 (score) or 0 (margin)
    assert np.all(log.cdf[~ab, 0] >= (0.5 if measure == "score" else 0.0))


def direct_certified_accuracy(path, col_offset, k, threshold):
    """Plain csv + numpy, by column position as in the authors' cert_acc.py."""
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    vals = np.array([float(r[col_offset + k]) for r in rows])
    correct = np.array([int(r[17]) for r in rows])
    return float(np.sum(correct[vals > threshold])) / len(rows), float(np.sum(correct[vals >= threshold])) / len(rows)


@pytest.mark.skipif(len(KUMAR_LOGS) != 8, reason="the authors' logs are not in ../shared/data")
def test_certified_accuracy_matches_direct_computation():
    for path in KUMAR_LOGS:
        log = read_kumar_log(path)
        thresholds = [0.0, 0.3, 0.5, 0.7, 0.9] if "margin" in path else [0.5, 0.6, 0.7, 0.8, 0.9]
        for k, r in enumerate(DEFAULT_RADII):
            for thr in thresholds:
                for method, off in (("cdf", 3), ("exp", 10)):
                    strict, incl = direct_certified_accuracy(path, off, k, thr)
                    assert certified_accuracy_at_confidence(log, r, thr, method) == strict
                    assert certified_accuracy_at_confidence(log, r, thr, method, inclusive=True) == incl
    # the CDF method certifies at least as much as the expectation method at R = 0.5 here
    p = [q for q in KUMAR_LOGS if q.endswith("cifar10_pred_score_noise_0.25")][0]
    assert certified_accuracy_at_confidence(p, 0.5, 0.7, "cdf") >= certified_accuracy_at_confidence(p, 0.5, 0.7, "exp")


def test_log_roundtrip_and_errors(tmp_path):
    from fastcert.io.logs import LogWriter, format_time

    radii = [0.0, 0.125, 0.5]
    smooth = fastcert.Smooth(OneCoordinate(), 3, fastcert.Gaussian(0.5))
    path = tmp_path / "conf.tsv"
    certs = []
    with LogWriter(path, kumar_log_columns(radii)) as w:
        for i, x0 in enumerate([0.8, -1.0, 0.3]):
            c = certify_confidence(smooth, torch.tensor([x0]), 20, 200, 0.01, 200, seed=i, radii=radii)
            certs.append(c)
            w.write({"idx": i, "label": 0, "predict": c.prediction, **confidence_values(c),
                     "correct": int(c.prediction == 0), "time": format_time(0.5 + i)})
    log = read_kumar_log(path)
    np.testing.assert_allclose(log.radii, radii)
    np.testing.assert_array_equal(log.time, [0.5, 1.5, 2.5])
    for i, c in enumerate(certs):
        assert np.all(log.cdf[i] <= c.cdf) and np.all(c.cdf - log.cdf[i] < 2e-6)
        assert np.all(log.exp[i] <= c.expectation) and np.all(c.expectation - log.exp[i] < 2e-6)
    expect = np.mean([(c.prediction == 0) and c.cdf[2] > 0.6 for c in certs])
    assert certified_accuracy_at_confidence(log, 0.5, 0.6, "cdf") == pytest.approx(expect)
    with pytest.raises(ValueError, match="radius"):
        certified_accuracy_at_confidence(log, 0.25, 0.6)
    with pytest.raises(ValueError, match="method"):
        certified_accuracy_at_confidence(log, 0.5, 0.6, method="mean")
    with pytest.raises(FileNotFoundError):
        read_kumar_log(tmp_path / "missing.tsv")
    cohen = tmp_path / "cohen.tsv"
    cohen.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0:00:01.000000\n")
    with pytest.raises(ValueError, match="exp_cdf"):
        read_kumar_log(cohen)
    torn = tmp_path / "torn.tsv"
    torn.write_text("idx\tlabel\tpredict\texp_cdf_00\texp_00\tcorrect\ttime\n0\t1\t1\t0.5\n")
    with pytest.raises(ValueError, match="fields"):
        read_kumar_log(torn)


def test_threshold_tie_strict_vs_inclusive(tmp_path):
    p = tmp_path / "tie.tsv"
    p.write_text("idx\tlabel\tpredict\texp_cdf_00\texp_00\tcorrect\ttime\n"
                 "0\t1\t1\t0.7\t0.6\t1\t0:00:01.5\n1\t2\t2\t0.8\t0.7\t1\t0:00:01.5\n2\t0\t3\t0.9\t0.9\t0\t1.5\n")
    assert certified_accuracy_at_confidence(p, 0.0, 0.7, "cdf") == pytest.approx(1 / 3)
    assert certified_accuracy_at_confidence(p, 0.0, 0.7, "cdf", inclusive=True) == pytest.approx(2 / 3)
    assert certified_accuracy_at_confidence(p, 0.0, 0.7, "exp", inclusive=True) == pytest.approx(1 / 3)
