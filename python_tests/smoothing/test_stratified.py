"""Stratified discrete (l0) smoothing: exact region sizes, probabilities and thresholds.

Oracles: brute-force enumeration of every noisy z for d = r <= 6 (and one d > r case), exhaustive
soundness over every deterministic decision set on tiny cases, the independent gmpy2 reference
(fastcert.smoothing.reference_stratified), hand-derived values and the values published with the paper.
"""
from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction as F

import pytest

from fastcert import cli
from fastcert.io.readers import read_threshold_file
from fastcert.smoothing import stratified
from fastcert.smoothing import reference_stratified as ref

HALF = F(1, 2)


# ---------------------------------------------------------------------------------------------
# brute force over every noisy point

def _coord_prob(z, x, alpha, K):
    return alpha if z == x else (1 - alpha) / K


def _enumerate(x, xp, alpha, K):
    """[(P(z|x), P(z|x'), u, v)] for every z in {0..K}^d: literal products over coordinates."""
    out = []
    for z in itertools.product(range(K + 1), repeat=len(x)):
        px, pxp = F(1), F(1)
        for zi, xi, xpi in zip(z, x, xp):
            px *= _coord_prob(zi, xi, alpha, K)
            pxp *= _coord_prob(zi, xpi, alpha, K)
        u = sum(1 for zi, xi, xpi in zip(z, x, xp) if xi != xpi and zi == xi)
        v = sum(1 for zi, xi, xpi in zip(z, x, xp) if xi != xpi and zi == xpi)
        out.append((px, pxp, u, v))
    return out


def _np_fill(points, p):
    """Neyman-Pearson over single points: decreasing P(z|x)/P(z|x'), fractional last point."""
    taken_x = taken_xp = F(0)
    for px, pxp in sorted(points, key=lambda t: t[0] / t[1], reverse=True):
        if taken_xp + pxp >= p:
            return taken_x + (p - taken_xp) * px / pxp
        taken_x += px
        taken_xp += pxp
    raise AssertionError("unreachable")


def _pair(r, K, rng):
    x = [rng.randrange(K + 1) for _ in range(r)]
    xp = [rng.choice([lv for lv in range(K + 1) if lv != xi]) for xi in x]
    return x, xp


@pytest.mark.parametrize("K", [1, 2, 3])
def test_brute_force_regions_and_thresholds(K):
    rng = random.Random(K)
    alphas = [F(1, 10), F(1, K + 1), F(7, 13), F(4, 5), F(19, 20)]
    for r in range(0, 7):
        if (K + 1) ** r > 4096:
            continue
        x, xp = _pair(r, K, rng)
        card = stratified.region_cardinalities(r, K)
        assert card == ref.region_cardinalities(r, K)
        counts = {}
        for z in itertools.product(range(K + 1), repeat=r):
            u = sum(1 for zi, xi in zip(z, x) if zi == xi)
            v = sum(1 for zi, xpi in zip(z, xp) if zi == xpi)
            counts[(u, v)] = counts.get((u, v), 0) + 1
        assert {k: n for k, n in card.items() if n} == counts
        assert set(card) == {(u, v) for u in range(r + 1) for v in range(r - u + 1)}
        for alpha in alphas[:3] if r == 6 else alphas:  # r = 6, K = 3 has 4096 points
            pts = _enumerate(x, xp, alpha, K)
            region = {}
            for px, pxp, u, v in pts:
                a, b = region.get((u, v), (F(0), F(0)))
                region[(u, v)] = (a + px, b + pxp)
            probs = stratified.region_probabilities(r, alpha, K)
            assert {k: pq for k, pq in probs.items() if card[k]} == region
            assert all(pq == (0, 0) for k, pq in probs.items() if not card[k])
            assert ref.region_probabilities(r, alpha, K) == probs
            groups = stratified.group_probabilities(r, alpha, K)
            for s in range(-r, r + 1):
                want = [sum(pq[i] for (u, v), pq in region.items() if u - v == s) for i in (0, 1)]
                assert list(groups[s]) == want
            for p in (HALF, F(1, 3), F(9, 10)):
                t_brute = _np_fill([(px, pxp) for px, pxp, _, _ in pts], p)
                assert stratified.threshold(alpha, K, [r], p) == [t_brute]
                assert ref.threshold(alpha, K, [r], p) == [t_brute]


