"""Top-k certification (Jia, Cao, Wang & Gong 2020): fastcert.smoothing.topk.

Oracle: a "slab" base classifier that looks at one coordinate u = z_0 only and assigns classes to
intervals of u. Its smoothed class probabilities are exact differences of the noise CDF, and the
smoothed classifier's true top-k robustness radius is one-dimensional (perturbing other coordinates
changes nothing, and a perturbation moves u by at most its l2 norm, resp. l1 norm), found here by a
fine grid plus root refinement.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import bdtr, bdtrc
from scipy.stats import laplace as sp_laplace
from scipy.stats import norm as sp_norm

import fastcert
from fastcert.smoothing.noise import Discrete, Gaussian, Laplace, Uniform
from fastcert.smoothing.smooth import Smooth
from fastcert.stats import clopper_pearson_lower, clopper_pearson_upper
from fastcert.io.readers import read_counts_file
from fastcert.smoothing.topk import (certify_topk, simultaneous_bounds, topk_certified_accuracy, topk_radii, topk_radius,
                                     topk_radius_from_bounds, topk_radius_laplace)

# Published data live next to the repository (/work/shared/data for /work/main), not in it: a clean
# clone (CI) does not have them, and the tests that read them skip, saying so.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
JIA_FILE = SHARED_DATA / "jia_topk_counts_cifar10_sigma0.25.txt"
needs_jia_file = pytest.mark.skipif(
    not JIA_FILE.is_file(),
    reason=f"Jia et al.'s counts file {JIA_FILE} is absent: the shared data directory sits outside the "
           "repository and is not part of a clean clone (CI)")


# ------------------------------------------------------------------------------------- slab oracle
class Slab:
    """Intervals (-inf, tau_0), [tau_0, tau_1), ..., [tau_last, inf) of u, owned by ``owners``."""

    def __init__(self, tau, owners, num_classes):
        self.tau = np.asarray(tau, dtype=np.float64)
        self.owners = np.asarray(owners, dtype=np.int64)
        assert len(self.owners) == len(self.tau) + 1
        self.C = num_classes

    def probs(self, m, cdf):
        """Exact smoothed probabilities (len(m), C) at centres m (u-coordinate of the input)."""
        m = np.atleast_1d(np.asarray(m, dtype=np.float64))
        edges = np.concatenate([[-np.inf], self.tau, [np.inf]])
        F = cdf(edges[None, :] - m[:, None])
        mass = np.diff(F, axis=1)
        out = np.zeros((len(m), self.C))
        for i, c in enumerate(self.owners):
            out[:, c] += mass[:, i]
        return out

    def margin(self, m, label, k, cdf):
        """p_label - (k-th largest probability among the others); <= 0 means label left the top k."""
        p = self.probs(m, cdf)
        others = np.delete(p, label, axis=1)
        kth = -np.sort(-others, axis=1)[:, k - 1]
        return p[:, label] - kth

    def true_radius(self, m0, label, k, cdf, rmax, grid=8001):
        if k >= self.C:
            return math.inf
        if self.margin(m0, label, k, cdf)[0] <= 0:
            return 0.0
        rs = np.linspace(0.0, rmax, grid)
        best = math.inf
        for sgn in (1.0, -1.0):
            mg = self.margin(m0 + sgn * rs, label, k, cdf)
            bad = np.nonzero(mg <= 0)[0]
            if bad.size:
                i = bad[0]
                f = lambda r: self.margin(m0 + sgn * r, label, k, cdf)[0]  # noqa: E731
                r = brentq(f, rs[i - 1], rs[i], xtol=1e-13) if mg[i] < 0 else rs[i]
                best = min(best, r)
        return best

    def torch_model(self):
        tau = torch.tensor(self.tau, dtype=torch.float32)
        owners = torch.tensor(self.owners)
        C = self.C

        class _M(torch.nn.Module):
            def forward(self, z):
                u = z.reshape(z.shape[0], -1)[:, 0].contiguous()
                idx = torch.bucketize(u, tau, right=True)  # number of thresholds <= u
                return torch.nn.functional.one_hot(owners[idx], C).to(torch.float32)

        return _M()


def gauss_cdf(sigma):
    return lambda v: sp_norm.cdf(v / sigma)


def lap_cdf(b):
    return lambda v: sp_laplace.cdf(v, scale=b)


def random_slab(rng, scale):
    C = int(rng.integers(3, 7))
    n_int = int(rng.integers(C, 2 * C + 1))
    tau = np.sort(rng.uniform(-2.0, 2.0, n_int - 1)) * scale
    owners = rng.integers(0, C, n_int)
    owners[: C] = rng.permutation(C)[: min(C, n_int)]  # every class owns at least one interval
    rng.shuffle(owners)
    return Slab(tau, owners, C)


# ------------------------------------------------------------------------------------- theorem (no statistics)
@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_theorem_sound_with_exact_probabilities(noise):
    """With the exact probabilities as bounds, the radius never exceeds the true top-k radius."""
    rng = np.random.default_rng(1234 if noise == "gaussian" else 4321)
    scale = 0.5
    cdf = gauss_cdf(scale) if noise == "gaussian" else lap_cdf(scale)
    positive = 0
    ratios = []
    for _ in range(60):
        slab = random_slab(rng, scale)
        p = slab.probs(0.0, cdf)[0]
        order = np.argsort(-p)
        for k in (1, 2, 3):
            if k >= slab.C:
                continue
            label = int(order[rng.integers(0, k)])
            r = topk_radius_from_bounds(p[label], np.delete(p, label), k, scale, noise)
            true = slab.true_radius(0.0, label, k, cdf, rmax=12 * scale)
            assert r <= true + 1e-9, (noise, k, r, true)
            if r > 0:
                positive += 1
                ratios.append(r / true)
    assert positive > 40  # the check is not vacuous
    if noise == "gaussian":
        assert max(ratios) > 0.99  # some configurations are (near-)tight


def test_theorem_tight_for_two_half_lines():
    """k = 1, label owns u < tau_a and one rival owns u >= tau_b: the bound is exact (Jia et al. /
    Cohen et al. tightness), with any number of small classes in between."""
    sigma = 0.7
    slab = Slab([0.3, 0.4, 0.5], [0, 2, 3, 1], 4)  # middle classes smaller than the rival
    cdf = gauss_cdf(sigma)
    p = slab.probs(0.0, cdf)[0]
    r = topk_radius_from_bounds(p[0], p[1:], 1, sigma)
    true = slab.true_radius(0.0, 0, 1, cdf, rmax=10.0)
    assert r == pytest.approx(true, rel=1e-7)
    # Laplace: the likelihood-ratio bound reproduces Teng et al.'s radius, exact for one half-line split
    b = 0.4
    slab2 = Slab([0.6], [0, 1], 2)
    p2 = slab2.probs(0.0, lap_cdf(b))[0]
    r2 = topk_radius_from_bounds(p2[0], p2[1:], 1, b, "laplace")
    assert r2 == pytest.approx(slab2.true_radius(0.0, 0, 1, lap_cdf(b), rmax=10.0), rel=1e-7)
    assert r2 == pytest.approx(Laplace(b).radius(p2[0]), rel=1e-12)


def test_bisection_matches_dense_grid():
    """Terms t >= 2 are found by bisection: compare with the largest grid radius satisfying the
    theorem's inequality evaluated directly with scipy.stats.norm."""
    rng = np.random.default_rng(7)
    sigma = 0.3
    for _ in range(25):
        k = int(rng.integers(2, 5))
        others = np.sort(rng.dirichlet(np.ones(6)) * rng.uniform(0.2, 0.6))[::-1]
        pl = float(rng.uniform(0.05, 1.0 - others.sum()))
        r = topk_radius_from_bounds(pl, others, k, sigma)
        grid = np.linspace(0, 3.0, 300001)
        top = others[:k]
        lhs = sp_norm.cdf(sp_norm.ppf(pl) - grid / sigma)
        rhs = np.full_like(grid, np.inf)
        for t in range(1, k + 1):
            s = min(top[k - t:].sum(), 1.0 - pl)
            rhs = np.minimum(rhs, sp_norm.cdf(sp_norm.ppf(s) + grid / sigma) / t)
        ok = lhs > rhs
        expected = grid[ok].max() if ok[0] else 0.0
        assert abs(r - expected) <= 2e-5, (r, expected)


