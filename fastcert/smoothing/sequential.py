"""Sequential and input-adaptive certification for randomized smoothing, one input or many at once.

Both procedures are reached through ``Smooth.certify(..., sequential=True)`` (one input) and
:func:`certify_many_sequential` / :func:`iter_certify_sequential` (many inputs sharing full forward
batches; the CLI's ``certify --radii ... --sequential`` and ``certify --adaptive``).

Setting. Let cA be the class picked from the n0 selection samples (Philox stream 0) and
pA = P(f(x + noise) = cA). The estimation samples (stream 1, the one fixed-n CERTIFY uses) are one
fixed i.i.d. sequence X_1, X_2, ... of Bernoulli(pA) indicators "sample i is classified cA"; sample i
is a deterministic function of (seed, stream, i) only. Stream 0 and stream 1 use disjoint Philox
counters, so the selection is independent of the estimation sequence: everything below holds
conditionally on the selection (cA, and anything computed from the selection samples), hence
unconditionally. Because the looks read prefixes of the fixed-n sequence, a run that reaches the last
look n_K = max_n = n has seen exactly the samples of ``Smooth.certify(x, n0, n, ..., seed)``: an input
whose decision needs every sample gets fixed n's own counts, and differs from it only by the level
a_K < alpha of that look. (Sharing samples between two procedures is harmless: each is valid on its
own; a user who runs both and picks the better one would need a union bound, as always.)

Anytime-valid lower confidence sequence (both modes). The looks n_1 < ... < n_K = max_n (geometric,
``growth``; :func:`look_schedule`) and the levels a_1, ..., a_K with sum_k a_k = alpha
(:func:`look_levels`: ``final_share * alpha`` at the last look; the rest equally, ``spending="uniform"``,
or in proportion to 1 / k^1.1, ``spending="power"``) are fixed before any estimation sample is seen.
At look k, L_k = CP_lower(S_{n_k}, n_k, a_k), the one-sided Clopper-Pearson bound on the first n_k
samples (S_n = X_1 + ... + X_n). Each event E_k = {L_k > pA} depends on the fixed prefix X_1..X_{n_k}
only and has probability <= a_k (Clopper & Pearson 1934). By the union bound
P(E_1 or ... or E_K) <= alpha. On the complement, every L_k is <= pA, whichever looks are taken and
whenever we stop: the stopping rule only decides which of the K pre-defined events we get to see, it
does not change them (stitching over a finite grid; Howard, Ramdas, McAuliffe & Sekhon 2021, Ann.
Statist.). So B = max over the looks taken of L_k is a valid lower bound on pA with probability
>= 1 - alpha, simultaneously for every stopping rule, and with it every radius noise.radius(B) (and
every target r <= noise.radius(B)): one confidence sequence for the single quantity pA covers all
radii and r = 0 (the prediction itself, pA > 1/2) at once, with no split of alpha across them.
Peeking with a fixed-n bound at full alpha at every look (the soundness suite's control) is exactly
what the union bound forbids: its failure probability grows with the number of looks.

``mode="radii"``: decides every target radius r in {0} U radii ("certified" / "not certifiable").
r is certified as soon as B certifies it. Futility: r is dropped at look k when the upper
Clopper-Pearson bound U_k at level ``futility`` (default 0.05) is below need_r / max_n, need_r being
the smallest final-look count that certifies r: even at pA = U_k the final look would be expected to
fail. Dropping never makes a claim, so futility cannot break soundness; it only trades agreement with
fixed n for samples. r = 0 is always a target, so sampling goes on while the prediction itself is
undecided even when every other target has been dropped, and the certificate reports the largest
radius B gives (never an abstention where B > 1/2). Sampling stops when every target is decided.

``mode="adaptive"``: the usual output (the largest certified radius) with an input-specific number
of samples. It runs the same confidence sequence and stops at the first look where r = 0 is decided
(B > 1/2, or U_k < need_0 / max_n) and one of two rules says more samples are not worth it:
- tol: the radius that max_n samples would give if pA were U_k (its upper bound at level
  ``futility``), minus the current radius noise.radius(B), is <= tol;
- price (samples per unit of radius, in units of the radius certified at pA = Phi(1), i.e. per sigma
  for Gaussian noise): for every later look m, price * (rhat_m - noise.radius(B)) <= n_m - n_k, where
  rhat_m is the radius look m's bound would give if the count kept growing at the observed rate
  k / n_k. This is the per-input Lagrangian of "fewest samples at a given loss of average certified
  radius" with the unknown pA replaced by its estimate; on the issue-19 benchmark it loses less radius
  than the tol rule at the same number of samples (benchmarks/RESULTS.md).
The reported bound is B, valid by the argument above; the stopping rules (which use U_k and k / n_k)
only decide which looks are taken.

Batching (:func:`iter_certify_sequential`). Each input keeps its own seed, selection class, looks and
state; one forward batch holds the next pending samples of as many inputs as fit. Sample i of stream
s of input j is drawn from (seed_j, s, i) wherever it lands in a batch, and each input's decisions
depend only on its own counts at its own looks, so every input's certificate is identical to
certifying it alone (the model's per-row outputs must not depend on the batch, as everywhere in
fastcert); each input stops independently.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from scipy.special import ndtri as _ndtri

from fastcert import _native
from fastcert.rng import resolve_seed
from fastcert.smoothing.certificate import ABSTAIN, STREAM_ESTIMATE, STREAM_SELECT, Certificate
from fastcert.smoothing.noise import Gaussian as _Gaussian
from fastcert.stats import clopper_pearson_lower, clopper_pearson_upper
from fastcert.validate import check_alpha, check_float, check_int, check_radii


MODES = ("radii", "adaptive")
SPENDINGS = ("uniform", "power")
# defaults chosen on the issue-19 benchmark (benchmarks/RESULTS.md, "Sequential certification v2")
DEFAULT_GROWTH = 1.25
DEFAULT_SPENDING = "uniform"
DEFAULT_FINAL_SHARE = 0.5
DEFAULT_FUTILITY = 0.05
DEFAULT_TOL = 0.01
DEFAULT_PRICE = 300_000.0


# ---------------------------------------------------------------------------- threshold inversion
def threshold_for_radius(noise, r: float, d: int, tol: float = 1e-12) -> float:
    """Smallest probability p (> 1/2) with ``noise.radius(p, d) >= r``: the lower bound on the
    top-class probability that certifies radius r. Returns a value > 1 when no p <= 1 certifies r.

    Closed forms for Gaussian (Phi(r / sigma)), Laplace (1 - exp(-r / scale) / 2) and Uniform
    (1/2 + r / (2 width)); any other noise by bisection on its (monotone) ``radius``. The returned
    value t satisfies radius(t) >= r up to the bisection tolerance; certification decisions in this
    module are always made by evaluating ``noise.radius`` itself, so t is only used for planning.
    """
    from scipy.stats import norm as _normal

    from fastcert.smoothing.noise import Gaussian, Laplace, Uniform

    r = float(r)
    if r <= 0:
        return 0.5
    if isinstance(noise, Gaussian):
        return float(_normal.cdf(r / noise.sigma))
    if isinstance(noise, Laplace):
        return float(1.0 - 0.5 * math.exp(-r / noise.scale))
    if isinstance(noise, Uniform):
        return 0.5 + r / (2.0 * noise.width)
    if noise.radius(1.0, d) < r:
        return 2.0
    lo, hi = 0.5, 1.0  # radius(lo) < r <= radius(hi)
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if noise.radius(mid, d) >= r:
            hi = mid
        else:
            lo = mid
    return hi


def look_schedule(first_n: int, max_n: int, growth: float) -> list[int]:
    """Geometric look sizes first_n, first_n*growth, ... (rounded up, strictly increasing), ending
    exactly at max_n."""
    looks = []
    n = float(first_n)
    while int(math.ceil(n)) < max_n:
        v = int(math.ceil(n))
        if not looks or v > looks[-1]:
            looks.append(v)
        n *= growth
    looks.append(int(max_n))
    return looks


def look_levels(num_looks: int, alpha: float, final_share: float, spending: str = "uniform",
                power: float = 1.1) -> list[float]:
    """Per-look levels a_k summing to alpha: ``final_share * alpha`` at the last look, the rest spread
    over the earlier ones, equally (``spending="uniform"``) or in proportion to 1 / k^power
    (``spending="power"``: more of alpha at the early looks, where most inputs are decided); all of
    alpha at the only look when there is one."""
    if num_looks == 1:
        return [alpha]
    if spending not in SPENDINGS:
        raise ValueError(f"spending must be one of {SPENDINGS}, got {spending!r}")
    if spending == "uniform":
        w = [1.0] * (num_looks - 1)
    else:
        w = [1.0 / (k ** power) for k in range(1, num_looks)]
    total = sum(w)
    early = [(1.0 - final_share) * alpha * v / total for v in w]
    return early + [final_share * alpha]


_PHI_1 = 0.8413447460685429  # Phi(1): the unit of the adaptive mode's price


def _min_certifying_count(noise, r: float, n: int, level: float, d: int) -> int:
    """Smallest count k in [0, n] such that CP_lower(k, n, level) certifies radius r (n + 1 if none)."""

    def ok(k):
        if k == 0:
            return False
        p = clopper_pearson_lower(k, n, level)
        return p > 0.5 and noise.radius(p, d) >= r

    if not ok(n):
        return n + 1
    lo, hi = 0, n  # ok(hi), not ok(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _predicted_radius(noise, p_hat: float, n: int, alpha: float, d: int) -> float:
    k = int(round(p_hat * n))
    if k <= 0:
        return 0.0
    p = clopper_pearson_lower(k, n, alpha)
    return float(noise.radius(p, d)) if p > 0.5 else 0.0


# ---------------------------------------------------------------------------- plan and per-input rules
class SequentialPlan:
    """Everything fixed before the estimation samples of an input: looks, levels, futility levels and
    the final-look counts that certify each target (they depend on the input size d only)."""

    def __init__(self, noise, d: int, alpha: float, max_n: int, mode: str, targets, first_n: int, growth: float,
                 final_share: float, spending: str, futility, tol: float, price: float | None = None):
        self.noise, self.d, self.alpha, self.max_n, self.mode, self.tol = noise, d, alpha, max_n, mode, tol
        self.price, self.price_setting = None, price
        if price is not None and mode == "adaptive":
            unit = float(noise.radius(_PHI_1, d))  # sigma for Gaussian noise
            self.price = price / (unit if unit > 0 else 1.0)  # samples per unit of radius in the noise's norm
        self.looks = look_schedule(first_n, max_n, growth)
        # (the 3-argument call for "uniform" keeps the soundness suite's look_levels control applicable)
        self.levels = (look_levels(len(self.looks), alpha, final_share) if spending == "uniform"
                       else look_levels(len(self.looks), alpha, final_share, spending))
        self.fut_levels = list(self.levels) if futility is None else [futility] * len(self.looks)
        self.targets = sorted({0.0, *targets}) if targets is not None else None
        self.user_targets = list(targets) if targets is not None else None
        self.need0 = _min_certifying_count(noise, 0.0, max_n, self.levels[-1], d)
        self.need = ({r: _min_certifying_count(noise, r, max_n, self.levels[-1], d) for r in self.targets}
                     if self.targets is not None else None)

    def radius(self, lower: float) -> float:
        return float(self.noise.radius(lower, self.d)) if lower > 0.5 else -math.inf

    def predicted_radii(self, rate: float, start: int) -> np.ndarray:
        """The radius each look from ``start`` on would certify if its count were rate * n_m (0 where its
        bound is not above 1/2): what the adaptive mode's price rule weighs against the samples."""
        looks = np.asarray(self.looks[start:], dtype=np.int64)
        levels = np.asarray(self.levels[start:])
        counts = np.rint(rate * looks).astype(np.int64)
        lower = np.zeros(len(looks))
        for level in np.unique(levels):  # one vectorized Clopper-Pearson call per distinct level
            sel = levels == level
            lower[sel] = clopper_pearson_lower(counts[sel], looks[sel], float(level))
        out = np.zeros(len(looks))
        above = lower > 0.5
        if isinstance(self.noise, _Gaussian):
            out[above] = self.noise.sigma * _ndtri(lower[above])
        else:
            out[above] = [self.noise.radius(v, self.d) for v in lower[above]]
        return out