def test_common_coordinates_do_not_matter():
    # d = 3 with one coordinate where x and x' agree: the point-level worst case is unchanged.
    K, alpha = 2, F(3, 5)
    pts = _enumerate([0, 1, 2], [0, 2, 0], alpha, K)
    assert _np_fill([(a, b) for a, b, _, _ in pts], HALF) == stratified.threshold(alpha, K, [2])[0]


@pytest.mark.parametrize("K,r", [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)])
def test_threshold_sound_and_tight_over_every_decision_set(K, r):
    """Every deterministic set S of noisy points with P(S|x) > t has P(S|x') > 1/2 (soundness); the
    best set below 1/2 comes within one point's mass of t (tightness; exact in the fractional fill)."""
    rng = random.Random(10 * K + r)
    x, xp = _pair(r, K, rng)
    for alpha in (F(1, 10), F(2, 3), F(9, 10)):
        pts = [(a, b) for a, b, _, _ in _enumerate(x, xp, alpha, K)]
        t = stratified.threshold(alpha, K, [r])[0]
        best_below = F(0)  # max P(S|x) over deterministic sets with P(S|x') <= 1/2
        for mask in range(1 << len(pts)):
            px = sum((pts[i][0] for i in range(len(pts)) if mask >> i & 1), F(0))
            pxp = sum((pts[i][1] for i in range(len(pts)) if mask >> i & 1), F(0))
            if px > t:
                assert pxp > HALF
            if pxp <= HALF:
                best_below = max(best_below, px)
        # The greedy prefix before the fractional point is such a set: t is within one point's mass.
        assert t - best_below <= max(a for a, _ in pts)


# ---------------------------------------------------------------------------------------------
# compiled path == gmpy2 reference

ALPHAS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "0.95"]
SUBSAMPLE = [0, 1, 2, 3, 5, 8, 13, 21, 34, 50]


@pytest.mark.parametrize("K", [1, 255])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_core_equals_reference(alpha, K):
    corner = alpha in ("0.1", "0.95") or K == 1
    radii = list(range(51)) if corner else SUBSAMPLE
    assert stratified.threshold(alpha, K, radii) == ref.threshold(F(alpha), K, radii)


def test_core_equals_reference_other_p_and_fractions():
    for alpha, K, p in [(F(2, 7), 2, F(1, 3)), (F(5, 6), 255, F(9, 10)), ("0.999", 16, "0.75"), (F(1, 3), 4, HALF)]:
        radii = [0, 1, 4, 17]
        assert stratified.threshold(alpha, K, radii, p) == ref.threshold(F(alpha), K, radii, F(p))
    for r, K in [(0, 2), (1, 1), (7, 255), (25, 3)]:
        assert stratified.region_cardinalities(r, K) == ref.region_cardinalities(r, K)
        assert sum(stratified.region_cardinalities(r, K).values()) == (K + 1) ** r


def test_group_masses_sum_to_one_and_mirror():
    g = stratified.group_probabilities(40, "0.8", 255)
    assert sum(a for a, _ in g.values()) == 1 and sum(b for _, b in g.values()) == 1
    assert all(g[s][1] == g[-s][0] for s in g)


# ---------------------------------------------------------------------------------------------
# known values and theory

def test_hand_values_and_rho0():
    assert stratified.threshold(F(4, 5), 1, range(5)) == [HALF, F(7, 8), F(31, 32), F(127, 128), F(3971, 4000)]
    assert stratified.threshold("0.2", 255, [1]) == [F(7, 10) - F(4, 5) / 255]
    for alpha, K in [("0.1", 1), ("0.5", 7), ("0.95", 255), (F(1, 1000), 3)]:
        assert stratified.threshold(alpha, K, [0]) == [HALF]
        assert stratified.threshold(alpha, K, [0], p=F(2, 9)) == [F(2, 9)]
    # alpha = beta: the noise forgets x entirely, nothing beyond rho_0 changes.
    assert stratified.threshold(F(1, 4), 3, [0, 1, 9, 60]) == [HALF] * 4