# ------------------------------------------------------------------------------------- statistics
def _coverage(radius_fn, slab, label, k, cdf, n, trials, rng, rmax):
    """Fraction of trials (counts ~ Multinomial(n, exact p)) whose radius exceeds the true radius."""
    p = slab.probs(0.0, cdf)[0]
    counts = rng.multinomial(n, p / p.sum(), size=trials)
    true = slab.true_radius(0.0, label, k, cdf, rmax=rmax)
    radii = radius_fn(counts)
    return float(np.mean(radii > true + 1e-9)), radii, true


COVERAGE_CASES = [
    # (noise, k, slab, tight): tight = the theorem is exact for the true probabilities of this slab
    ("gaussian", 1, Slab([0.25, 0.3, 0.35], [0, 3, 1, 2], 4), True),  # label left, main rival right
    ("gaussian", 2, Slab([0.1, 1.0], [0, 1, 2], 3), True),  # class 1 stays above; race label vs class 2
    ("gaussian", 3, Slab([-0.2, 0.2, 0.5, 0.9], [1, 0, 2, 3, 4], 5), False),
    ("laplace", 1, Slab([0.6], [0, 1], 2), True),  # Teng et al.'s radius is exact for two half-lines
    ("laplace", 2, Slab([0.1, 1.0], [0, 1, 2], 3), False),
]