class SequentialState:
    """The decisions of one input after each look (pure: counts in, decisions out; the benchmark's
    simulation drives it with binomial counts). ``look(k, n)`` takes the count of the selected class
    among the first n estimation samples at the next look and returns True when sampling stops."""

    def __init__(self, plan: SequentialPlan):
        self.plan = plan
        self.index = 0
        self.best_lower = 0.0
        self.taken: list[int] = []
        self.status = {r: None for r in plan.targets} if plan.targets is not None else None
        self.done = False

    def look(self, k: int, n: int) -> bool:
        plan = self.plan
        i = self.index
        if n != plan.looks[i]:
            raise ValueError(f"look {i} expects {plan.looks[i]} samples, got {n}")
        self.index += 1
        self.taken.append(n)
        self.best_lower = max(self.best_lower, self._bound(int(k), n, i))
        r_now = plan.radius(self.best_lower)
        upper = clopper_pearson_upper(int(k), n, plan.fut_levels[i])
        final = n == plan.looks[-1]
        if plan.mode == "radii":
            for r in plan.targets:
                if self.status[r] is not None:
                    continue
                if r_now >= r:
                    self.status[r] = True
                elif final or upper * plan.max_n < plan.need[r]:
                    self.status[r] = False
            self.done = final or all(s is not None for s in self.status.values())
        else:
            zero_decided = self.best_lower > 0.5 or upper * plan.max_n < plan.need0
            r_cur = max(r_now, 0.0)
            cap = _predicted_radius(plan.noise, upper, plan.max_n, plan.levels[-1], plan.d)
            self.done = final or (zero_decided and (cap - r_cur <= plan.tol or self._not_worth_it(k, n, r_cur)))
        return self.done

    def _bound(self, k: int, n: int, i: int) -> float:
        """L_i: the Clopper-Pearson lower bound of look i at its level a_i."""
        return clopper_pearson_lower(k, n, self.plan.levels[i])

    def _not_worth_it(self, k: int, n: int, r_cur: float) -> bool:
        """The price rule: no later look's predicted radius gain is worth its samples."""
        plan = self.plan
        if plan.price is None or self.index >= len(plan.looks):
            return False
        later = np.asarray(plan.looks[self.index:], dtype=np.int64)
        radii = plan.predicted_radii(k / n, self.index)
        return bool(np.all(plan.price * (radii - r_cur) <= later - n))


