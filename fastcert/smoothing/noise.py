"""Noise families for randomized smoothing: sampling parameters and certified-radius formulas.

Each noise knows (a) how the compiled kernels sample it (``kernel_params``), (b) the same distribution
written once in torch (``sample_torch``: the reference path and noise-augmentation training) and
(c) the radius it certifies from a lower bound ``p`` on the top-class probability of the smoothed
classifier, in its own norm (``radius``) and, derived through norm inequalities, in the other norms
(``radii``; ``derived_radii`` from the own-norm radius alone). Conventions:

* continuous norms (l1, l2, linf): a radius R certifies every perturbation with ||delta|| < R
  (Cohen et al.'s open ball); 0 means nothing beyond x itself;
* l0: an integer r certifies every perturbation that changes at most r coordinates;
* derived radii that use the [0, 1] input box say so: they assume x and x + delta both lie in it
  (each |delta_i| <= 1), which holds for images;
* ``p <= 1/2`` certifies nothing (every radius 0).
"""
from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import torch
from scipy.stats import norm as _normal

from fastcert import _native
from fastcert.validate import check_int, check_positive


# relative rounding error allowed for in a radius before an integer l0 radius is derived from it
_ROUNDING = 1e-9


def _l0_from_l2(r2: float, d: int | None = None) -> int:
    """Largest k with sqrt(k) < r2: k changed coordinates of the box move at most sqrt(k) in l2
    (capped at the dimension d when given: an infinite radius certifies all d coordinates).

    r2 carries the rounding error of the radius formula (about 1e-10 relative at worst), so it is
    first moved down by _ROUNDING: at a p exactly on a threshold, a radius rounded up to just above
    sqrt(k) would otherwise claim k, where the boundary point is a tie."""
    if r2 <= 0:
        return 0
    r2 = r2 * (1.0 - _ROUNDING)
    if math.isinf(r2) or (d is not None and r2 * r2 > d):
        return int(d) if d is not None else math.inf
    k = math.ceil(r2 * r2) - 1
    while k + 1 < r2 * r2:
        k += 1
    while k > 0 and math.sqrt(k) >= r2:
        k -= 1
    return max(k, 0)


def _l0_from_l1(r1: float, d: int | None = None) -> int:
    """Largest k with k < r1: k changed coordinates of the box move at most k in l1 (capped at d);
    r1 is first moved down by _ROUNDING, as in _l0_from_l2."""
    if r1 <= 0:
        return 0
    r1 = r1 * (1.0 - _ROUNDING)
    if math.isinf(r1) or (d is not None and r1 > d):
        return int(d) if d is not None else math.inf
    return max(math.ceil(r1) - 1, 0)


def _radii_from_l2(r: float, d: int) -> dict:
    """Every norm from an l2 radius: ||.||_2 <= ||.||_1 always and ||.||_2^2 <= ||.||_1 on the box,
    ||.||_2 <= sqrt(d) ||.||_inf, k changed box coordinates move at most sqrt(k) in l2."""
    return {"l2": r, "l1": max(r, r * r), "linf": r / math.sqrt(d), "l0": _l0_from_l2(r, d)}


def _radii_from_l1(r: float, d: int) -> dict:
    """Every norm from an l1 radius: ||.||_1 <= sqrt(d) ||.||_2 <= d ||.||_inf, k changed box
    coordinates move at most k in l1."""
    return {"l1": r, "l2": r / math.sqrt(d), "linf": r / d, "l0": _l0_from_l1(r, d)}