@pytest.mark.parametrize("noise,k,slab,tight", COVERAGE_CASES)
def test_coverage_monte_carlo(noise, k, slab, tight):
    """Repeated certifications from multinomial counts: violations <= alpha (binomial tolerance);
    where the theorem is tight, the plug-in estimate without confidence bounds violates far more
    often (the test has teeth)."""
    alpha, n, trials = 0.2, 400, 1500
    scale = 0.5
    cdf = gauss_cdf(scale) if noise == "gaussian" else lap_cdf(scale)
    rng = np.random.default_rng(99 + k)
    labels = np.zeros(trials, dtype=np.int64)
    frac, radii, true = _coverage(lambda c: topk_radii(c, labels, k, scale, alpha, noise), slab, 0, k, cdf, n,
                                  trials, rng, rmax=10 * scale)
    assert 0 < true < math.inf
    assert np.mean(radii > 0) > 0.9  # the certificates are not vacuous
    tol = 3.0 * math.sqrt(alpha * (1 - alpha) / trials)
    assert frac <= alpha + tol, (frac, alpha)

    def plugin(c):  # point estimates as if they were bounds: unsound
        out = []
        for row in c:
            ph = row / n
            out.append(topk_radius_from_bounds(ph[0], ph[1:], k, scale, noise))
        return np.asarray(out)

    if not tight:
        return
    frac_plugin, _, _ = _coverage(plugin, slab, 0, k, cdf, n, 300, np.random.default_rng(5), rmax=10 * scale)
    assert frac_plugin > alpha + 0.15


def test_simultaneous_bounds_cover_jointly():
    """The C one-sided bounds at alpha/C hold together in >= 1 - alpha of the trials."""
    p = np.array([0.45, 0.3, 0.15, 0.07, 0.03])
    n, trials, alpha = 300, 2000, 0.2
    rng = np.random.default_rng(3)
    fails = 0
    for c in rng.multinomial(n, p, size=trials):
        pl, pu = simultaneous_bounds(c, 0, alpha)
        assert pl == pytest.approx(clopper_pearson_lower(int(c[0]), n, alpha / 5), abs=1e-13)
        assert pu[2] == pytest.approx(clopper_pearson_upper(int(c[2]), n, alpha / 5), abs=1e-13)
        if pl > p[0] or np.any(pu[1:] < p[1:]):
            fails += 1
    assert fails / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


