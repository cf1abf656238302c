"""Exact thresholds for stratified discrete (l0) randomized smoothing.

Lee, Yuan, Chang & Jaakkola 2019, "A Stratified Approach to Robustness for Randomly Smoothed
Classifiers" (NeurIPS 2019).

Noise ``fastcert.Discrete(keep, K)``: inputs lie on the grid {0, 1/K, ..., 1}^d; each coordinate is
kept with probability ``keep`` (alpha below), else replaced by one of the K other levels, each with
probability beta = (1 - alpha) / K. For x, x' at l0 distance r, a noisy z lies in region L(u, v; r) when u of the
r differing coordinates equal x's value, v equal x''s value and w = r - u - v equal neither:

    |L(u, v; r)| = r! / (u! v! w!) (K - 1)^w
    P(z in L | x) = |L| alpha^u beta^(r-u),     P(z in L | x') = |L| alpha^v beta^(r-v).

Threshold convention. rho_r(q) is the worst case (Neyman-Pearson; regions filled in decreasing
likelihood ratio, fractionally) of P(f(z) = c | x') over all classifiers with P(f(z) = c | x) >= q.
It is continuous and strictly increasing, and ``threshold`` returns rho_r^{-1}(p): the unique q with
rho_r(q) = p. Hence

    a lower bound p_A on P(f(z) = c | x) certifies l0 radius r  iff  p_A > rho_r^{-1}(1/2)   (strict)

(then every x' within l0 distance r has P(f(z) = c | x') > 1/2). rho_0^{-1}(p) = p.

Numbers are exact: ``keep`` and ``p`` may be a ``Fraction``, an int, a decimal string ("0.8", "4/5")
or a float, which is read through its shortest decimal repr (``0.1`` means exactly 1/10, not the
binary double nearest to it). Results are ``fractions.Fraction``. The compiled path
(``fastcert._core``, csrc/stratified) steps the polynomial (c + m y + h y^2)^r from one radius to the
next (all radii 0..R in O(R^3) limb operations); ``backend="reference"`` runs the straightforward
gmpy2 enumeration of regions in :mod:`fastcert.smoothing.reference_stratified`.

Threshold files (``python -m fastcert.cli threshold``): a TSV with header ``radius<TAB>threshold``
(``<TAB>fraction`` with ``--exact``), the threshold rounded UP to 20 decimals, so that
``p_A > file value`` still implies ``p_A > rho_r^{-1}(1/2)``. They are read back by
:func:`fastcert.io.readers.read_threshold_file`, which also reads the original paper's files
(``r<TAB>rho_r^{-1}(0.5)<TAB>err`` with header, or ``r value`` lines).
"""
from __future__ import annotations

import decimal
import math
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np

from fastcert import _native
from fastcert.io.readers import THRESHOLD_DECIMALS, read_log, read_threshold_file
from fastcert.validate import check_int, check_int_list

# Largest radius the exact computation accepts (matches fastcert._native.STRATIFIED_MAX_RADIUS). The
# polynomial for radius r holds 2r + 1 integers of about r * log2(bK) bits each.
MAX_RADIUS = 20000
DECIMALS = THRESHOLD_DECIMALS  # digits of the rounded-up thresholds in threshold files

__all__ = [
    "threshold", "region_cardinalities", "region_probabilities", "group_probabilities",
    "certified_l0_radius", "radius_from_thresholds", "ceil_decimal", "format_threshold_table",
    "write_threshold_file", "certified_radii", "acc_at_r",
    "parse_fraction", "MAX_RADIUS",
]


# ----------------------------------------------------------------------------------------------
# argument checks