# ---------------------------------------------------------------------------- one input's sampling job
class _Job:
    """One input in the batched engine: its seed, selection, then the looks of its SequentialState."""

    def __init__(self, pos, x, seed, n0, plan_for, num_classes):
        self.pos, self.x, self.seed = pos, x, seed
        self.xflat = x.reshape(-1)
        self.plan_for = plan_for
        self.state = None
        self.c_a = None
        self.counts0 = np.zeros(num_classes, dtype=np.int64)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.n0 = n0
        self.stream, self.start, self.remaining = STREAM_SELECT, 0, n0
        self.drawn = 0
        self.seconds = 0.0
        self.done = False

    def receive(self, counts, b):
        if self.stream == STREAM_SELECT:
            self.counts0 += counts
        else:
            self.counts += counts
            self.drawn += b
        self.start += b
        self.remaining -= b
        if self.remaining > 0:
            return
        if self.stream == STREAM_SELECT:
            self.c_a = int(np.argmax(self.counts0))  # first maximum: ties go to the lower class index
            self.state = SequentialState(self.plan_for(self.x.numel()))
            self.stream, self.start = STREAM_ESTIMATE, 0
        elif self.state.look(int(self.counts[self.c_a]), self.drawn):
            self.done = True
            return
        self.remaining = self.state.plan.looks[self.state.index] - self.drawn

    def certificate(self) -> Certificate:
        st, plan = self.state, self.state.plan
        noise, d = plan.noise, plan.d
        if st.best_lower > 0.5:
            pred = self.c_a
            all_radii = noise.radii(st.best_lower, d)
            radius = all_radii[noise.norm]
        else:
            pred = ABSTAIN
            radius = 0 if noise.norm == "l0" else 0.0
            all_radii = {k: (0 if k == "l0" else 0.0) for k in ("l0", "l1", "l2", "linf")}
        certified = None
        if plan.user_targets is not None:
            certified = {float(r): bool(pred != ABSTAIN and radius >= r) for r in plan.user_targets}
        cert = Certificate(pred, radius, all_radii, self.counts.copy(), float(st.best_lower), int(self.n0 + self.drawn),
                           certified=certified, seed=self.seed)
        cert.extra.update(mode=plan.mode, looks=list(st.taken), levels=plan.levels[:len(st.taken)],
                          schedule=list(plan.looks), n_estimation=int(self.drawn), seconds=self.seconds)
        if plan.mode == "radii":
            cert.extra["decided"] = {float(r): st.status[r] for r in plan.targets}
        else:
            cert.extra["tol"] = plan.tol
            cert.extra["price"] = plan.price_setting
        return cert