# ------------------------------------------------------------------------------------- relations
def test_k1_equals_cohen_at_alpha_over_C():
    """k = 1: R = sigma/2 (Phi^-1(p_l) - Phi^-1(pbar_b1)) with both bounds at alpha/C; since
    pbar_b1 <= 1 - p_l, R >= sigma Phi^-1(CP_lower(n_l, n, alpha/C)) (Cohen's radius at alpha/C),
    with equality when all non-label samples fall in one class."""
    sigma, alpha = 0.5, 0.001
    g = Gaussian(sigma)
    for counts in ([930, 70], [612, 388], [990, 0, 10, 0], [800, 200, 0, 0, 0, 0, 0, 0, 0, 0]):
        C = len(counts)
        cohen = g.radius(clopper_pearson_lower(counts[0], sum(counts), alpha / C))
        assert topk_radius(np.array(counts), 0, 1, sigma, alpha) == pytest.approx(cohen, rel=1e-9, abs=1e-12)
    for counts in ([800, 100, 100], [700, 150, 100, 50]):
        C = len(counts)
        cohen = g.radius(clopper_pearson_lower(counts[0], sum(counts), alpha / C))
        assert topk_radius(np.array(counts), 0, 1, sigma, alpha) > cohen
    # Laplace, two classes: Teng et al.'s -b log(2 (1 - p_l)) at alpha/2
    b = 0.3
    assert topk_radius_laplace(np.array([930, 70]), 0, 1, b, alpha) == pytest.approx(
        Laplace(b).radius(clopper_pearson_lower(930, 1000, alpha / 2)), rel=1e-9)


def test_radius_nondecreasing_in_k():
    rng = np.random.default_rng(11)
    for _ in range(50):
        C = int(rng.integers(3, 11))
        counts = rng.multinomial(1000, rng.dirichlet(np.ones(C) * 0.5))
        label = int(rng.integers(0, C))
        for fn, scale in ((topk_radius, 0.25), (topk_radius_laplace, 0.4)):
            rs = [fn(counts, label, k, scale, 0.01) for k in range(1, C + 1)]
            assert all(b >= a for a, b in zip(rs, rs[1:])), rs
            assert rs[-1] == math.inf


def test_vectorised_matches_scalar():
    rng = np.random.default_rng(2)
    counts = rng.multinomial(500, [0.5, 0.2, 0.2, 0.1], size=40)
    labels = rng.integers(0, 4, 40)
    for noise, fn in (("gaussian", topk_radius), ("laplace", topk_radius_laplace)):
        vec = topk_radii(counts, labels, 2, 0.5, 0.05, noise)
        ref = [fn(c, int(lab), 2, 0.5, 0.05) for c, lab in zip(counts, labels)]
        np.testing.assert_array_equal(vec, ref)


# ------------------------------------------------------------------------------------- Smooth end-to-end
def _slab_smooth(noise):
    slab = Slab([0.35, 0.55, 0.8], [0, 1, 2, 3], 4)
    return slab, Smooth(slab.torch_model(), 4, noise)


@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.4)], ids=["gaussian", "laplace"])
def test_certify_topk_matches_counts_function(noise):
    slab, sm = _slab_smooth(noise)
    x = torch.zeros(1, 3, 3)
    fn = topk_radius if isinstance(noise, Gaussian) else topk_radius_laplace
    s = noise.sigma if isinstance(noise, Gaussian) else noise.scale
    cdf = gauss_cdf(s) if isinstance(noise, Gaussian) else lap_cdf(s)
    expected_order = tuple(int(c) for c in np.argsort(-slab.probs(0.0, cdf)[0]))
    prev = 0.0
    for k in (1, 2, 3):
        cert = certify_topk(sm, x, k=k, n0=100, n=2000, alpha=0.001, batch_size=512, seed=17)
        assert isinstance(cert, fastcert.Certificate)
        assert cert.prediction == expected_order[:k]
        assert cert.n_used == 2100 and int(cert.counts.sum()) == 2000
        for c, r in cert.extra["class_radii"].items():
            assert r == fn(cert.counts, c, k, s, 0.001)
        assert cert.radius == fn(cert.counts, 0, k, s, 0.001) > prev
        prev = cert.radius
        assert cert.radii[noise.norm] == cert.radius
        assert cert.p_lower == pytest.approx(clopper_pearson_lower(int(cert.counts[0]), 2000, 0.001 / 4))
        # the Smooth method delegates to the same function, same seed -> same certificate
        cert2 = sm.certify_topk(x, k, 100, 2000, 0.001, 512, seed=17)
        assert cert2.prediction == cert.prediction and cert2.radius == cert.radius
    d = x.numel()
    if isinstance(noise, Gaussian):
        assert cert.radii["linf"] == pytest.approx(cert.radius / math.sqrt(d))
    else:
        assert cert.radii["l2"] == pytest.approx(cert.radius / math.sqrt(d))
        assert cert.radii["linf"] == pytest.approx(cert.radius / d)