class Noise:
    """Base class. Subclasses set ``norm`` (the norm of their own radius) and ``kernel_code``."""

    norm: str = "l2"
    kernel_code: int = 0
    name: str = "noise"

    def kernel_params(self) -> tuple[int, float, int, int]:
        """(noise_type, scale, keep_thresh, K) for fastcert._native.sample_cpu / sample_cuda."""
        raise NotImplementedError

    def radius(self, p: float, d: int):
        """Certified radius in ``self.norm`` from a lower bound p on the top-class probability."""
        raise NotImplementedError

    def radii(self, p: float, d: int) -> dict:
        """Certified radii in every norm (own norm exact, others derived); d = input dimension."""
        raise NotImplementedError

    def derived_radii(self, r, d: int) -> dict:
        """Radii in every norm ("l0", "l1", "l2", "linf") implied by a certified radius ``r`` in
        ``self.norm`` alone, through the norm inequalities of the class docstring (l0 capped at the
        input dimension d). Used wherever only the own-norm radius is known (top-k certificates);
        ``radii(p, d)`` equals ``derived_radii(radius(p, d), d)`` except where the noise certifies
        more from p itself (Uniform's linf and l0)."""
        raise NotImplementedError

    def sample_torch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A noisy copy of ``x`` (any shape, on any device, same dtype), drawn with torch from
        ``generator`` (None: torch's global generator): the distribution the compiled kernels sample,
        written once in torch for the reference path and for noise-augmentation training. Equal to the
        kernels in distribution, not sample for sample."""
        raise NotImplementedError

    def check_input(self, x: np.ndarray) -> None:
        """Raise ValueError if x cannot be smoothed by this noise (continuous noises accept any x)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.param_str()})"

    def param_str(self) -> str:
        raise NotImplementedError


class Gaussian(Noise):
    """Isotropic Gaussian noise N(0, sigma^2 I) (Cohen, Rosenfeld & Kolter 2019).

    l2 radius: sigma * Phi^{-1}(p)  (Cohen et al., Theorem 1, with p_B = 1 - p).
    Derived: l1 = max(R, R^2) (||d||_2 <= ||d||_1 always; ||d||_2^2 <= ||d||_1 on the box),
    linf = R / sqrt(d) (||d||_2 <= sqrt(d) ||d||_inf), l0 = largest k with sqrt(k) < R (box).
    """

    norm = "l2"
    name = "gaussian"

    def __init__(self, sigma):
        self.sigma = check_positive("sigma", sigma)

    def param_str(self):
        return f"sigma={self.sigma}"

    def kernel_params(self):
        return (_native.NOISE_GAUSSIAN, self.sigma, 0, 0)

    def radius(self, p, d=1):
        p = float(p)
        if not p > 0.5:
            return 0.0
        return float(self.sigma * _normal.ppf(p))  # inf at p = 1

    def radii(self, p, d):
        return self.derived_radii(self.radius(p, d), d)

    def derived_radii(self, r, d):
        return _radii_from_l2(float(r), d)

    def sample_torch(self, x, generator=None):
        return x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class Laplace(Noise):
    """I.i.d. Laplace noise with density exp(-|t|/scale) / (2 scale) per coordinate.

    l1 radius: -scale * log(2 (1 - p))  (Teng, Lee & Yuan 2020, "l1 adversarial robustness
    certificates: a randomized smoothing approach", Theorem 1).
    Derived: l2 = R / sqrt(d) (||d||_1 <= sqrt(d) ||d||_2), linf = R / d, l0 = largest k < R (box).
    """

    norm = "l1"
    name = "laplace"

    def __init__(self, scale):
        self.scale = check_positive("scale", scale)

    def param_str(self):
        return f"scale={self.scale}"

    def kernel_params(self):
        return (_native.NOISE_LAPLACE, self.scale, 0, 0)

    def radius(self, p, d=1):
        p = float(p)
        if not p > 0.5:
            return 0.0
        if p >= 1.0:
            return math.inf
        return float(-self.scale * math.log(2.0 * (1.0 - p)))

    def radii(self, p, d):
        return self.derived_radii(self.radius(p, d), d)

    def derived_radii(self, r, d):
        return _radii_from_l1(float(r), d)

    def sample_torch(self, x, generator=None):
        # inverse CDF: u uniform on (-1/2, 1/2) (clamped away from the ends, where log1p(-2|u|) = -inf),
        # -log(1 - 2|u|) ~ Exp(1), the sign of u makes it two-sided
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).clamp_(1e-7, 1 - 1e-7) - 0.5
        return x - self.scale * torch.sign(u) * torch.log1p(-2 * u.abs())


