"""Sound IBP in floating point: ``ibp_bounds(..., sound=True)``.

Guarantee. For every point x' of the real input set (the linf ball of radius eps around x, clipped to
[x_min, x_max]) the returned [lower, upper] contains

(a) the exact real-arithmetic output of the network at x', and
(b) the output the network itself computes in x's dtype (float32: u = 2^-24; float64: u = 2^-53) at any
    floating-point x' of that set, whatever the summation order of each dot product (any association,
    blocking, with or without FMA, any number of threads), including any mix of (a) and (b) layer by
    layer, and C times either of them when a specification C is given.

Assumptions of (b): every output of a Linear / Conv2d is computed as a sum of the products w_i x_i and
the bias with ordinary rounding to nearest (GEMM, direct or implicit-GEMM convolution: what PyTorch does
on the CPU; not an FFT or Winograd convolution, not TF32 or lower precision: set
``torch.backends.cudnn.allow_tf32 = False`` for the network on a GPU); BatchNorm / Normalize / average
pools / residual adds use at most a few dozen rounded operations per element (any formula, including
an rsqrt approximate to a few ulps); results may underflow gradually or flush to zero, but subnormal
*inputs* are not treated as zero (PyTorch's default; ``torch.set_flush_denormal(True)`` is outside the
guarantee). BatchNorm with batch statistics: the network frozen to the clean-batch statistics (the
semantics of ``ibp_bounds``). The bounds carry no gradient.

Why error terms and not float64 accumulation throughout. Accumulating in float64 and rounding outward
bounds the exact outputs (a), but not (b): the network's own float32 rounding differs from the exact
value by up to gamma_n |W| |x| per layer, and that error has to be added anyway. So the propagation stays
in x's dtype, at the plain path's speed, and adds at each layer one rigorous bound that covers both the
rounding of its own computation and the network's. The one exception: for a float32 Linear of
fan-in n >= ``F64_CENTER_FAN_IN`` (CNN-7's 32768-input Linear, where gamma_n ~ 2e-3) the torch path
computes the center in float64 and rounds it once, so that our own share of the error drops from
gamma_{n+1} (float32) to gamma_{n+1} (float64) + 65 u and only the network's share stays.

The error bound (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., Thm 3.1 / eq. 3.5):
a dot product of length n computed in floating point in any order satisfies
|fl(w.x) - w.x| <= gamma_n |w|.|x|, gamma_n = n u / (1 - n u) (n u < 1), plus, for underflow, at most
one smallest normal number (``tiny``) per operation.

Representation. An interval is a float center c and a radius given by scalars (alpha, beta, tau) and a
float tensor r: every reachable value z (exact or computed by the network) satisfies
|z - c| <= alpha r + beta |c| + tau elementwise. Keeping (alpha, beta, tau) pending lets the next layer
absorb them into its own constants instead of spending memory passes.

Affine layer y = s (W z + b) + t (a BatchNorm / Normalize s, t folded in, or s = 1, t = 0), fan-in n,
rho = alpha r + beta |c| + tau, m = |c| + rho >= |z|. The network's output differs from the exact
s (W z + b) + t by at most zeta (|s||W| m + T) with zeta = gamma_{n+1} + 64 u (the bias is the (n+1)-th
term; 64 u covers the rounding of the folded weights and of BatchNorm's own operations) and
T = |s| (|b| + |mu|) + |beta_bn| + |t| per channel. Our center c' differs from the exact s (W c + b) + t
by at most zeta_o (|s||W| |c| + T):
- c' = fl(W_f c + b_f) in x's dtype: zeta_o = zeta (the same argument);
- c' = fl32(fl64(W_f c + b_f)) (a float32 Linear of fan-in n >= F64_CENTER_FAN_IN): the same argument
  with the summation error gamma_{n+1} (|W_f||c| + |b_f|) replaced by g64 (|W_f||c| + |b_f|),
  g64 = gamma_{n+1} for u64 = 2^-53 (W_f, b_f, c are float32, exact in float64; a product of two
  float32 numbers is exact in float64 and cannot underflow there, nor can the sums), plus the final
  rounding to float32, at most u |fl64(.)| <= u (1 + g64) (|W_f||c| + |b_f|) and half a subnormal
  spacing (inside the tiny terms of bt). As in the float32 case |W_f||c| + |b_f| <= (1 + 16 u)
  (|s||W||c| + T) and 64 u covers the fold and BatchNorm's own operations, so
  zeta_o = (g64 + u) (1 + g64) (1 + 16 u) + 64 u.
Hence (z - c' = [exact(z) - exact(c)] + [exact(c) - c'] plus the network's error)

    R' = |s||W| rho + zeta |s||W| (|c| + rho) + zeta_o |s||W| |c| + (zeta + zeta_o) T
       = alpha (1 + zeta) |s||W| (r + b' |c|) + (1 + zeta) tau |s||W| 1 + (zeta + zeta_o) T,
    b' = ((1 + zeta) beta + zeta + zeta_o) / (alpha (1 + zeta)),

one extra elementwise pass v = r + b' |c| (none of |c| after a ReLU, where c >= 0), then the radius
matmul of the plain path with kappa |W_f| (memoized, rounded up with nextafter) and a per-channel bias
bt: kappa = alpha (1 + zeta) (1 + 16 u) / ((1 - gamma_{n+1}) (1 - u)^8) covers |s| <= (1 + 16 u) |W_f|/|W|,
the dot product's own rounding (the bias inside it) and up to eight more roundings of non-negative
quantities; bt covers (zeta + zeta_o) T, the tau and underflow terms (row sums of |W_f| times tiny multiples),
evaluated in float64 and rounded up. Every constant is computed in float64 with a 2^-20 relative margin
(float64's own error is below 2^-50) and rounded up to x's dtype.

ReLU (exact in the network). hi = fl(c + R), lo = fl(c - R) with R materialized; relu; c' = lerp(lo, hi,
1/2), r' = fl(hi - c'). Rounding preserves signs, so a clipped end point is exact; the others move by at
most u |hi| + tiny. Hence every reachable value lies within (1 + 16 u) r' + 16 u c' + 64 tiny of c'
(c' >= 0): the pending (alpha, beta, tau) after a ReLU.

Input. eps is rounded up (one ulp), x -/+ eps rounded outward with nextafter, x_min / x_max rounded
outward to x's dtype, then c = (lo + hi) / 2 and R = nextafter(max(hi - c, c - lo), +inf).
Output. lower = nextafter(c - R, -inf), upper = nextafter(c + R, +inf) with R materialized (every
rounding of the materialization covered by a (1 + 8 u) factor and tiny multiples); NaN -> -inf / +inf.
Pools: a linear map with weights 1/k (k = window size), the same bound with T = 0. Residual adds: the
two radii add, plus u-relative terms for both roundings of the sum.

On a GPU the sound path runs with cuDNN and TF32 disabled (our own convolutions must be sums of products
too). The Triton path computes the same quantities: v = kappa (r + b' |c|) in torch before each layer,
the kernels' |W| accumulation, and bt added in their epilogue (``err`` argument); the input box, the
final outward rounding and the specification in torch (this module).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from fastcert.ibp.graph import Op, bn_affine, bn_uses_batch_stats, channel_view
from fastcert.ibp.torch_path import memo
from fastcert.models.zoo import Normalize

_MARGIN = 1.0 + 2.0 ** -20  # relative margin of every float64-evaluated constant
F64_CENTER_FAN_IN = 4096  # float32 Linear layers with at least this fan-in get a float64 center (torch path)


def unit_roundoff(dtype: torch.dtype) -> float:
    return 2.0 ** -24 if dtype == torch.float32 else 2.0 ** -53


def _tiny(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).tiny)


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u), with a relative margin; ValueError when n u >= 1/100."""
    nu = n * u
    if nu >= 0.01:
        raise ValueError(f"sound=True: a dot product of length {n} is too long for the error bound in this dtype")
    return nu / (1.0 - nu) * _MARGIN