@pytest.mark.parametrize("noise", [Gaussian(0.5), Laplace(0.4)], ids=["gaussian", "laplace"])
def test_certify_topk_k1_equals_certify_two_classes(noise):
    slab = Slab([0.4], [0, 1], 2)
    sm = Smooth(slab.torch_model(), 2, noise)
    x = torch.zeros(4)
    top = sm.certify_topk(x, 1, 100, 3000, 0.002, 1024, seed=5)
    ordinary = sm.certify(x, 100, 3000, 0.001, 1024, seed=5)  # alpha / C with C = 2
    assert top.prediction == (ordinary.prediction,)
    assert top.radius == pytest.approx(ordinary.radius, rel=1e-9)
    np.testing.assert_array_equal(top.counts, ordinary.counts)


def test_certify_topk_soundness_end_to_end():
    """Few full certifications through Smooth (kernel noise): no radius above the true one beyond
    what alpha allows (small n keeps this fast; the multinomial test above carries the power)."""
    sigma, alpha, trials = 0.5, 0.25, 40
    slab, sm = _slab_smooth(Gaussian(sigma))
    true = slab.true_radius(0.0, 0, 2, gauss_cdf(sigma), rmax=5.0)
    x = torch.zeros(2)
    bad = 0
    for s in range(trials):
        cert = sm.certify_topk(x, 2, 50, 300, alpha, 350, seed=1000 + s)
        r0 = cert.extra["class_radii"].get(0, 0.0)
        bad += r0 > true
    assert bad / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_certify_topk_abstains_and_rejects_other_noises():
    slab = Slab([0.0], [0, 1], 2)  # 50/50 at x = 0: nothing certifiable for k = 1
    sm = Smooth(slab.torch_model(), 2, Gaussian(0.5))
    cert = sm.certify_topk(torch.zeros(2), 1, 50, 400, 0.01, 500, seed=0)
    assert cert.prediction == -1 and cert.radius == 0.0 and cert.radii["l0"] == 0
    cert2 = sm.certify_topk(torch.zeros(2), 2, 50, 400, 0.01, 500, seed=0)
    assert cert2.radius == math.inf and cert2.prediction in ((0, 1), (1, 0))
    for noise in (Uniform(0.5), Discrete(0.8, 4)):
        with pytest.raises(ValueError, match="Gaussian"):
            Smooth(slab.torch_model(), 2, noise).certify_topk(torch.zeros(2), 1, 10, 10, 0.01, 10, seed=0)
    with pytest.raises(ValueError, match="k"):
        sm.certify_topk(torch.zeros(2), 3, 10, 10, 0.01, 10, seed=0)
    with pytest.raises(TypeError, match="k"):
        sm.certify_topk(torch.zeros(2), 1.5, 10, 10, 0.01, 10, seed=0)


# ------------------------------------------------------------------------------------- independent reference
# Jia et al.'s procedure written from their paper (Theorem 1 and the simultaneous bounds of their
# Section 3.3), sharing no code with fastcert: Clopper-Pearson bounds as roots of the binomial tail
# (their definition), Phi by math.erfc, Phi^-1 by statistics.NormalDist, every crossing by brentq, and,
# on request, the worst rival set and witness set found by enumerating all subsets.
_PHI_INV = NormalDist().inv_cdf


def _log_phi(x):
    v = 0.5 * math.erfc(-x / math.sqrt(2.0))
    return math.log(v) if v > 0 else -math.inf


def ref_cp_lower(c, n, a):
    """Largest p with P_p(X >= c) <= a (X ~ Bin(n, p)); 0 when c = 0."""
    if c == 0:
        return 0.0
    return brentq(lambda p: bdtrc(c - 1, n, p) - a, 0.0, 1.0, xtol=1e-300, rtol=1e-15)