def test_matches_values_published_with_the_paper():
    # Lee et al.'s released files (guanghelee/neurips19-certificates-of-robustness): ImageNet
    # (K = 255) alpha = 0.2, and MNIST (K = 1) alpha = 0.9; 20 decimals rounded up (the MNIST file adds
    # 1e-20 to the exact 1/2 at r = 0).
    imagenet = ["0.50000000000000000000", "0.69686274509803921569", "0.85373533256439830835",
                "0.97898829668830238747", "0.99493645881485561183", "0.99619020439204454170",
                "0.99744272681434420339", "0.99864514829441225005", "0.99976849778447424675",
                "0.99993970389648837618"]
    assert [stratified.ceil_decimal(t) for t in stratified.threshold("0.2", 255, range(10))] == imagenet
    mnist = ["0.94444444444444444445", "0.99382716049382716050", "0.99931412894375857339",
             "0.99992379210486206371", "0.99999153245609578486", "0.99999905916178842054"]
    assert [stratified.ceil_decimal(t) for t in stratified.threshold("0.9", 1, range(1, 7))] == mnist


@pytest.mark.parametrize("K", [1, 3, 255])
def test_monotone_in_radius_and_in_alpha(K):
    alphas = [F(i, 40) for i in range(1, 40)] + [F(99, 100)]
    radii = [0, 1, 2, 5, 12]
    table = {a: stratified.threshold(a, K, radii) for a in alphas}
    for a, ts in table.items():
        assert all(t0 <= t1 for t0, t1 in zip(ts, ts[1:])), a
        assert all(0 < t < 1 for t in ts)
        if a != F(1, K + 1):
            assert ts[0] < ts[1]
    # The channel with keep probability alpha has eigenvalue lam = ((K+1) alpha - 1) / K on
    # non-constant functions, and composing with another such channel (eigenvalue in [-1/K, 1])
    # multiplies lam. So a channel with the same sign of lam and smaller |lam| is a garbling of one
    # with larger |lam|: thresholds increase in alpha above 1/(K+1) and decrease in alpha below it.
    above = [a for a in alphas if a >= F(1, K + 1)]
    below = [a for a in alphas if a <= F(1, K + 1)][::-1]
    for side in (above, below):
        for a0, a1 in zip(side, side[1:]):
            for t0, t1 in zip(table[a0], table[a1]):
                assert t0 <= t1, (a0, a1)
    if K == 1:  # flipping every bit maps keep probability alpha to 1 - alpha
        for a in alphas[:-1]:
            assert table[a] == table[1 - a]


def test_large_radius_core():
    ts = stratified.threshold("0.9", 255, [200, 100, 200])
    assert ts[0] == ts[2] and ts[1] <= ts[0] < 1
    assert stratified.threshold(F(9, 10), 1, [60]) == ref.threshold(F(9, 10), 1, [60])


# ---------------------------------------------------------------------------------------------
# certification helpers

def test_certified_l0_radius_consistent_with_thresholds():
    alpha, K = "0.8", 255
    ts = stratified.threshold(alpha, K, range(60))
    rng = random.Random(0)
    probes = [rng.random() for _ in range(200)] + [float(t) for t in ts[:8]] + [0.5, 0.5000001, 1.0, 0.0]
    for p in probes:
        r = stratified.certified_l0_radius(p, alpha, K, max_radius=59)
        if p <= 0.5:
            assert r == -1
            continue
        assert p > ts[r]
        assert r == 59 or not p > ts[r + 1]
    # exactly at a threshold: not certified (strict inequality)
    assert stratified.threshold("0.8", 1, [1]) == [F(7, 8)]
    assert stratified.certified_l0_radius(0.875, "0.8", 1) == 0
    assert stratified.certified_l0_radius(F(7, 8) + F(1, 10 ** 30), "0.8", 1) == 1
    assert stratified.certified_l0_radius(1.0, "0.8", 1, max_radius=7) == 7
    assert stratified.certified_l0_radius(0.99, "0.8", 255, max_radius=0) == 0
    # max_radius beyond MAX_RADIUS (e.g. an ImageNet dimension) is clipped, not refused
    assert stratified.certified_l0_radius(0.99, "0.5", 255, max_radius=150528) == \
        stratified.certified_l0_radius(0.99, "0.5", 255, max_radius=100)