def _sample_forward_count(smooth, segs, buf, used, shape):
    """segs: (job, b, row offset); fills rows [off, off+b) of buf with samples start..start+b-1 of the job's
    stream, runs one forward over buf[:used] and returns the per-segment counts (numpy int64 (C,) each)."""
    ntype, scale, keep, K = smooth.noise.kernel_params()
    C = smooth.num_classes
    if smooth.device.type == "cpu":
        bv = buf.numpy()
        for job, b, off in segs:
            _native.sample_cpu(job.xflat.numpy(), bv[off:off + b], job.seed, job.stream, job.start, ntype, scale,
                               keep, K)
        lg = smooth._forward(buf[:used].view(used, *shape)).detach()
        if lg.dtype not in (torch.float32, torch.float64):
            lg = lg.float()
        lg = lg.contiguous().numpy()
        out, nan = [], 0
        for job, b, off in segs:
            c = np.zeros(C, dtype=np.int64)
            nan += _native.count_cpu(lg[off:off + b], c)
            out.append(c)
    else:
        for job, b, off in segs:
            _native.sample_cuda(job.xflat, buf[off:off + b], job.seed, job.stream, job.start, ntype, scale, keep, K)
        lg = smooth._forward(buf[:used].view(used, *shape)).detach()
        if lg.dtype not in _native.cuda_logit_dtypes():
            lg = lg.float()
        lg = lg.contiguous()
        counts = torch.zeros((len(segs), C), dtype=torch.int64, device=smooth.device)
        nan_t = torch.zeros(1, dtype=torch.int64, device=smooth.device)
        for s, (job, b, off) in enumerate(segs):
            _native.count_cuda(lg[off:off + b], counts[s], nan_t)
        out = list(counts.cpu().numpy())
        nan = int(nan_t.item())
    if nan:
        raise ValueError(f"model: produced NaN logits on {nan} of {used} noisy samples")
    return out