def ref_cp_upper(c, n, a):
    """Smallest p with P_p(X <= c) <= a; 1 when c = n."""
    if c == n:
        return 1.0
    return brentq(lambda p: bdtr(c, n, p) - a, 0.0, 1.0, xtol=1e-300, rtol=1e-15)


def ref_term_gaussian(pl, q, t, sigma):
    """Largest R with Phi(Phi^-1(pl) - R/sigma) >= Phi(Phi^-1(q) + R/sigma) / t (0: not even at R = 0)."""
    if pl <= 0.0 or pl * t <= q:
        return 0.0
    if q <= 0.0:
        return math.inf
    a, b = _PHI_INV(pl), _PHI_INV(q)
    g = lambda r: _log_phi(a - r / sigma) - _log_phi(b + r / sigma) + math.log(t)  # noqa: E731
    hi = sigma
    while g(hi) > 0:
        hi *= 2.0
    return brentq(g, 0.0, hi, xtol=1e-15, rtol=1e-15)


def ref_term_laplace(pl, q, t, b):
    """Largest r (l1) with L(eps) >= U(eps) / t, eps = r / b, from the density-ratio bounds e^{+-eps}:
    L = max(e^-eps pl, 1 - e^eps (1 - pl)), U = min(e^eps q, 1 - e^-eps (1 - q))."""
    def h(eps):
        low = max(math.exp(-eps) * pl, 1.0 - math.exp(eps) * (1.0 - pl))
        up = min(math.exp(eps) * q, 1.0 - math.exp(-eps) * (1.0 - q))
        return low - up / t

    if h(0.0) <= 0:
        return 0.0
    if q <= 0.0:
        return math.inf
    hi = 1.0
    while h(hi) > 0:
        hi *= 2.0
    return b * brentq(h, 0.0, hi, xtol=1e-15, rtol=1e-15)


def ref_radius_from_bounds(pl, pbar, k, scale, noise="gaussian", cap=True, enumerate_sets=False):
    """pl: lower bound of the label; pbar: {class: upper bound} of the others. Witness bound of a set S:
    min(sum of its bounds, 1 - pl) (cap=False: min(sum, 1), fastcert before issue 17). The label stays
    in the top k iff for EVERY k-set K of rivals SOME nonempty S in K has lower(label) > upper(S) / |S|,
    so R = min over K of max over S of the crossing; enumerate_sets=False uses the paper's reduction
    (K = the k largest bounds, S = the t smallest of them)."""
    term = ref_term_gaussian if noise == "gaussian" else ref_term_laplace
    if k >= len(pbar) + 1:
        return math.inf

    def witness(vals):
        return min(sum(vals), (1.0 - pl) if cap else 1.0)

    if enumerate_sets:
        best = math.inf
        for K in itertools.combinations(sorted(pbar), k):
            r_K = max(term(pl, witness([pbar[j] for j in S]), len(S), scale)
                      for size in range(1, k + 1) for S in itertools.combinations(K, size))
            best = min(best, r_K)
        return best
    top = sorted(pbar.values(), reverse=True)[:k]
    return max(term(pl, witness(top[k - t:]), t, scale) for t in range(1, k + 1))


def ref_bounds(counts, label, alpha):
    C, n = len(counts), int(sum(counts))
    a = alpha / C  # Bonferroni over the C one-sided statements
    pl = ref_cp_lower(int(counts[label]), n, a)
    return pl, {j: ref_cp_upper(int(counts[j]), n, a) for j in range(C) if j != label}


def ref_radius(counts, label, k, scale, alpha, noise="gaussian", cap=True, enumerate_sets=False):
    pl, pbar = ref_bounds(counts, label, alpha)
    return ref_radius_from_bounds(pl, pbar, k, scale, noise, cap, enumerate_sets)


def _tiny_count_rows():
    """(counts, label) rows where every other class has a handful of samples or none."""
    rows = []
    for n, C in ((100_000, 10), (1_000, 6), (200, 4)):
        for others in ([0], [1, 1, 1], [2, 2, 2, 2, 2], [1, 0, 3, 1], [5, 1], [0, 0, 0, 1]):
            c = np.zeros(C, dtype=np.int64)
            o = np.asarray(others[: C - 1])
            c[1: 1 + len(o)] = o
            c[0] = n - o.sum()
            for label in (0, C - 1):
                rows.append((np.roll(c, label), label))  # the big count moves with the label
    return rows