class Uniform(Noise):
    """I.i.d. uniform noise on [-width, width] per coordinate.

    The smoothed probability at x + delta is at least p - TV(U, U + delta) with
    TV = 1 - prod_i (1 - |delta_i| / (2 width))  (Yang et al. 2020, "Randomized Smoothing of All
    Shapes and Sizes", cube-uniform noise; tight for the worst-case base classifier). Hence
    l1 radius: 2 width (p - 1/2)  (TV <= ||delta||_1 / (2 width));
    linf radius: 2 width (1 - (3/2 - p)^(1/d));
    l0 (box, |delta_i| <= 1): largest k with 1 - (1 - 1/(2 width))^k < p - 1/2 when 2 width > 1;
    l2: the larger of the l1-derived R1 / sqrt(d) and the linf radius (||d||_inf <= ||d||_2).
    """

    norm = "l1"
    name = "uniform"

    def __init__(self, width):
        self.width = check_positive("width", width)

    def param_str(self):
        return f"width={self.width}"

    def kernel_params(self):
        return (_native.NOISE_UNIFORM, self.width, 0, 0)

    def radius(self, p, d=1):
        p = float(p)
        if not p > 0.5:
            return 0.0
        return float(2.0 * self.width * (p - 0.5))

    def linf_radius(self, p, d):
        p = float(p)
        if not p > 0.5:
            return 0.0
        return float(-2.0 * self.width * math.expm1(math.log1p(0.5 - p) / d))  # 2w (1 - (3/2 - p)^(1/d))

    def l0_radius(self, p) -> int:
        p = float(p)
        if not p > 0.5:
            return 0
        k_l1 = _l0_from_l1(self.radius(p))
        if 2.0 * self.width <= 1.0:
            return k_l1
        q = 1.0 - 1.0 / (2.0 * self.width)  # per changed coordinate, overlap fraction at |delta_i| = 1
        # largest k with 1 - q^k < p - 1/2  <=>  k < log(3/2 - p) / log(q)
        bound = math.log(1.5 - p) / math.log(q) if q > 0 else 0.0
        k = max(math.ceil(bound) - 1, 0)
        while 1.0 - q ** (k + 1) < p - 0.5:
            k += 1
        while k > 0 and not (1.0 - q**k < p - 0.5):
            k -= 1
        return max(k, k_l1)

    def radii(self, p, d):
        r1 = self.radius(p, d)
        rinf = self.linf_radius(p, d)
        return {"l1": r1, "linf": rinf, "l2": max(r1 / math.sqrt(d), rinf), "l0": self.l0_radius(p)}

    def derived_radii(self, r, d):
        return _radii_from_l1(float(r), d)

    def sample_torch(self, x, generator=None):
        return x + self.width * (2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1)