# ---------------------------------------------------------------------------- entry points
def _options(n0, alpha, batch_size, radii, max_n, mode, first_n, growth, final_share, tol, spending, futility,
             max_active, price=DEFAULT_PRICE):
    n0 = check_int("n0", n0, 1)
    alpha = check_alpha(alpha)
    batch_size = check_int("batch_size", batch_size, 1)
    max_n = check_int("max_n", max_n, 1)
    first_n = min(128, max_n) if first_n is None else check_int("first_n", first_n, 1)
    if first_n > max_n:
        raise ValueError(f"first_n ({first_n}) must be <= max_n ({max_n})")
    growth = check_float("growth", growth, 1.0, math.inf)
    final_share = check_float("final_share", final_share, 0.0, 1.0)
    tol = check_float("tol", tol, 0.0, math.inf, lo_open=False)
    if price is not None:
        price = check_float("price", price, 0.0, math.inf)
    if spending not in SPENDINGS:
        raise ValueError(f"spending must be one of {SPENDINGS}, got {spending!r}")
    if futility is not None:
        futility = check_float("futility", futility, 0.0, 0.5, hi_open=False)
    if max_active is not None:
        max_active = check_int("max_active", max_active, 1)
    if mode is None:
        mode = "radii" if radii is not None else "adaptive"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    targets = sorted(set(check_radii(radii))) if radii is not None else None
    if mode == "radii" and targets is None:
        raise ValueError("radii: sequential certification with mode='radii' needs target radii")
    return dict(n0=n0, alpha=alpha, batch_size=batch_size, max_n=max_n, first_n=first_n, growth=growth,
                final_share=final_share, tol=tol, spending=spending, futility=futility, max_active=max_active, price=price,
                mode=mode, targets=targets)