def test_reference_bounds_match_scipy_beta_quantiles():
    """The reference's Clopper-Pearson bounds (binomial-tail roots) are the beta quantiles of the literature."""
    from scipy.stats import beta
    for c, n, a in ((0, 100_000, 1e-4), (3, 100_000, 1e-4), (99_996, 100_000, 1e-4), (500, 1000, 0.01)):
        if c > 0:
            assert ref_cp_lower(c, n, a) == pytest.approx(beta.ppf(a, c, n - c + 1), rel=1e-12)
        assert ref_cp_upper(c, n, a) == pytest.approx(beta.ppf(1 - a, c + 1, n - c), rel=1e-12)


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_radii_equal_independent_reference_tiny_counts(noise):
    """Rows whose other classes have tiny counts (where the 1 - p_l cap on the witness sums binds), plus
    random small rows: fastcert equals the reference, the paper's reduction equals the enumeration of
    every rival set and witness set, and the cap raises some radii (the rows exercise it)."""
    scale, alpha = (0.25, 0.001) if noise == "gaussian" else (0.4, 0.001)
    fn = topk_radius if noise == "gaussian" else topk_radius_laplace
    rows = _tiny_count_rows()
    rng = np.random.default_rng(17)
    for _ in range(12):
        C = int(rng.integers(3, 7))
        rows.append((rng.multinomial(int(rng.integers(100, 3000)), rng.dirichlet(np.full(C, 0.3))),
                     int(rng.integers(0, C))))
    raised = 0
    for counts, label in rows:
        C = len(counts)
        for k in range(1, min(C, 6)):
            expected = ref_radius(counts, label, k, scale, alpha, noise)
            got = fn(counts, label, k, scale, alpha)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (counts.tolist(), label, k, got, expected)
            if C <= 6:
                assert ref_radius(counts, label, k, scale, alpha, noise, enumerate_sets=True) == pytest.approx(
                    expected, rel=1e-12, abs=1e-15)
            raised += expected > ref_radius(counts, label, k, scale, alpha, noise, cap=False) * (1 + 1e-6)
    assert raised >= 10


def test_from_bounds_caps_witness_sums_at_one_minus_p_lower():
    """Given bounds directly: three rivals at 0.09 each cannot hold more than 1 - 0.9 together."""
    pbar = {1: 0.09, 2: 0.09, 3: 0.09}
    for noise, scale in (("gaussian", 0.5), ("laplace", 0.5)):
        r = topk_radius_from_bounds(0.9, list(pbar.values()), 3, scale, noise)
        assert r == pytest.approx(ref_radius_from_bounds(0.9, pbar, 3, scale, noise), rel=1e-9)
        assert r > ref_radius_from_bounds(0.9, pbar, 3, scale, noise, cap=False) * 1.001


# ------------------------------------------------------------------------------------- Jia et al.'s counts
@needs_jia_file
def test_jia_counts_file_top1_matches_direct_computation():
    counts, labels = read_counts_file(JIA_FILE)
    assert counts.shape == (500, 10) and labels.shape == (500,)
    assert np.all(counts.sum(axis=1) == 100_000)
    sigma, alpha = 0.25, 0.001
    radii = [0.0, 0.25, 0.5, 0.75, 1.0]
    top1 = topk_certified_accuracy(counts, labels, 1, sigma, alpha, radii)
    top3 = topk_certified_accuracy(counts, labels, 3, sigma, alpha, radii)
    # independent: scalar Clopper-Pearson from fastcert.stats and the closed form for k = 1
    direct = []
    for c, y in zip(counts, labels):
        pl = clopper_pearson_lower(int(c[y]), 100_000, alpha / 10)
        pu = max(clopper_pearson_upper(int(c[j]), 100_000, alpha / 10) for j in range(10) if j != y)
        direct.append(sigma / 2 * (sp_norm.ppf(pl) - sp_norm.ppf(pu)) if pl > pu else 0.0)
    direct = np.asarray(direct)
    expected = [np.mean((direct > 0) & (direct >= r)) for r in radii]
    np.testing.assert_allclose(top1, expected, atol=1e-12)
    assert np.all(top3 >= top1) and top3[0] > top1[0]
    assert np.all(np.diff(top1) <= 0) and np.all(np.diff(top3) <= 0)
    # top-1 accuracy at r = 0 is the fraction whose label beats every rival's upper bound
    assert 0.7 < top1[0] < 0.85