class Discrete(Noise):
    """Discrete noise on the grid {0, 1/K, ..., 1}: each coordinate is kept with probability
    ``keep``, else replaced by one of the K other levels uniformly (Lee, Yuan, Chang & Jaakkola
    2019, "A Stratified Approach to Robustness for Randomly Smoothed Classifiers").

    l0 radius: the largest r whose exact threshold rho_r^{-1}(1/2) lies below p
    (fastcert.smoothing.stratified). Derived on the grid: a grid point at l1 distance < (r+1)/K, or l2 distance
    < sqrt(r+1)/K, differs in at most r coordinates; within linf < 1/K the only grid point is x.
    """

    norm = "l0"
    name = "discrete"

    def __init__(self, keep=None, K=None, *, alpha=None):
        name = "keep"
        if alpha is not None:  # the keep probability's old name, deprecated (alpha is the failure probability)
            if keep is not None:
                raise TypeError("Discrete: give keep only (alpha is its deprecated name)")
            warnings.warn("Discrete(alpha=...) is deprecated: the keep probability is named keep, "
                          "Discrete(keep, K)", DeprecationWarning, stacklevel=2)
            keep, name = alpha, "alpha"
        if keep is None or K is None:
            raise TypeError("Discrete needs the keep probability and K: Discrete(keep, K)")
        try:
            a = Fraction(str(keep)) if isinstance(keep, float) else Fraction(keep)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number in (0, 1), got {keep!r}") from None
        if not (0 < a < 1):
            raise ValueError(f"{name} (keep probability) must be in (0, 1), got {keep!r}")
        self.keep = a
        self.K = check_int("K", K, 1, 2**31 - 1)

    @property
    def alpha(self) -> Fraction:
        """Deprecated name of :attr:`keep`."""
        warnings.warn("Discrete.alpha is deprecated: use Discrete.keep", DeprecationWarning, stacklevel=2)
        return self.keep

    def param_str(self):
        return f"keep={self.keep}, K={self.K}"

    def kernel_params(self):
        keep = (self.keep.numerator << 64) // self.keep.denominator  # floor(keep * 2^64) < 2^64
        return (_native.NOISE_DISCRETE, 1.0, int(keep), self.K)

    def check_input(self, x):
        x = np.asarray(x, dtype=np.float64)
        lv = x * self.K
        if np.any(x < 0) or np.any(x > 1) or np.any(np.abs(lv - np.round(lv)) > 1e-4):
            raise ValueError(f"x must lie on the grid {{0, 1/K, ..., 1}} with K={self.K} for discrete noise")

    def radius(self, p, d=None):
        p = float(p)
        if not p > 0.5:
            return 0
        from fastcert.smoothing.stratified import certified_l0_radius

        max_r = d if d is not None else 1000
        return int(certified_l0_radius(p, self.keep, self.K, max_radius=max_r))

    def radii(self, p, d):
        return self.derived_radii(self.radius(p, d) if float(p) > 0.5 else -1, d)

    def derived_radii(self, r, d):
        """r = -1: nothing certified (p <= 1/2), every radius 0; r >= 0 certifies x itself at least."""
        if r < 0:
            return {"l0": 0, "l1": 0.0, "l2": 0.0, "linf": 0.0}
        r = int(r)
        return {"l0": r, "l1": (r + 1) / self.K, "l2": math.sqrt(r + 1) / self.K,
                "linf": math.inf if r >= d else 1.0 / self.K}

    def sample_torch(self, x, generator=None):
        """x must lie on the grid {0, 1/K, ..., 1} (see check_input)."""
        lvl = torch.round(x * self.K).long()
        keep = torch.rand(x.shape, generator=generator, device=x.device) < float(self.keep)
        off = torch.randint(0, self.K, x.shape, generator=generator, device=x.device)  # one of the K others
        new = (lvl + 1 + off) % (self.K + 1)
        return torch.where(keep, lvl, new).to(x.dtype) / self.K


NOISES = {"gaussian": Gaussian, "laplace": Laplace, "uniform": Uniform, "discrete": Discrete}


def make_noise(name: str, sigma: float | None = None, keep=None, K: int | None = None, *,
               alpha_keep=None) -> Noise:
    """Build a noise from CLI-style arguments; ``sigma`` is the scale parameter of the continuous
    noises (sigma, Laplace scale, uniform half-width), ``keep`` and ``K`` those of discrete noise
    (``alpha_keep`` is the deprecated name of ``keep``)."""
    if alpha_keep is not None:
        if keep is not None:
            raise TypeError("make_noise: give keep only (alpha_keep is its deprecated name)")
        warnings.warn("make_noise(alpha_keep=...) is deprecated: use keep=", DeprecationWarning, stacklevel=2)
        keep = alpha_keep
    if name not in NOISES:
        raise ValueError(f"noise must be one of {sorted(NOISES)}, got {name!r}")
    if name == "discrete":
        if keep is None or K is None:
            raise ValueError("discrete noise needs --keep and --K")
        return Discrete(keep, K)
    if sigma is None:
        raise ValueError(f"{name} noise needs --sigma")
    return NOISES[name](sigma)
