"""Straightforward exact reference for stratified discrete (l0) smoothing, in gmpy2.

Lee, Yuan, Chang & Jaakkola 2019, "A Stratified Approach to Robustness for Randomly Smoothed
Classifiers". This module follows the definitions literally and shares no algorithm with the
compiled path (``csrc/stratified``), so that the two can test each other:

* every region L(u, v; r) is built separately, its size from factorials
  (r! / (u! v! w!) (K - 1)^w, w = r - u - v), its probabilities from powers of alpha and
  beta = (1 - alpha) / K;
* the regions are sorted by their own likelihood ratio P(L | x) / P(L | x') (an exact mpq);
* the Neyman-Pearson fill takes whole regions in decreasing ratio until the mass under x' reaches p,
  and the needed fraction of the last one.

The threshold is rho_r^{-1}(p) = the x-mass of that fill: the unique q with rho_r(q) = p, so a lower
bound p_A on P(f(z) = c | x) certifies radius r iff p_A > rho_r^{-1}(p) (strict).

Arguments are ``fractions.Fraction`` (or ints) already validated by :mod:`fastcert.smoothing.stratified`; results
are ``Fraction``. Cost: O(r^2) regions per radius with gmpy2 arithmetic, fine up to r of a few hundred.
"""
from __future__ import annotations

from fractions import Fraction

import gmpy2
from gmpy2 import mpq, mpz


def region_cardinalities(r: int, K: int) -> dict:
    """{(u, v): |L(u, v; r)|} for u + v <= r, as Python ints."""
    fac_r = gmpy2.fac(r)
    km1 = mpz(K - 1)
    out = {}
    for u in range(r + 1):
        for v in range(r - u + 1):
            w = r - u - v
            out[(u, v)] = int(fac_r // (gmpy2.fac(u) * gmpy2.fac(v) * gmpy2.fac(w)) * km1 ** w)
    return out


def region_probabilities(r: int, alpha, K: int) -> dict:
    """{(u, v): (P(z in L | x), P(z in L | x'))} as Fractions, for u + v <= r."""
    a = mpq(Fraction(alpha).numerator, Fraction(alpha).denominator)
    beta = (1 - a) / K
    out = {}
    for (u, v), n in region_cardinalities(r, K).items():
        px = n * a ** u * beta ** (r - u)
        pxp = n * a ** v * beta ** (r - v)
        out[(u, v)] = (Fraction(int(px.numerator), int(px.denominator)),
                       Fraction(int(pxp.numerator), int(pxp.denominator)))
    return out


def _threshold_one(r: int, a: mpq, K: int, p: mpq) -> mpq:
    beta = (1 - a) / K
    fac_r = gmpy2.fac(r)
    regions = []
    for u in range(r + 1):
        for v in range(r - u + 1):
            w = r - u - v
            if K == 1 and w > 0:
                continue  # no level is "neither" when there are only two levels
            n = fac_r // (gmpy2.fac(u) * gmpy2.fac(v) * gmpy2.fac(w)) * mpz(K - 1) ** w
            px = n * a ** u * beta ** (r - u)
            pxp = n * a ** v * beta ** (r - v)
            regions.append((px / pxp, px, pxp))
    regions.sort(key=lambda t: t[0], reverse=True)
    taken_x, taken_xp = mpq(0), mpq(0)
    for _, px, pxp in regions:
        if taken_xp + pxp >= p:
            return taken_x + (p - taken_xp) * px / pxp
        taken_x += px
        taken_xp += pxp
    raise AssertionError("the regions' x'-masses sum to 1 > p")  # pragma: no cover


def threshold(alpha, K: int, radii, p=Fraction(1, 2)) -> list:
    """[rho_r^{-1}(p) for r in radii] as exact Fractions; alpha, p Fractions in (0, 1), K >= 1."""
    fa, fp = Fraction(alpha), Fraction(p)
    a = mpq(fa.numerator, fa.denominator)
    pq = mpq(fp.numerator, fp.denominator)
    out = []
    for r in radii:
        t = _threshold_one(int(r), a, int(K), pq)
        out.append(Fraction(int(t.numerator), int(t.denominator)))
    return out