def up(v: float, dtype: torch.dtype) -> float:
    """The smallest number of ``dtype`` >= v (v a Python float, >= 0 here), as a Python float."""
    t = torch.tensor(v, dtype=torch.float64).to(dtype)
    if float(t) < v:
        t = torch.nextafter(t, torch.tensor(math.inf, dtype=dtype))
    return float(t)


def down(v: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` <= v."""
    if math.isinf(v):
        return v
    t = torch.tensor(v, dtype=torch.float64).to(dtype)
    if float(t) > v:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    return float(t)


def up_tensor(t64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Elementwise round-up of a float64 tensor to ``dtype``."""
    t = t64.to(dtype)
    low = t.to(torch.float64) < t64
    return torch.where(low, torch.nextafter(t, torch.full_like(t, math.inf)), t)


@contextlib.contextmanager
def exact_float_mode(device: torch.device):
    """Sums of products in IEEE arithmetic for every matmul/convolution inside: no TF32, no cuDNN
    (whose heuristics may pick FFT / Winograd algorithms) on CUDA; restored afterwards."""
    prec = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        if device.type == "cuda":
            with torch.backends.cudnn.flags(enabled=False, benchmark=False, deterministic=False, allow_tf32=False):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = cuda_tf32
        torch.set_float32_matmul_precision(prec)


class State:
    """Center c and radius data: every reachable value z satisfies |z - c| <= a r + b |c| + t."""

    __slots__ = ("a", "b", "c", "nonneg", "r", "t")

    def __init__(self, c, r, a=1.0, b=0.0, t=0.0, nonneg=False):
        self.c, self.r, self.a, self.b, self.t, self.nonneg = c, r, a, b, t, nonneg


def materialize(st: State) -> torch.Tensor:
    """A float tensor R >= a r + b |c| + t elementwise (r itself when nothing is pending)."""
    if st.a == 1.0 and st.b == 0.0 and st.t == 0.0:
        return st.r
    dt = st.r.dtype
    u, tiny = unit_roundoff(dt), _tiny(dt)
    a, b = up(st.a * (1 + 8 * u) * _MARGIN, dt), up(st.b * (1 + 8 * u) * _MARGIN, dt)
    t = up(2 * st.t + 8 * tiny, dt)
    R = st.r * a
    if b:
        R.add_(st.c if st.nonneg else st.c.abs(), alpha=b)
    return R.add_(t)


# ----------------------------------------------------------------------------- the input box
def input_box(x: torch.Tensor, e: torch.Tensor, x_min: float, x_max: float) -> State:
    """The clipped linf box around x as (c, R), R rigorous (see the module docstring)."""
    dt = x.dtype
    inf = torch.tensor(math.inf, dtype=dt, device=x.device)
    e = torch.nextafter(e, inf).view(-1, *([1] * (x.dim() - 1)))
    lo = torch.nextafter(x - e, -inf)
    hi = torch.nextafter(x + e, inf)
    if not math.isinf(x_min):
        lo.clamp_(min=down(x_min, dt))
    if not math.isinf(x_max):
        hi.clamp_(max=up(x_max, dt))
    c = torch.lerp(lo, hi, 0.5)
    R = torch.nextafter(torch.maximum(hi - c, c - lo), inf)
    return State(c, R)


# ----------------------------------------------------------------------------- per-layer constants
def _affine_parts(aff: Op | None, stats: dict):
    """(s, t, T0) of a per-channel affine op: y = s z + t, T0 = |s| |mu| + |beta| + |t| (float64); or
    (None, None, None) without one."""
    if aff is None:
        return None, None, None
    s, t = bn_affine(aff, stats)
    s, t = s.detach(), t.detach()
    m = aff.module
    if isinstance(m, Normalize):
        mu, beta = m.mean, None
    elif bn_uses_batch_stats(m):
        mu, beta = stats[id(aff)][0].detach(), m.bias
    else:
        mu, beta = m.running_mean, m.bias
    T0 = s.double().abs() * mu.detach().double().abs() + t.double().abs()
    if beta is not None:
        T0 = T0 + beta.detach().double().abs()
    return s, t, T0


def own_zeta(n: int, dtype: torch.dtype, center64: bool) -> float:
    """zeta_o: our center's error relative to |s||W||c| + T (module docstring)."""
    u = unit_roundoff(dtype)
    if not center64:
        return (gamma(n + 1, u) + 64 * u) * _MARGIN
    g64 = gamma(n + 1, 2.0 ** -53)
    return ((g64 + u) * (1 + g64) * (1 + 16 * u) + 64 * u) * _MARGIN


def use_center64(kind: str, n: int, dtype: torch.dtype) -> bool:
    """Float64 center for float32 Linear layers of large fan-in (cheap there; a float64 convolution is
    not on the CPU)."""
    return kind == "linear" and dtype == torch.float32 and n >= F64_CENTER_FAN_IN


def layer_constants(n: int, st_a: float, st_b: float, st_t: float, dtype: torch.dtype, center64: bool = False):
    """(zeta + zeta_o, b', kappa, abs_in) of an affine layer of fan-in n after a state with pending
    (a, b, t): v = r + b' |c|, R' = kappa |W_f| v + bt with bt = (zeta + zeta_o) T (1 + ...) +
    rowsum(|W_f|) abs_in + ...; zeta_o = zeta unless ``center64`` (float64 center, module docstring)."""
    u, tiny = unit_roundoff(dtype), _tiny(dtype)
    g = gamma(n + 1, u)
    zeta = (g + 64 * u) * _MARGIN
    zsum = (zeta + own_zeta(n, dtype, center64)) * _MARGIN
    a = st_a
    bprime = ((1 + zeta) * st_b + zsum) / (a * (1 + zeta)) * _MARGIN
    slack = (1 + 16 * u) / ((1 - g) * (1 - u) ** 8) * _MARGIN
    kappa = a * (1 + zeta) * slack
    # per unit of row sum: the pending tau and the underflow of the two roundings of v (a tiny each)
    abs_in = ((1 + zeta) * st_t + kappa * 4 * tiny) * slack
    return zsum, up(bprime, dtype), up(kappa, dtype), abs_in


def bias_term(zsum: float, T: torch.Tensor | None, rowsum: torch.Tensor, abs_in: float, n: int,
              dtype: torch.dtype) -> torch.Tensor:
    """bt (per output channel, rounded up to dtype) from float64 ingredients; zsum = zeta + zeta_o."""
    u, tiny = unit_roundoff(dtype), _tiny(dtype)
    g = gamma(n + 1, u)
    bt = rowsum * abs_in + (4 * n + 64) * tiny
    if T is not None:
        bt = bt + zsum * T
    return up_tensor(bt * ((1 + 16 * u) / ((1 - g) * (1 - u) ** 8) * _MARGIN), dtype)


def fan_in(op: Op) -> int:
    w = op.module.weight
    return int(w[0].numel())


# ----------------------------------------------------------------------------- torch path ops
def _folded_sound(op: Op, aff: Op | None, stats: dict):
    """Memoized (W_f, b_f, |W_f|, T (float64, per output), rowsum |W_f| (float64), cache of kappa |W_f|)."""
    m = op.module
    am = aff.module if aff is not None else None

    def compute():
        w = m.weight.detach()
        cout = w.shape[0]
        b = m.bias.detach() if m.bias is not None else torch.zeros(cout, dtype=w.dtype, device=w.device)
        s, t, T0 = _affine_parts(aff, stats)
        if s is not None:
            s, t, T0 = s.expand(cout), t.expand(cout), T0.expand(cout)
            view = (-1,) + (1,) * (w.dim() - 1)
            T = s.double().abs() * b.double().abs() + T0
            w, b = w * s.view(view), b * s + t
        else:
            T = b.double().abs()
        wa = w.abs()
        rowsum = wa.double().flatten(1).sum(1)
        return {"w": w.contiguous(), "b": b.contiguous(), "wa": wa, "T": T, "rowsum": rowsum, "scaled": {}}

    sources = (m.weight, m.bias)
    if am is not None:
        sources += tuple(getattr(am, a, None) for a in ("weight", "bias", "running_mean", "running_var", "mean", "std"))
        sources += (torch.tensor(float(getattr(am, "eps", 0.0))),)
    return memo(m, ("sound", id(am)), sources, compute)


def _scaled_abs(entry: dict, kappa: float) -> torch.Tensor:
    """kappa |W_f| rounded up elementwise (cached per kappa in the memo entry)."""
    sc = entry["scaled"]
    if kappa not in sc:
        wa = entry["wa"]
        sc[kappa] = torch.nextafter(wa * kappa, torch.full_like(wa, math.inf)).where(wa > 0, wa).contiguous()
    return sc[kappa]


def pre_affine(st: State, bprime: float) -> torch.Tensor:
    """v = r + b' |c| (one pass; c >= 0 after a ReLU)."""
    return torch.add(st.r, st.c if st.nonneg else st.c.abs(), alpha=bprime)


def affine(op: Op, aff: Op | None, st: State, stats: dict) -> State:
    """A Linear / Conv2d (with the following per-channel affine ``aff`` folded in) on a state."""
    m = op.module
    dt = st.c.dtype
    n = fan_in(op)
    c64 = use_center64(op.kind, n, dt)
    zeta, bprime, kappa, abs_in = layer_constants(n, st.a, st.b, st.t, dt, center64=c64)
    entry = _folded_sound(op, aff, stats)
    key = ("bt", kappa, abs_in, zeta)
    if key not in entry["scaled"]:
        entry["scaled"][key] = bias_term(zeta, entry["T"], entry["rowsum"], abs_in, n, dt)
    bt = entry["scaled"][key]
    wk = _scaled_abs(entry, kappa)
    v = pre_affine(st, bprime)
    if c64:
        if "w64" not in entry:
            entry["w64"], entry["b64"] = entry["w"].double(), entry["b"].double()
        w, b, cin = entry["w64"], entry["b64"], st.c.double()
    else:
        w, b, cin = entry["w"], entry["b"], st.c
    if op.kind == "linear":
        c, R = F.linear(cin, w, b), F.linear(v, wk, bt)
    else:
        c = F.conv2d(cin, w, b, m.stride, m.padding, m.dilation, m.groups)
        R = F.conv2d(v, wk, bt, m.stride, m.padding, m.dilation, m.groups)
    return State(c.to(dt) if c64 else c, R)


def chaffine(op: Op, st: State, stats: dict) -> State:
    """A standalone per-channel affine (BatchNorm, Normalize): an affine map of fan-in 1 (diagonal)."""
    dt = st.c.dtype
    s, t, T0 = _affine_parts(op, stats)
    C = st.c.shape[1] if st.c.dim() >= 2 else 1
    s, t, T0 = s.to(dt).expand(C), t.to(dt).expand(C), T0.expand(C)
    zeta, bprime, kappa, abs_in = layer_constants(1, st.a, st.b, st.t, dt)
    sa = s.abs()
    bt = bias_term(zeta, T0, sa.double(), abs_in, 1, dt)
    sk = torch.nextafter(sa * kappa, torch.full_like(sa, math.inf)).where(sa > 0, sa)
    v = pre_affine(st, bprime)
    nd = st.c.dim()
    c = torch.addcmul(channel_view(t, nd), st.c, channel_view(s, nd))
    R = torch.addcmul(channel_view(bt, nd), v, channel_view(sk, nd))
    return State(c, R)


def relu_constants(dtype: torch.dtype):
    """Pending (a, b, t) after an interval ReLU computed as in :func:`relu` or the Triton epilogue."""
    u, tiny = unit_roundoff(dtype), _tiny(dtype)
    return 1 + 16 * u, 16 * u, 64 * tiny


def relu(st: State) -> State:
    R = materialize(st)
    hi = torch.add(st.c, R).clamp_(min=0)
    lo = torch.sub(st.c, R).clamp_(min=0)
    c = torch.lerp(lo, hi, 0.5)
    r = hi.sub_(c)
    a, b, t = relu_constants(c.dtype)
    return State(c, r, a, b, t, nonneg=True)


def pool_size(op: Op, in_shape) -> int:
    m = op.module
    H, W = in_shape[-2], in_shape[-1]
    if isinstance(m, torch.nn.AvgPool2d):
        k = m.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return int(min(kh * kw, H * W) if m.divisor_override is None else H * W)
    osz = m.output_size
    oh, ow = (osz, osz) if isinstance(osz, int) else osz
    oh, ow = oh or H, ow or W
    return int(min(H * W, (math.ceil(H / oh) + 1) * (math.ceil(W / ow) + 1)))


def pool(op: Op, st: State) -> State:
    """Average pools: non-negative weights summing to at most 1 per output (T = 0, row sums <= 1)."""
    dt = st.c.dtype
    m = op.module
    if isinstance(m, torch.nn.AvgPool2d) and m.divisor_override is not None:
        raise ValueError("sound=True: AvgPool2d with divisor_override is not supported")
    n = pool_size(op, st.c.shape)
    zeta, bprime, kappa, abs_in = layer_constants(n, st.a, st.b, st.t, dt)
    bt = float(bias_term(zeta, None, torch.ones(1, dtype=torch.float64), abs_in, n, dt))
    v = pre_affine(st, bprime).mul_(kappa)
    return State(m(st.c), m(v).add_(bt), nonneg=st.nonneg)


def residual_add(s1: State, s2: State) -> State:
    R1, R2 = materialize(s1), materialize(s2)
    dt = s1.c.dtype
    u, tiny = unit_roundoff(dt), _tiny(dt)
    return State(s1.c + s2.c, R1 + R2, (1 + u) / (1 - u) * _MARGIN, 2 * u / (1 - u) * _MARGIN, 8 * tiny)


def propagate_sound(ops: list[Op], st: State, stats: dict, spec=None, fold_last: bool = False) -> State:
    """Sound center/radius IBP through ``ops`` (inference only)."""
    n = len(ops)
    i = 0
    while i < n:
        op = ops[i]
        k = op.kind
        if k in ("linear", "conv"):
            if k == "linear" and fold_last and i == n - 1:
                return linear_spec(op, st, spec)
            aff = None
            if i + 1 < n and ops[i + 1].kind == "chaffine" and not bn_uses_batch_stats(ops[i + 1].module):
                aff = ops[i + 1]
            st = affine(op, aff, st, stats)
            i += 2 if aff is not None else 1
            continue
        if k == "chaffine":
            st = chaffine(op, st, stats)
        elif k == "relu":
            st = relu(st)
        elif k == "pool":
            st = pool(op, st)
        elif k == "flatten":
            st = State(op.module(st.c), op.module(st.r), st.a, st.b, st.t, st.nonneg)
        elif k == "residual":
            st = residual_add(propagate_sound(op.main, st, stats), propagate_sound(op.shortcut, st, stats))
        else:  # pragma: no cover - trace() only emits the kinds above
            raise AssertionError(k)
        i += 1
    return st


# ----------------------------------------------------------------------------- specification, output
def linear_spec(op: Op, st: State, C: torch.Tensor) -> State:
    """The last Linear with the specification C (B, m, K) folded in: bounds on C y for every reachable
    logit vector y (exact or the network's). With W'_f = fl(C W) (|W'_f - C W| <= gamma_K |C||W| +
    2 K tiny), c' = fl(W'_f c + fl(C b)) and |y - (W z + b)| <= gamma_{n+1} (|W| m + |b|):
    R' >= |W'_f| rho + zeta |C| (|W| (2 |c| + rho)) + 2 zeta |C||b| + 2 K tiny sum(rho),
    zeta = gamma_K + gamma_{n+1} (1 + gamma_K)."""
    m = op.module
    dt = st.c.dtype
    u, tiny = unit_roundoff(dt), _tiny(dt)
    W = m.weight.detach()
    K, n = W.shape
    gK, gn = gamma(K, u), gamma(n + 1, u)
    zeta = (gK + gn * (1 + gK)) * _MARGIN
    rho = materialize(st)
    Wp = torch.matmul(C, W)
    c = torch.einsum("bmi,bi->bm", Wp, st.c)
    if m.bias is not None:
        c = c + torch.matmul(C, m.bias.detach())
    P1 = torch.einsum("bmi,bi->bm", Wp.abs(), rho)
    v2 = torch.add(rho, st.c if st.nonneg else st.c.abs(), alpha=2.0)
    q = F.linear(v2, W.abs())
    Ca = C.abs()
    P2 = torch.einsum("bmk,bk->bm", Ca, q)
    slack = 1.0 / ((1 - gn) * (1 - gK) * (1 - u) ** 8) * _MARGIN
    k1, k2 = up(slack, dt), up(zeta * slack, dt)
    absum = (4 * K * rho.double().sum(1, keepdim=True) + 16 * (n + K + 8)
             * (1 + k2 * Ca.double().sum(2) * (2 + W.double().abs().sum(1).max())))
    bt = absum * tiny
    if m.bias is not None:
        bt = bt + 2 * zeta * torch.einsum("bmk,k->bm", Ca.double(), m.bias.detach().double().abs())
    bt = up_tensor(bt * slack, dt)
    R = P1.mul_(k1).add_(P2, alpha=k2).add_(bt)
    return State(c, R, (1 + 4 * u) * _MARGIN, 0.0, 4 * tiny)


def apply_spec(st: State, C: torch.Tensor) -> State:
    """C y for every reachable logit vector y in c +- rho: R' >= |C| (rho + gamma_K |c|)."""
    dt = st.c.dtype
    u, tiny = unit_roundoff(dt), _tiny(dt)
    K = C.shape[2]
    gK = gamma(K, u)
    rho = materialize(st)
    v = torch.add(rho, st.c.abs(), alpha=up(gK, dt))
    c = torch.einsum("bmo,bo->bm", C, st.c)
    P = torch.einsum("bmo,bo->bm", C.abs(), v)
    slack = 1.0 / ((1 - gK) * (1 - u) ** 8) * _MARGIN
    t = (4 * K + 16) * tiny * (1 + float(C.abs().sum(2).max()) * up(gK, dt)) * slack + 8 * tiny
    return State(c, P, slack, 0.0, t)


def finish(st: State):
    """(lower, upper) = (nextafter(c - R, -inf), nextafter(c + R, +inf)); NaN -> -inf / +inf."""
    R = materialize(st)
    inf = torch.tensor(math.inf, dtype=R.dtype, device=R.device)
    lo = torch.nextafter(st.c - R, -inf)
    hi = torch.nextafter(st.c + R, inf)
    return torch.nan_to_num(lo, nan=-math.inf), torch.nan_to_num(hi, nan=math.inf)


def sound_ibp_torch(ops: list[Op], x: torch.Tensor, e: torch.Tensor, x_min: float, x_max: float, stats: dict,
                    C: torch.Tensor | None = None):
    """``ibp_bounds(..., sound=True)`` on the torch path -> (lower, upper)."""
    with torch.no_grad(), exact_float_mode(x.device):
        st = input_box(x.detach(), e.detach(), x_min, x_max)
        fold = C is not None and ops[-1].kind == "linear"
        st = propagate_sound(ops, st, stats, spec=C, fold_last=fold)
        if C is not None and not fold:
            if st.c.dim() != 2 or C.shape[2] != st.c.shape[1]:
                raise ValueError(f"C must have shape (B, m, {st.c.shape[-1]}) to match the model's outputs, "
                                 f"got {tuple(C.shape)}")
            st = apply_spec(st, C)
        return finish(st)


# ----------------------------------------------------------------------------- Triton path
def _triton_affine(runner, op: Op, affs: list, relu_next: bool, st: State, stats: dict) -> State:
    """Linear / Conv2d (+ following eval per-channel affines, + ReLU) with the Triton kernels: v = kappa
    (r + b' |c|) in torch, the kernels' |W| accumulation times |scale| plus ``err`` = bt, their ReLU."""
    from fastcert.ibp.triton.path import _cat_weight

    m = op.module
    dt = st.c.dtype
    n = fan_in(op)
    cout = m.weight.shape[0]
    zeta, bprime, kappa, abs_in = layer_constants(n, st.a, st.b, st.t, dt)
    w = m.weight.detach()
    b = m.bias.detach().float() if m.bias is not None else torch.zeros(cout, dtype=dt, device=w.device)
    scale, shift = torch.ones(cout, dtype=dt, device=w.device), b
    T = b.double().abs()
    for aff in affs:
        s, t, T0 = _affine_parts(aff, stats)
        s, t, T0 = s.float().expand(cout), t.float().expand(cout), T0.expand(cout)
        T = s.double().abs() * T + T0
        scale, shift = scale * s, shift * s + t
    if len(affs) > 1:
        raise ValueError("sound=True on the Triton path: at most one BatchNorm / Normalize after a layer")
    rowsum = w.double().abs().flatten(1).sum(1) * scale.double().abs()
    bt = bias_term(zeta, T, rowsum, abs_in, n, dt)
    v = pre_affine(st, bprime).mul_(kappa)
    if op.kind == "linear":
        y = runner.linear(torch.cat([st.c, v], 1).contiguous(), m, scale, shift, relu_next, err=bt)
    else:
        y = torch.cat([st.c, v], 1)
        y = F.conv2d(y, _cat_weight(m), None, m.stride, m.padding, m.dilation, 2 * m.groups).contiguous()
        y = runner.epilogue(y, scale.contiguous(), shift.contiguous(), relu=relu_next, err=bt)
    D = y.shape[1] // 2
    c, r = y[:, :D], y[:, D:]
    if relu_next:
        a, bb, t = relu_constants(dt)
        return State(c, r, a, bb, t, nonneg=True)
    return State(c, r)


def sound_ibp_triton(ops: list[Op], x: torch.Tensor, e: torch.Tensor, x_min: float, x_max: float, stats: dict,
                     C: torch.Tensor | None, interpret: bool):
    """``ibp_bounds(..., sound=True, backend="triton")`` -> (lower, upper): Linear / Conv2d with their
    BatchNorm and ReLU in the Triton kernels; the input box, standalone per-channel affines, pools,
    residual blocks, the specification and the outward rounding in torch (this module)."""
    from fastcert.ibp.triton.kernels import build
    from fastcert.ibp.triton.path import _Runner

    runner = _Runner(build(interpret), stats)
    with torch.no_grad(), exact_float_mode(x.device):
        st = input_box(x.detach().float(), e.detach().float(), x_min, x_max)
        n = len(ops)
        fold = C is not None and ops[-1].kind == "linear"
        i = 0
        while i < n:
            op = ops[i]
            if op.kind in ("linear", "conv") and not (fold and i == n - 1) and (op.kind == "conv") == (st.c.dim() == 4):
                j = i + 1
                affs = []
                if j < n and ops[j].kind == "chaffine" and not bn_uses_batch_stats(ops[j].module):
                    affs.append(ops[j])
                    j += 1
                relu_next = j < n and ops[j].kind == "relu"
                st = _triton_affine(runner, op, affs, relu_next, st, stats)
                i = j + (1 if relu_next else 0)
                continue
            st = propagate_sound([op], st, stats, spec=C, fold_last=fold and i == n - 1)
            i += 1
        if C is not None and not fold:
            st = apply_spec(st, C)
        return finish(st)