@needs_jia_file
@pytest.mark.parametrize("k", [1, 3, 5])
def test_jia_counts_every_radius_equals_independent_reference(k):
    """On Jia et al.'s own counts (sigma = 0.25, alpha = 0.001) every fastcert radius equals the
    reference implementation of their procedure; the same for the Laplace bound (b = 0.25) on the same
    counts. For k >= 3 the rows where the 1 - p_l cap binds are many: without it 183 (k = 3) and 182
    (k = 5) radii were smaller (issue 17), so the test has teeth."""
    counts, labels = read_counts_file(JIA_FILE)
    sigma, alpha = 0.25, 0.001
    bounds = [ref_bounds(c, int(y), alpha) for c, y in zip(counts, labels)]
    for noise in ("gaussian", "laplace"):
        got = topk_radii(counts, labels, k, sigma, alpha, noise)
        expected = np.array([ref_radius_from_bounds(pl, pbar, k, sigma, noise) for pl, pbar in bounds])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        if noise == "gaussian":
            uncapped = np.array([ref_radius_from_bounds(pl, pbar, k, sigma, cap=False) for pl, pbar in bounds])
            n_raised = int(np.sum(expected > uncapped * (1 + 1e-9)))
            assert (n_raised == 0) if k == 1 else (n_raised > 150), n_raised


def test_read_counts_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_counts_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 0\n1 2 0\n")
    with pytest.raises(ValueError, match="fields"):
        read_counts_file(bad)
    bad.write_text("1 x 3 0\n")
    with pytest.raises(ValueError, match="integers"):
        read_counts_file(bad)
    bad.write_text("1 2 3 5\n")
    with pytest.raises(ValueError, match="labels"):
        read_counts_file(bad)
    bad.write_text("# comment\n\n4 0 1\n")
    c, y = read_counts_file(bad)
    assert c.tolist() == [[4, 0]] and y.tolist() == [1]


def test_bad_inputs():
    c = np.array([10, 5, 1])
    with pytest.raises(TypeError, match="counts"):
        topk_radius(np.array([1.0, 2.0]), 0, 1, 0.5, 0.1)
    with pytest.raises(ValueError, match="counts"):
        topk_radius(np.array([[1, 2]]), 0, 1, 0.5, 0.1)
    with pytest.raises(ValueError, match="counts"):
        topk_radius(np.array([1, -2, 3]), 0, 1, 0.5, 0.1)
    with pytest.raises(ValueError, match="counts"):
        topk_radius(np.array([0, 0]), 0, 1, 0.5, 0.1)
    with pytest.raises(ValueError, match="label"):
        topk_radius(c, 3, 1, 0.5, 0.1)
    with pytest.raises(TypeError, match="label"):
        topk_radius(c, 0.0, 1, 0.5, 0.1)
    with pytest.raises(ValueError, match="k"):
        topk_radius(c, 0, 0, 0.5, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        topk_radius(c, 0, 1, -0.5, 0.1)
    with pytest.raises(ValueError, match="scale"):
        topk_radius_laplace(c, 0, 1, float("nan"), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        topk_radius(c, 0, 1, 0.5, 1.5)
    with pytest.raises(ValueError, match="noise"):
        topk_radii(c[None, :], [0], 1, 0.5, 0.1, noise="uniform")
    with pytest.raises(ValueError, match="labels"):
        topk_radii(c[None, :], [0, 1], 1, 0.5, 0.1)
    with pytest.raises(ValueError, match="radii"):
        topk_certified_accuracy(c[None, :], [0], 1, 0.5, 0.1, [-1.0])
    with pytest.raises(ValueError, match="p_upper"):
        topk_radius_from_bounds(0.5, [0.2, 1.5], 1, 0.5)
    assert fastcert.topk_radius is topk_radius