def iter_certify_sequential(smooth, xs, seeds, n0: int, alpha: float, batch_size: int, radii=None,
                            max_n: int = 100_000, mode: str | None = None, first_n: int | None = None,
                            growth: float = DEFAULT_GROWTH, final_share: float = DEFAULT_FINAL_SHARE,
                            tol: float = DEFAULT_TOL, spending: str = DEFAULT_SPENDING, futility=DEFAULT_FUTILITY,
                            max_active: int | None = None, price: float | None = DEFAULT_PRICE):
    """Certify many inputs sequentially (or adaptively), sharing forward batches; yields
    ``(position, Certificate)`` as each input finishes (not in input order).

    xs: an iterable of inputs (same shape; read lazily), seeds: an iterable of per-input seeds (same
    length; None entries draw fresh ones). At most ``max_active`` inputs are in flight (default
    max(4, 4 * batch_size // first_n)); each forward batch holds up to ``batch_size`` samples, the
    pending samples of the inputs in flight in order. Each certificate is identical to
    ``certify_sequential(smooth, x, ..., seed=seed)`` of that input alone (module docstring);
    ``extra["seconds"]`` is the input's share of the batches' wall time. Other arguments: see
    :func:`certify_sequential`.
    """
    o = _options(n0, alpha, batch_size, radii, max_n, mode, first_n, growth, final_share, tol, spending, futility,
                 max_active, price)
    if smooth._lattice is not None:
        raise ValueError("sequential: sound=True supports the plain certify (and predict) only")
    plans = {}

    def plan_for(d):
        if d not in plans:
            plans[d] = SequentialPlan(smooth.noise, d, o["alpha"], o["max_n"], o["mode"], o["targets"], o["first_n"],
                                      o["growth"], o["final_share"], o["spending"], o["futility"], o["tol"],
                                      o["price"])
        return plans[d]

    limit = o["max_active"] or max(4, 4 * o["batch_size"] // o["first_n"])
    bs = o["batch_size"]
    pending = enumerate(zip(xs, seeds))
    active: list[_Job] = []
    exhausted = False
    buf = None
    shape = None
    with torch.inference_mode():
        while True:
            while not exhausted and len(active) < limit:
                try:
                    pos, (x, seed) = next(pending)
                except StopIteration:
                    exhausted = True
                    break
                xt = smooth._prepare_x(x)
                if shape is None:
                    shape = tuple(xt.shape)
                elif tuple(xt.shape) != shape:
                    raise ValueError(f"xs: every input must have shape {shape}, input {pos} has {tuple(xt.shape)}")
                active.append(_Job(pos, xt, resolve_seed(seed), o["n0"], plan_for, smooth.num_classes))
            if not active:
                return
            if buf is None:
                buf = torch.empty((bs, int(np.prod(shape))), dtype=torch.float32, device=smooth.device)
            segs, used = [], 0
            for job in active:
                if used == bs:
                    break
                b = min(job.remaining, bs - used)
                segs.append((job, b, used))
                used += b
            t0 = time.perf_counter()
            counts = _sample_forward_count(smooth, segs, buf, used, shape)
            dt = time.perf_counter() - t0
            for (job, b, _), c in zip(segs, counts):
                job.seconds += dt * b / used
                job.receive(c, b)
            still = []
            for job in active:
                if job.done:
                    yield job.pos, job.certificate()
                else:
                    still.append(job)
            active = still


def certify_many_sequential(smooth, xs, seeds, n0: int, alpha: float, batch_size: int, **kwargs) -> list:
    """Certificates of every input of ``xs`` (in input order), computed by :func:`iter_certify_sequential`
    with shared forward batches; each is identical to certifying that input alone."""
    xs = list(xs)
    seeds = list(seeds)
    if len(xs) != len(seeds):
        raise ValueError(f"seeds: need one seed per input ({len(xs)} inputs), got {len(seeds)}")
    out = [None] * len(xs)
    for pos, cert in iter_certify_sequential(smooth, xs, seeds, n0, alpha, batch_size, **kwargs):
        out[pos] = cert
    return out


def certify_sequential(smooth, x, n0: int, alpha: float, batch_size: int, seed=None, radii=None,
                       max_n: int = 100_000, mode: str | None = None, first_n: int | None = None,
                       growth: float = DEFAULT_GROWTH, final_share: float = DEFAULT_FINAL_SHARE,
                       tol: float = DEFAULT_TOL, spending: str = DEFAULT_SPENDING, futility=DEFAULT_FUTILITY,
                       price: float | None = DEFAULT_PRICE):
    """Sequential (``mode="radii"``) or input-adaptive (``mode="adaptive"``) certification of x.

    smooth: a fastcert.Smooth; x: one input (*input_shape). n0: selection samples (stream 0).
    alpha: overall failure probability. max_n: most estimation samples (stream 1, fixed n's).
    radii: target radii (noise norm); required for mode "radii" (r = 0 is always decided too).
    mode: None -> "radii" when radii are given, else "adaptive". first_n (default min(128, max_n)),
    growth: the geometric grid of looks. final_share: share of alpha spent at the last look;
    spending: "uniform" | "power", how the rest is spread over the earlier looks. futility: level of
    the upper bound that drops a target / stops the adaptive mode (default 0.05; None: each look's
    level; it never affects soundness, only agreement with fixed n). Mode "adaptive" stops when either
    rule holds (module docstring; neither affects soundness): tol, the radius that max_n samples could
    still add at most (noise's norm; default 0.01), and price, the estimation samples one unit of
    radius is worth (unit: the radius certified at pA = Phi(1), sigma for Gaussian noise; default
    300,000; None: the tol rule only).

    Returns a fastcert.Certificate: ``certified`` {float(r): bool} (when radii given), ``n_used``
    (n0 + estimation samples drawn), ``radius`` the largest radius the valid bound certifies,
    ``p_lower`` that bound, ``counts`` the estimation counts, ``extra`` details (mode, looks, levels).
    See the module docstring for the validity argument.
    """
    seed = resolve_seed(seed)
    (_, cert), = iter_certify_sequential(smooth, [x], [seed], n0, alpha, batch_size, radii=radii, max_n=max_n,
                                         mode=mode, first_n=first_n, growth=growth, final_share=final_share, tol=tol,
                                         spending=spending, futility=futility, max_active=1,
                                         price=price)
    return cert
