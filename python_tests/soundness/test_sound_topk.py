"""Soundness of top-k certification (Jia et al. 2020) through Smooth.certify_topk.

Base classifier on the first coordinate: class 0 on z_0 < a, class 1 on a <= z_0 < b, class 2 on
z_0 >= b. The smoothed class probabilities at x + t e_0 are differences of the noise CDF, and since
only delta_0 matters (|delta_0| <= ||delta|| in every norm), the true top-k radius of a class is the
smallest |t| at which it falls out of the top k; we find it by a dense scan plus bisection,
independently of fastcert. Gaussian k = 2: class 0 leaves the top 2 when the right class 2 overtakes
it (class 1 stays on top), the case in which Jia et al.'s bound is exact: R = (a + b)/2 - x_0.
Laplace k = 1 with two classes: Teng et al.'s l1 radius, exact for a half-line.

Mildly unsound control: the simultaneous Clopper-Pearson bounds at CTRL times their level (topk's
clopper_pearson_lower/upper called with CTRL * a; one change). Dropping the Bonferroni factor (CTRL = C) is
NOT unsound on these cases: with C = 2 and k = 1 the lower bound of the label and the upper bound of
the other class are one event (the other count is n minus the label's), and for the Gaussian k = 2
case the radius adds the errors of two bounds, so each bound at alpha still fails less often than
alpha (simulated: 0.117 at alpha = 0.2). The controls are therefore 5x the level (Gaussian, alpha =
0.2; per-bound level 1/3) and 4x (Laplace, alpha = 0.1; per-bound level 0.2); their failure rates
SOUND_RATE_SIM / CTRL_RATE_SIM come from simulate_rates.py (2,000 runs of certify_topk on seeds
1,000,000 + i, standard error <= 0.0095; see SOUNDNESS.md). The Gaussian control needs 3,000 trials
(17 ms each), so it runs in full mode only.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import laplace as sp_laplace
from scipy.stats import norm as sp_norm

import fastcert
import fastcert.smoothing.topk as topk

N0, N = 30, 300
# per case: alpha, control factor on the bounds' level, trials per mode, simulated sound / control rates
SETUP = {"gaussian-k2": {"alpha": 0.2, "ctrl": 5, "trials": {"fast": 100, "full": 3000}},
         "laplace-k1": {"alpha": 0.1, "ctrl": 4, "trials": {"fast": 300, "full": 1000}}}
SOUND_RATE_SIM = {"gaussian-k2": 0.0195, "laplace-k1": 0.0460}
CTRL_RATE_SIM = {"gaussian-k2": 0.2335, "laplace-k1": 0.1945}


class Slabs(torch.nn.Module):
    def __init__(self, cuts):
        super().__init__()
        self.cuts = torch.tensor(cuts, dtype=torch.float32)

    def forward(self, z):
        c = torch.bucketize(z.reshape(z.shape[0], -1)[:, 0].contiguous(), self.cuts, right=True)
        return torch.nn.functional.one_hot(c, len(self.cuts) + 1).float()


def class_probs(cdf, cuts, x0):
    edges = np.concatenate([[0.0], [cdf(c - x0) for c in cuts], [1.0]])
    return np.diff(edges)


def true_topk_radius(cdf, cuts, x0, label, k, span=5.0):
    """Smallest |t| such that at x0 + t at least k other classes are strictly more probable."""
    def margin(t):  # > 0 while label is in the top k
        p = class_probs(cdf, cuts, x0 + t)
        others = np.sort(np.delete(p, label))[::-1]
        return p[label] - others[k - 1]

    best = math.inf
    for sign in (1.0, -1.0):
        ts = np.linspace(0.0, span, 801)
        vals = np.array([margin(sign * t) for t in ts])
        bad = np.flatnonzero(vals <= 0)
        if bad.size:
            i = bad[0]
            root = brentq(lambda t: margin(sign * t), ts[i - 1], ts[i], xtol=1e-14) if i > 0 else 0.0
            best = min(best, root)
    return best


SIGMA, CUTS_G, K_G = 0.5, [-0.3, 0.6], 2
SCALE, CUTS_L = 0.5, [-0.3]


def gauss_cdf(v):
    return float(sp_norm.cdf(v / SIGMA))


def lap_cdf(v):
    return float(sp_laplace.cdf(v, scale=SCALE))


CASES = {
    "gaussian-k2": (fastcert.Gaussian(SIGMA), CUTS_G, K_G, gauss_cdf),
    "laplace-k1": (fastcert.Laplace(SCALE), CUTS_L, 1, lap_cdf),
}


def test_truth_matches_closed_forms():
    assert true_topk_radius(gauss_cdf, CUTS_G, 0.0, 0, 2) == pytest.approx(0.15, abs=1e-9)
    assert true_topk_radius(lap_cdf, CUTS_L, 0.0, 1, 1) == pytest.approx(0.3, abs=1e-9)
    # the theorem is tight here: at the exact probabilities the radius equals the truth
    p = class_probs(gauss_cdf, CUTS_G, 0.0)
    r = topk.topk_radius_from_bounds(p[0], np.delete(p, 0), 2, SIGMA, "gaussian")
    assert r == pytest.approx(0.15, rel=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_certify_topk(case, mode, variant, judge, monkeypatch):
    noise, cuts, k, cdf = CASES[case]
    alpha, ctrl = SETUP[case]["alpha"], SETUP[case]["ctrl"]
    if variant == "control":  # the simultaneous Clopper-Pearson bounds at ctrl times their level
        if mode == "fast" and case == "gaussian-k2":
            pytest.skip("this control needs 3,000 trials: full mode only (-m slow)")
        lower, upper = topk.clopper_pearson_lower, topk.clopper_pearson_upper
        monkeypatch.setattr(topk, "clopper_pearson_lower", lambda kk, n, a: lower(kk, n, ctrl * a))
        monkeypatch.setattr(topk, "clopper_pearson_upper", lambda kk, n, a: upper(kk, n, ctrl * a))
    C = len(cuts) + 1
    truth = {c: true_topk_radius(cdf, cuts, 0.0, c, k) for c in range(C)}
    sm = fastcert.Smooth(Slabs(cuts), C, noise)
    x = torch.tensor([0.0, 0.5])
    trials = SETUP[case]["trials"][mode]
    wrong = informative = 0
    for s in range(trials):
        cert = sm.certify_topk(x, k, N0, N, alpha, 512, seed=s)
        radii = cert.extra["class_radii"]
        informative += any(r > 0 for r in radii.values())
        wrong += any(r > truth[c] * (1 + 1e-9) for c, r in radii.items())
    assert informative > trials // 2
    judge(wrong, trials, alpha, variant, case=case, truth=truth)


def sizing_rows():
    return [(f"certify_topk {case}", st["trials"], st["alpha"], SOUND_RATE_SIM[case], CTRL_RATE_SIM[case])
            for case, st in sorted(SETUP.items())]


def test_sizing(decision):
    for case, trials, a_ref, a_sound, a_ctrl in sizing_rows():
        assert a_sound <= a_ref, case
        s = decision.sizing(trials["full"], a_ref, a_ctrl)
        assert s["pass"] >= 1 - decision.P_FALSE_ALARM and s["power"] >= decision.MIN_POWER, (case, s)
