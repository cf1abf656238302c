"""Sound randomized smoothing in floating point, for inputs on a known grid (``Smooth(..., sound=True)``).

Why the ordinary mode is not sound
----------------------------------
Cohen et al.'s theorem is about g(x) = argmax_c P(f(x + eps) = c) with x + eps computed in exact real
arithmetic. The ordinary mode feeds the network float32(x + float32 noise): the low-order bits of that
sum depend on x, so the law of the computed input at x' is not the law at x translated by x' - x.
Voráček & Hein ("Sound randomized smoothing in floating-point arithmetic", ICLR 2023) build base
classifiers that read those bits and obtain false certificates (python_tests/soundness/test_sound_fp.py
builds one). They propose smoothing over a fine lattice for grid inputs; this module implements a
construction of that kind and proves it here.

The claim
---------
Inputs lie on the grid G = {k / L : k = 0..L}^d (L = levels - 1; 8-bit images: L = 255). Let
m = ceil(256 / L), the lattice step h = 1 / (L m) (<= 1/256) and Q(v) = h * round(v / h) coordinatewise
(round to nearest; ties have probability 0). Let F = f o Q, where f is the network exactly as it
computes: it receives the float32 vector float32(z / (L m)) of the integer vector z = v / h (see below)
and whatever rounding happens inside it is part of f. F is a fixed deterministic function of R^d.
The smoothed classifier is

    g(x') = argmax_c P(F(x' + eps) = c),   eps ~ N(0, sigma^2 I) exactly (real numbers).

CLAIM. If ``certify`` returns class c_A with radius R, then, with probability >= 1 - alpha over its
sampling, g(x') = c_A for every x' in R^d with ||x' - x||_2 < R, in particular for every grid point.

Proof, step by step
-------------------
1. (Cohen et al. 2019, Theorem 1.) g is Gaussian smoothing of the deterministic classifier F; the
   theorem holds for any measurable base classifier, so if P(F(x + eps) = c_A) >= p > 1/2 then
   g(x') = c_A whenever ||x' - x||_2 < sigma Phi^{-1}(p). Nothing about F's arithmetic matters.
2. (Exact sampling arithmetic.) For x = k / L, (x + eps) / h = k m + eps / h exactly, so
   Q(x + eps) = h (k m + J) with the integer J = round(eps / h), i.e. coordinatewise i.i.d. with the
   discretized Gaussian law p(j) = Phi((j + 1/2) h / sigma) - Phi((j - 1/2) h / sigma). The sampler draws
   the integer J, forms the integer z = k m + J exactly (int64; |z| < 2^52 is checked) and passes
   float32(double(z) / double(L m)) to the network: a deterministic function of z alone, i.e. F(x + eps).
   No floating-point sum x + noise is ever formed, so the input reveals nothing about x beyond z.
3. (Inversion with a finite table.) J is drawn from one 64-bit uniform U (two Philox-4x32-10 words,
   counter (coordinate // 2, sample index, stream), key seed: results do not depend on batch size):
   J = -J_max + #{i : t_i <= U}, with the integer thresholds t_i = round(2^64 Phi_i), clamped to
   [0, 2^64 - 1], where Phi_i = Phi((-J_max + i + 1/2) h / sigma), i = 0 .. 2 J_max - 1, and
   J_max = ceil(12 sigma / h). Let q be the law this produces and q* the law obtained with the exact
   thresholds 2^64 Phi_i (that is, J_ideal clamped to [-J_max, J_max]).
   - TV(q*, p) = P(J_ideal < -J_max) + P(J_ideal > J_max) = 2 Phi(-(J_max + 1/2) h / sigma) (clamping
     moves exactly that mass; Gaussian symmetry).
   - q and q* are the same map of U with cell boundaries moved by |t_i - 2^64 Phi_i|, so
     TV(q, q*) <= sum_i |t_i - 2^64 Phi_i| / 2^64 (each moved boundary changes the two adjacent cells
     by the same amount; TV is half the l1 distance).
   Hence tv1 := sum_i |t_i / 2^64 - Phi_i| + 2 Phi(-(J_max + 1/2) h / sigma) >= TV(q, p). It is
   computed with mpmath at 160 bits; N * 2^-120 is added for mpmath's own error and the result is
   rounded up to a float. (For sigma = 0.25, L = 255: tv1 ~ 1e-16.)
4. (d coordinates.) Coordinates are independent, so the TV between the sampled and ideal laws of one
   noisy input is <= d tv1 (TV of a product is at most the sum of the TVs), hence for the event
   A = {F(.) = c_A}: P_ideal(A) >= P_sampled(A) - d tv1.
5. (Confidence bound.) The n estimation samples are i.i.d. draws of the sampled law (Philox taken as
   a random source, as in every smoothing implementation). The one-sided Clopper-Pearson lower bound
   p_s at level alpha satisfies P_sampled(A) >= p_s with probability >= 1 - alpha. scipy's beta.ppf
   is not exact (it can exceed the true bound by an ulp-sized amount: tests show tails of
   alpha + 1e-16), so ``verified_cp_lower`` checks P(Bin(n, p_s) >= k) <= alpha with mpmath (exact
   summation of the upper tail from k, with a geometric bound on the rest, which is valid because the
   term ratio is decreasing and < 1 there) and steps p_s down until the check passes. Any p below the
   exact Clopper-Pearson bound is still a valid lower bound.
6. (Radius.) p = p_s - d tv1, rounded down (one ulp toward -inf after the float subtraction). Abstain
   unless p > 1/2. R = sigma Phi^{-1}(p) is computed with mpmath (erfinv, 160 bits) and then moved two
   ulps toward 0, below the exact value. Derived radii (l1, linf, l0 on the box) use the same formulas as
   the ordinary Gaussian noise applied to this R, each moved one ulp toward 0.
7. (Selection.) c_A comes from independent selection samples; any choice of c_A is covered by 1-6.

PREDICT uses the same sampler; its wrong-answer probability is at most alpha + n d tv1 (the n-sample
laws differ in TV by at most n d tv1), recorded nowhere because it is ~1e-9 or less.

What is assumed: F is one fixed function of a single input (the network's output on a sample does not
depend on the other samples of its batch: true of deterministic, batch-invariant kernels; the ordinary
mode assumes the same), and Philox words behave as independent uniform bits.

Deviation from the design brief: Q rounds to nearest instead of flooring, so the noise stays centred
(floor would shift every input by -h/2); the proof is the same with shifted cells.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from fastcert import _native
from fastcert.smoothing.certificate import ABSTAIN, Certificate
from fastcert.smoothing.noise import Gaussian, _l0_from_l2
from fastcert.stats import clopper_pearson_lower
from fastcert.validate import check_radii

_PREC = 160          # mpmath working precision (bits) for the table, tv1, the CP check and the radius
_TAILS = 12          # J_max = ceil(_TAILS * sigma / h): the clamped tail mass is 2 Phi(-12) ~ 3.6e-33
_GRID_TOL = 1e-6     # |x - k/L| allowed: float32 storage of k/L is within 6e-8 of it
_MAX_LEVELS = 65537  # 16-bit grids; keeps 1/(2L) far above the tolerance and L m far below 2^52
_MAX_TABLE = 1 << 24  # thresholds; sigma / h = sigma L m beyond ~7e5 is not a grid smoothing any more


def lattice_params(levels) -> tuple[int, int, int]:
    """(L, m, L*m) for a grid of ``levels`` values {0, 1/L, ..., 1}: lattice step h = 1 / (L m) <= 1/256."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise TypeError(f"levels must be an integer >= 2, got {levels!r}")
    levels = int(levels)
    if not 2 <= levels <= _MAX_LEVELS:
        raise ValueError(f"levels must be in [2, {_MAX_LEVELS}], got {levels}")
    L = levels - 1
    m = -(-256 // L)
    return L, m, L * m


def _mp():
    import mpmath

    ctx = mpmath.mp.clone()
    ctx.prec = _PREC
    return ctx


@functools.lru_cache(maxsize=16)
def lattice_table(sigma: float, denom: int) -> tuple[np.ndarray, int, float]:
    """Thresholds of the discretized Gaussian with step h = 1/denom: (t (N,) uint64, j_min, tv1).

    t_i = round(2^64 Phi((j_min + i + 1/2) h / sigma)) clamped to [0, 2^64 - 1], j_min = -J_max, and tv1
    is a rigorous upper bound on the total variation between the law the sampler draws and the exact
    discretized Gaussian law of one coordinate (module docstring, step 3)."""
    mp = _mp()
    s = mp.mpf(float(sigma))
    h = mp.mpf(1) / denom
    j_max = int(mp.ceil(_TAILS * s / h))
    n = 2 * j_max
    if n > _MAX_TABLE:
        raise ValueError(f"sigma={sigma} is too large for sound smoothing on this grid (table of {n} entries)")
    two64 = mp.mpf(2) ** 64
    top = (1 << 64) - 1
    t = np.empty(n, dtype=np.uint64)
    err = mp.mpf(0)
    for i in range(n):
        exact = two64 * mp.ncdf((-j_max + i + mp.mpf(0.5)) * h / s)
        ti = min(max(int(mp.nint(exact)), 0), top)
        t[i] = ti
        err += abs(ti - exact)
    tail = 2 * mp.ncdf(-(j_max + mp.mpf(0.5)) * h / s)
    tv1 = err / two64 + tail + n * mp.mpf(2) ** -120
    return t, -j_max, _up(float(tv1))


def _up(v: float) -> float:
    return math.nextafter(v, math.inf)


def _down(v: float) -> float:
    return math.nextafter(v, -math.inf)


def _binom_upper_tail_bound(k: int, n: int, p, mp):
    """An upper bound on P(Bin(n, p) >= k) for k > (n + 1) p - 1 (so the term ratio is < 1 from k on)."""
    q = 1 - p
    term = mp.binomial(n, k) * p**k * q ** (n - k)
    total = mp.mpf(0)
    i = k
    while True:
        total += term
        if i == n:
            return total
        ratio = mp.mpf(n - i) / (i + 1) * p / q  # decreasing in i
        term = term * ratio
        i += 1
        r_next = mp.mpf(n - i) / (i + 1) * p / q if i < n else mp.mpf(0)
        rest = term / (1 - r_next)  # geometric bound on sum_{j >= i} term_j
        if rest <= total * mp.mpf(2) ** -100:
            return (total + rest) * (1 + mp.mpf(2) ** -80)


def verified_cp_lower(k: int, n: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson lower bound, stepped down until mpmath confirms P(Bin(n, p) >= k) <= alpha
    (step 5 of the module docstring): a float that is never above the exact bound."""
    p = clopper_pearson_lower(k, n, alpha)
    if k == 0 or p <= 0.0:
        return 0.0
    mp = _mp()
    a = mp.mpf(alpha)
    for _ in range(200):
        pm = mp.mpf(p)
        if k > (n + 1) * pm - 1 and _binom_upper_tail_bound(k, n, pm, mp) <= a:
            return p
        p = max(0.0, p - max(p * 2.0**-40, 1e-300))
    raise RuntimeError(f"could not verify the Clopper-Pearson bound for k={k}, n={n}")  # pragma: no cover


def sound_radius(p: float, sigma: float) -> float:
    """sigma * Phi^{-1}(p) computed with mpmath and moved two ulps toward 0 (0.0 unless p > 1/2)."""
    if not p > 0.5:
        return 0.0
    mp = _mp()
    r = mp.mpf(sigma) * mp.sqrt(2) * mp.erfinv(2 * mp.mpf(p) - 1)
    return max(0.0, _down(_down(float(r))))


class LatticeSmoothing:
    """The sound mode of one ``Smooth``: grid, lattice table and the certificate with its TV correction."""

    def __init__(self, noise, levels):
        if not isinstance(noise, Gaussian):
            raise ValueError(f"noise: sound=True supports Gaussian noise only, got {noise!r}")  # noqa: TRY004 (a supported type, wrong value for this mode)
        self.sigma = noise.sigma
        self.noise = noise
        self.L, self.m, self.denom = lattice_params(levels)
        self.levels = self.L + 1

    def table(self):
        return lattice_table(self.sigma, self.denom)

    def base_of(self, x: torch.Tensor) -> np.ndarray:
        """k * m for x = k / L (flattened, int64); ValueError naming x when x is not on the grid."""
        xd = x.detach().cpu().reshape(-1).to(torch.float64).numpy()
        k = np.rint(xd * self.L)
        if np.any(xd < 0) or np.any(xd > 1) or np.any(np.abs(xd - k / self.L) > _GRID_TOL):
            bad = int(np.argmax((xd < 0) | (xd > 1) | (np.abs(xd - k / self.L) > _GRID_TOL)))
            raise ValueError(f"x must lie on the grid {{0, 1/{self.L}, ..., 1}} (levels={self.levels}) for "
                             f"sound=True; coordinate {bad} is {xd[bad]!r}")
        return (k.astype(np.int64) * self.m).copy()

    def sample_counts(self, smooth, x, num, batch_size, seed, stream, start, cls, measure):
        """Counts of the base classifier's argmax over ``num`` lattice samples (see Smooth.sample_counts)."""
        if measure is not None:
            raise ValueError("measure: per-sample scores/margins are not supported with sound=True")
        base = self.base_of(x)
        thr, j_min, _ = self.table()
        D, C = base.size, smooth.num_classes
        bs = min(batch_size, max(num, 1))
        host = np.empty((bs, D), dtype=np.float32)
        host_t = torch.from_numpy(host)
        counts = torch.zeros(C, dtype=torch.int64, device=smooth.device)
        nan_rows = 0
        done = 0
        shape = tuple(x.shape)
        while done < num:
            b = min(bs, num - done)
            _native.lattice_sample_cpu(base, host[:b], seed, stream, start + done, thr, j_min, self.denom)
            batch = host_t[:b] if smooth.device.type == "cpu" else host_t[:b].to(smooth.device, non_blocking=False)
            logits = smooth._forward(batch.view(b, *shape)).detach()
            bad = torch.isnan(logits).any(dim=1)
            nan_rows += int(bad.sum())
            pred = logits.float().argmax(dim=1)[~bad]  # first maximum: ties go to the lower class index
            counts += torch.bincount(pred, minlength=C)[:C]
            done += b
        if nan_rows:
            raise ValueError(f"model: produced NaN logits on {nan_rows} of {num} noisy samples")
        return counts.cpu().numpy(), None

    def certificate(self, c_a, counts, alpha, d, n_used, seed=None, radii=None) -> Certificate:
        """Certificate for class c_a with the TV correction and outward rounding of steps 4-6."""
        counts = np.asarray(counts, dtype=np.int64)
        n = int(counts.sum())
        _, _, tv1 = self.table()
        tv = _up(d * tv1)
        p_s = verified_cp_lower(int(counts[c_a]), n, alpha)
        p = _down(p_s - tv) if p_s > 0 else 0.0
        if not p > 0.5:
            pred, radius = ABSTAIN, 0.0
            all_radii = {"l0": 0, "l1": 0.0, "l2": 0.0, "linf": 0.0}
        else:
            pred = c_a
            radius = sound_radius(p, self.sigma)
            all_radii = {"l2": radius, "l1": _down(max(radius, radius * radius)),
                         "linf": _down(radius / math.sqrt(d)), "l0": _l0_from_l2(radius, d)}
        cert = Certificate(pred, radius, all_radii, counts, float(p), int(n_used), seed=seed)
        cert.extra.update({"sound": True, "levels": self.levels, "lattice_step": 1.0 / self.denom,
                           "tv_correction": tv, "p_lower_sampled": float(p_s)})
        if radii is not None:
            cert.certified = {float(r): bool(pred != ABSTAIN and radius >= float(r)) for r in check_radii(radii)}
        return cert