def parse_fraction(value, name: str = "value") -> Fraction:
    """Exact Fraction from a Fraction, int, decimal/fraction string, Decimal or float (floats through
    their shortest decimal repr: 0.1 -> 1/10). Raises TypeError/ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return Fraction(repr(v))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be finite, got {value!r}")
        return Fraction(value)
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a decimal or a fraction like 4/5, got {value!r}") from None
    if isinstance(value, numbers.Rational):
        return Fraction(int(value.numerator), int(value.denominator))
    raise TypeError(f"{name} must be a Fraction, int, float or numeric string, got {type(value).__name__}")


def _check_open_unit(value, name: str) -> Fraction:
    f = parse_fraction(value, name)
    if not 0 < f < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return f


def _keep(keep, alpha, where: str) -> Fraction:
    """The keep probability, checked, given as ``keep`` or under its deprecated name ``alpha`` (errors
    name the spelling the caller used)."""
    if alpha is not None:
        if keep is not None:
            raise TypeError(f"{where}: give keep only (alpha is its deprecated name)")
        warnings.warn(f"{where}(alpha=...) is deprecated: the keep probability is named keep",
                      DeprecationWarning, stacklevel=3)
        return _check_open_unit(alpha, "alpha")
    if keep is None:
        raise TypeError(f"{where}: missing the keep probability keep")
    return _check_open_unit(keep, "keep")


def _b(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "little")


def _i(b: bytes) -> int:
    return int.from_bytes(b, "little")


# ----------------------------------------------------------------------------------------------
# regions, probabilities, thresholds

def region_cardinalities(r: int, K: int) -> dict:
    """Exact sizes of the regions L(u, v; r): ``{(u, v): int}`` for all u, v >= 0 with u + v <= r
    ((r+1)(r+2)/2 entries, u-major order), |L(u, v; r)| = r!/(u! v! (r-u-v)!) (K-1)^(r-u-v).

    For K = 1 (binary inputs) every region with r - u - v > 0 has size 0. The values sum to
    (K+1)^r. Note the output grows like r^2 integers of up to r log2(3K) bits (r = 1000, K = 255:
    about 250 MB of Python ints).
    """
    r = check_int("r", r, 0, MAX_RADIUS)
    K = check_int("K", K, 1)
    raw = _native.stratified_region_cardinalities(r, _b(K))
    out = {}
    it = iter(raw)
    for u in range(r + 1):
        for v in range(r - u + 1):
            out[(u, v)] = _i(next(it))
    return out


def region_probabilities(r: int, keep=None, K: int = None, *, alpha=None) -> dict:
    """``{(u, v): (P(z in L(u,v;r) | x), P(z in L(u,v;r) | x'))}`` as exact Fractions (only the r
    coordinates where x and x' differ; the others cancel in every likelihood ratio). ``keep``: the
    keep probability (``alpha`` is its deprecated name)."""
    a = _keep(keep, alpha, "region_probabilities")
    K = check_int("K", K, 1)
    beta = (1 - a) / K
    out = {}
    for (u, v), n in region_cardinalities(r, K).items():
        out[(u, v)] = (n * a ** u * beta ** (r - u), n * a ** v * beta ** (r - v))
    return out


def group_probabilities(r: int, keep=None, K: int = None, *, alpha=None) -> dict:
    """``{s: (P(u - v = s | x), P(u - v = s | x'))}`` for s = -r..r, from the compiled path: the regions
    merged by their likelihood ratio (keep/beta)^s (empty groups included, as zeros)."""
    r = check_int("r", r, 0, MAX_RADIUS)
    a = _keep(keep, alpha, "group_probabilities")
    K = check_int("K", K, 1)
    raw, den = _native.stratified_group_masses(_b(a.numerator), _b(a.denominator), _b(K), r)
    den = _i(den)
    masses = [_i(m) for m in raw]
    return {j - r: (Fraction(masses[j], den), Fraction(masses[2 * r - j], den)) for j in range(2 * r + 1)}


def threshold(keep=None, K: int = None, radii=None, p=0.5, *, backend: str = "core", alpha=None) -> list:
    """Exact rho_r^{-1}(p) for each r in ``radii``: list of ``fractions.Fraction``, same order.

    p_A > rho_r^{-1}(1/2) (strict) certifies l0 radius r (module docstring). ``keep`` (keep
    probability; ``alpha`` is its deprecated name) and ``p`` in (0, 1) as Fraction, int, decimal
    string or float (shortest repr); K >= 1; radii non-negative ints <= MAX_RADIUS.
    ``backend="core"`` (compiled, default) or ``"reference"`` (gmpy2, slow: for tests and
    benchmarks). The compiled call releases the GIL.
    """
    a = _keep(keep, alpha, "threshold")
    if K is None or radii is None:
        raise TypeError("threshold needs keep, K and radii: threshold(keep, K, radii)")
    K = check_int("K", K, 1)
    pf = _check_open_unit(p, "p")
    rs = check_int_list("radii", radii, 0, MAX_RADIUS)
    if backend == "reference":
        from fastcert.smoothing import reference_stratified as ref

        return ref.threshold(a, K, rs, pf)
    if backend != "core":
        raise ValueError(f"backend must be 'core' or 'reference', got {backend!r}")
    if not rs:
        return []
    raw = _native.stratified_thresholds(_b(a.numerator), _b(a.denominator), _b(K), _b(pf.numerator),
                                        _b(pf.denominator), rs)
    return [Fraction(_i(n), _i(d)) for n, d in raw]


# ----------------------------------------------------------------------------------------------
# certification

_CACHE_SIZE = 32
_cache: OrderedDict = OrderedDict()  # (alpha, K) -> [rho_0^{-1}(1/2), rho_1^{-1}(1/2), ...]


def _cached_thresholds(a: Fraction, K: int, upto: int) -> list:
    key = (a, K)
    lst = _cache.get(key)
    if lst is None:
        lst = []
    if len(lst) <= upto:
        lst = lst + threshold(a, K, range(len(lst), upto + 1))
    _cache[key] = lst
    _cache.move_to_end(key)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return lst


def _check_p_lower(p_lower, name: str = "p_lower"):
    """A probability in [0, 1] kept exact: floats stay floats (compared exactly with Fractions)."""
    if isinstance(p_lower, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number in [0, 1], got {p_lower!r}")
    if isinstance(p_lower, (float, np.floating)):
        v = float(p_lower)
    elif isinstance(p_lower, (int, np.integer, Fraction)):
        v = Fraction(p_lower)
    else:
        v = parse_fraction(p_lower, name)
    if isinstance(v, float) and math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    if not 0 <= v <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {p_lower!r}")
    return v


def _first_not_certified(p, table: list) -> int:
    """Smallest index i with p <= table[i] (len(table) if none); table is non-decreasing."""
    lo, hi = 0, len(table)
    while lo < hi:
        mid = (lo + hi) // 2
        if p > table[mid]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def certified_l0_radius(p_lower, keep=None, K: int = None, max_radius: int = 1000, *, alpha=None) -> int:
    """Largest l0 radius r <= max_radius with p_lower > rho_r^{-1}(1/2), from a lower confidence bound
    ``p_lower`` (e.g. Clopper-Pearson) on the top-class probability under ``Discrete(keep, K)``
    (``alpha`` is the deprecated name of ``keep``).

    Returns -1 when p_lower <= 1/2 (nothing certified, not even x itself: abstain); 0 certifies the
    prediction at x only; ``max_radius`` means "at least max_radius" (pass the input dimension d: no
    two grid points differ in more than d coordinates). A ``max_radius`` above MAX_RADIUS is clipped
    to MAX_RADIUS (still sound: a smaller certified radius). Float ``p_lower`` is compared with the
    exact thresholds through its exact binary value. Thresholds are cached per (alpha, K) and
    computed on demand (radii 0..16, then x4), so a call costs a bisection over cached Fractions;
    the first call costs the largest radius reached (about 1 s for r = 1000, K = 255; far more for
    noise with alpha close to 1/(K+1), whose thresholds stay near 1/2 for many radii).
    """
    p = _check_p_lower(p_lower)
    a = _keep(keep, alpha, "certified_l0_radius")
    K = check_int("K", K, 1)
    if isinstance(max_radius, (int, np.integer)) and not isinstance(max_radius, bool) and max_radius > MAX_RADIUS:
        max_radius = MAX_RADIUS
    R = check_int("max_radius", max_radius, 0, MAX_RADIUS)
    if not p > Fraction(1, 2):
        return -1
    n = 16
    while True:
        upto = min(n, R)
        table = _cached_thresholds(a, K, upto)
        i = _first_not_certified(p, table[: upto + 1])
        if i <= upto:
            return i - 1
        if upto == R:
            return R
        n *= 4


def radius_from_thresholds(p_lower, thresholds: Mapping) -> int:
    """Largest r such that p_lower > thresholds[r'] for every r' = 0..r (strict; table keys must be
    0..R without gaps, values non-decreasing Fractions or floats, e.g. from read_threshold_file).
    -1 when p_lower <= thresholds[0]; R means "at least R" (the table ends there)."""
    p = _check_p_lower(p_lower)
    table = _table_list(thresholds)
    return _first_not_certified(p, table) - 1


def _table_list(thresholds: Mapping) -> list:
    if not isinstance(thresholds, Mapping):
        raise TypeError(f"thresholds must be a mapping radius -> threshold, got {type(thresholds).__name__}")
    keys = sorted(thresholds)
    if not keys or keys != list(range(len(keys))):
        raise ValueError("thresholds must have the radii 0, 1, ..., R without gaps")
    table = [thresholds[k] for k in keys]
    for k in range(1, len(table)):
        if table[k] < table[k - 1]:
            raise ValueError(f"thresholds must be non-decreasing in r (radius {k} is below radius {k - 1})")
    return table


# ----------------------------------------------------------------------------------------------
# threshold files

def ceil_decimal(t: Fraction, digits: int = DECIMALS) -> str:
    """``t`` >= 0 rounded UP to ``digits`` decimals, as a string ("0.96875000000000000000")."""
    t = Fraction(t)
    if t < 0:
        raise ValueError(f"ceil_decimal needs t >= 0, got {t}")
    scale = 10 ** digits
    q = -((-t.numerator * scale) // t.denominator)  # ceil(t * 10^digits)
    whole, frac = divmod(q, scale)
    return f"{whole}.{frac:0{digits}d}" if digits > 0 else str(whole)


def format_threshold_table(keep, K: int, max_radius: int, p=0.5, exact: bool = False) -> str:
    """The threshold file text for radii 0..max_radius at keep probability ``keep``: header
    ``radius<TAB>threshold`` (+ ``<TAB>fraction`` when exact), values rounded up to 20 decimals."""
    R = check_int("max_radius", max_radius, 0, MAX_RADIUS)
    ts = threshold(keep, K, range(R + 1), p)
    lines = ["radius\tthreshold\tfraction" if exact else "radius\tthreshold"]
    for r, t in enumerate(ts):
        row = f"{r}\t{ceil_decimal(t)}"
        if exact:
            row += f"\t{t.numerator}/{t.denominator}"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_threshold_file(path, keep, K: int, max_radius: int, p=0.5, exact: bool = False) -> None:
    """Write :func:`format_threshold_table` to ``path`` atomically."""
    text = format_threshold_table(keep, K, max_radius, p, exact)
    from fastcert.io.files import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------------------------
# ACC@r from certification logs

P_COLUMNS = ("p_lower", "pABar", "pA_lower", "p_hat", "pA")  # first present is used


def _log_columns(log) -> dict:
    if isinstance(log, (str, Path)):
        return read_log(log, raw=True)
    if isinstance(log, Mapping):
        return {k: v for k, v in log.items() if not str(k).startswith("_")}
    if isinstance(log, Iterable):
        rows = list(log)
        if not all(isinstance(r, Mapping) for r in rows):
            raise TypeError("log must be a path, a {column: values} mapping or a list of row mappings")
        keys = rows[0].keys() if rows else []
        return {k: [r[k] for r in rows] for k in keys}
    raise TypeError(f"log must be a path, a {{column: values}} mapping or a list of rows, got {type(log).__name__}")


def _p_value(v):
    if isinstance(v, str):
        return _check_p_lower(parse_fraction(v, "p_lower"))
    return _check_p_lower(v)


def certified_radii(log, thresholds) -> tuple:
    """Per row of ``log`` (path, {column: values} or list of rows): (certified l0 radius, correct),
    two lists. The radius comes from the row's lower bound (column p_lower, pABar, pA_lower, p_hat or
    pA) against ``thresholds`` ({r: threshold} or a thresholds file path): -1 when nothing is
    certified, R (the table's last radius) meaning "at least R"."""
    if isinstance(thresholds, (str, Path)):
        thresholds = read_threshold_file(thresholds)
    table = _table_list(thresholds)
    cols = _log_columns(log)
    pcol = next((c for c in P_COLUMNS if c in cols), None)
    if pcol is None:
        lower = {str(c).lower(): c for c in cols}
        pcol = next((lower[c.lower()] for c in P_COLUMNS if c.lower() in lower), None)
    if pcol is None:
        raise ValueError(f"log has no lower-bound column (one of {', '.join(P_COLUMNS)}) to compare with thresholds")
    if "correct" not in cols:
        raise ValueError("log has no 'correct' column")
    radii, correct = [], []
    for pv, cv in zip(cols[pcol], cols["correct"]):
        radii.append(_first_not_certified(_p_value(pv), table) - 1)
        correct.append(int(float(cv)) == 1)
    return radii, correct


def acc_at_r(log, thresholds, radii=None) -> dict:
    """ACC@r (Lee et al.): the fraction of logged test points that are correctly classified AND have
    certified l0 radius >= r, for each r in ``radii`` (default: every radius of the table).

    ``log``: a certification log path, a {column: values} mapping (e.g. fastcert.io.readers.read_log) or
    a list of row mappings, with a lower-bound column (p_lower / pABar / pA_lower / p_hat / pA) and
    ``correct``. ``thresholds``: {r: threshold} (e.g. fastcert.io.readers.read_threshold_file) or a path. Radii beyond the
    table's last radius R are refused (a point certified at R may or may not be certified beyond).
    Returns {r: float}.
    """
    if isinstance(thresholds, (str, Path)):
        thresholds = read_threshold_file(thresholds)
    R = max(thresholds) if thresholds else -1
    rs = list(range(R + 1)) if radii is None else check_int_list("radii", radii, 0, MAX_RADIUS)
    for r in rs:
        if r > R:
            raise ValueError(f"radius {r} is beyond the thresholds table (last radius {R})")
    cert, correct = certified_radii(log, thresholds)
    n = len(cert)
    if n == 0:
        raise ValueError("log has no rows")
    return {r: sum(1 for c, ok in zip(cert, correct) if ok and c >= r) / n for r in rs}