def test_threshold_file_round_trip_via_cli(tmp_path, capsys):
    out = tmp_path / "t.tsv"
    assert cli.main(["threshold", "--alpha", "0.8", "--K", "255", "--max-radius", "12", "--out", str(out),
                     "--exact"]) == 0
    exact = stratified.threshold("0.8", 255, range(13))
    assert read_threshold_file(out) == dict(enumerate(exact))
    lines = out.read_text().splitlines()
    assert lines[0] == "radius\tthreshold\tfraction" and len(lines) == 14
    assert cli.main(["threshold", "--alpha", "4/5", "--K", "255", "--max-radius", "12", "--out", str(out)]) == 0
    rounded = read_threshold_file(out)
    assert out.read_text().splitlines()[0] == "radius\tthreshold"
    for r, t in enumerate(exact):
        assert 0 <= rounded[r] - t < F(1, 10 ** 20)
        assert len(out.read_text().splitlines()[r + 1].split("\t")[1]) == 22
    assert cli.main(["threshold", "--alpha", "0.9", "--K", "1", "--max-radius", "2", "--p", "0.5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["radius\tthreshold", "0\t0.50000000000000000000", "1\t0.94444444444444444445",
                       "2\t0.99382716049382716050"]


@pytest.mark.parametrize("argv,word", [
    (["--keep", "1.5", "--K", "2"], "--keep"),
    (["--keep", "0", "--K", "2"], "--keep"),
    (["--keep", "abc", "--K", "2"], "--keep"),
    (["--keep", "0.5", "--K", "0"], "--K"),
    (["--keep", "0.5", "--K", "2", "--max-radius", "-3"], "--max-radius"),
    (["--keep", "0.5", "--K", "2", "--p", "1"], "--p"),
])
def test_cli_bad_input_one_line(argv, word, capsys):
    assert cli.main(["threshold", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and word in err[0]


@pytest.mark.parametrize("value", ["1.5", "0", "abc"])
def test_cli_deprecated_alpha_spelling_still_checked(value, capsys):
    """The old spelling --alpha (the keep probability) works for one release: a one-line notice, then
    the same one-line error, naming the spelling the user typed."""
    assert cli.main(["threshold", "--alpha", value, "--K", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("notice:") and "--keep" in err[0]
    assert err[1].startswith("error:") and "--alpha" in err[1]


def test_read_paper_formats(tmp_path):
    f1 = tmp_path / "0.2.txt"  # ImageNet release: space-separated header, tab-separated rows
    f1.write_text("r   rho_r^{-1}(0.5) err\n0\t0.50000000000000000000\tNA\n1\t0.69686274509803921569\tNA\n")
    assert read_threshold_file(f1) == {0: HALF, 1: F("0.69686274509803921569")}
    f2 = tmp_path / "0.9.txt"  # MNIST release: err column with a space inside
    f2.write_text("r\trho_r^{-1}(0.5)\terr\n0\t0.50000000000000000001\t1* 10^-20\n1\t0.94444444444444444445\t1* 10^-20\n")
    got = read_threshold_file(f2)
    assert got == {0: F("0.50000000000000000001"), 1: F("0.94444444444444444445")}
    f3 = tmp_path / "plain.txt"
    f3.write_text("0 0.5\n\n1 0.875\n# comment\n2 0.97\n")
    assert read_threshold_file(f3) == {0: HALF, 1: F(7, 8), 2: F(97, 100)}
    with pytest.raises(FileNotFoundError):
        read_threshold_file(tmp_path / "missing.txt")
    for bad in ["", "radius\tthreshold\n", "0 0.5\n0 0.6\n", "0 x\n", "0 1.5\n", "-1 0.5\n",
                "radius\tthreshold\tfraction\n0\t0.6\t1/2\n"]:
        f = tmp_path / "bad.txt"
        f.write_text(bad)
        with pytest.raises(ValueError):
            read_threshold_file(f)


def _independent_acc(ps, correct, ts, r):
    n_ok = 0
    for p, c in zip(ps, correct):
        if c and all(F(p) > ts[k] for k in range(r + 1)):
            n_ok += 1
    return n_ok / len(ps)


def test_acc_at_r_from_logs(tmp_path):
    ts = stratified.threshold("0.8", 1, range(6))
    table = dict(enumerate(ts))
    rng = random.Random(3)
    ps = [str(round(rng.uniform(0.3, 1.0), 6)) for _ in range(40)] + ["0.875", "0.99999"]
    correct = [rng.random() < 0.8 for _ in ps]
    ours = tmp_path / "ours.tsv"
    ours.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\tp_lower\n" + "".join(
        f"{i}\t1\t1\t0\t{int(c)}\t0:00:01.000000\t{p}\n" for i, (p, c) in enumerate(zip(ps, correct))))
    paper = tmp_path / "paper.tsv"
    paper.write_text("idx\tlabel\tpredict\tp_hat\trad.\tcorrect\ttime\n" + "".join(
        f"{i}/42\t1\t1\t{p}\t0\t{int(c)}\t0:00:01.5\n" for i, (p, c) in enumerate(zip(ps, correct))))
    tfile = tmp_path / "t.tsv"
    stratified.write_threshold_file(tfile, "0.8", 1, 5, exact=True)
    want = {r: _independent_acc(ps, correct, ts, r) for r in range(6)}
    assert stratified.acc_at_r(ours, table) == want
    assert stratified.acc_at_r(paper, tfile) == want
    rows = [{"p_lower": float(p), "correct": int(c)} for p, c in zip(ps, correct)]
    assert stratified.acc_at_r(rows, table, radii=[1, 3]) == {1: want[1], 3: want[3]}
    assert stratified.acc_at_r({"pABar": [float(p) for p in ps], "correct": correct}, table)[2] == want[2]
    radii, ok = stratified.certified_radii(ours, table)
    assert radii[-2] == 0 and ok == correct  # p = 0.875 equals rho_1^{-1}: only r = 0
    assert radii == [stratified.certified_l0_radius(F(p), "0.8", 1, max_radius=5) for p in ps]
    with pytest.raises(ValueError):
        stratified.acc_at_r(ours, table, radii=[6])
    with pytest.raises(ValueError):
        stratified.acc_at_r([{"radius": 1, "correct": 1}], table)
    with pytest.raises(ValueError):
        stratified.radius_from_thresholds(0.9, {0: HALF, 2: F(3, 4)})


# ---------------------------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, "1", "abc", "1/0", math.nan, math.inf, True, None, [0.5]])
def test_bad_alpha(alpha):
    # the keep probability (positional; formerly called alpha) must lie in (0, 1)
    with pytest.raises((ValueError, TypeError), match="keep"):
        stratified.threshold(alpha, 2, [1])


@pytest.mark.parametrize("K", [0, -1, 1.5, True, "3", None])
def test_bad_K(K):
    with pytest.raises((ValueError, TypeError), match="K"):
        stratified.threshold("0.5", K, [1])
    with pytest.raises((ValueError, TypeError), match="K"):
        stratified.region_cardinalities(2, K)


def test_bad_radii_p_backend():
    for radii, exc in [([-1], ValueError), ([1.5], TypeError), (3, TypeError), ([stratified.MAX_RADIUS + 1], ValueError),
                       (["2"], TypeError)]:
        with pytest.raises(exc, match="radii"):
            stratified.threshold("0.5", 2, radii)
    for p in (0, 1, 1.2, math.nan, "x"):
        with pytest.raises(ValueError, match="p"):
            stratified.threshold("0.5", 2, [1], p=p)
    with pytest.raises(ValueError, match="backend"):
        stratified.threshold("0.5", 2, [1], backend="gpu")
    with pytest.raises(ValueError, match="r"):
        stratified.region_cardinalities(-1, 2)
    for p in (math.nan, 1.5, -0.1, "zz"):
        with pytest.raises(ValueError, match="p_lower"):
            stratified.certified_l0_radius(p, "0.8", 2)
    with pytest.raises(ValueError, match="max_radius"):
        stratified.certified_l0_radius(0.9, "0.8", 2, max_radius=-1)
    assert stratified.threshold("0.5", 2, []) == []


def test_core_checks_arguments_itself():
    from fastcert import _core

    with pytest.raises(ValueError):
        _core.stratified_thresholds(b"\x05", b"\x05", b"\x01", b"\x01", b"\x02", [1])  # alpha = 1
    with pytest.raises(ValueError):
        _core.stratified_thresholds(b"\x01", b"\x05", b"", b"\x01", b"\x02", [1])  # K = 0
    with pytest.raises(ValueError):
        _core.stratified_thresholds(b"\x01", b"\x05", b"\x01", b"\x02", b"\x02", [1])  # p = 1
    with pytest.raises(ValueError):
        _core.stratified_thresholds(b"\x01", b"\x05", b"\x01", b"\x01", b"\x02", [-1])
    with pytest.raises(ValueError):
        _core.stratified_region_cardinalities(_core.STRATIFIED_MAX_RADIUS + 1, b"\x02")
    assert _core.STRATIFIED_MAX_RADIUS == stratified.MAX_RADIUS


def test_public_names():
    import fastcert

    assert fastcert.threshold is stratified.threshold
    assert fastcert.region_cardinalities is stratified.region_cardinalities
