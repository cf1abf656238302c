"""The one door to the compiled modules: the only importer of ``fastcert._core`` (C++, always built) and
``fastcert._core_cuda`` (CUDA, built only where nvcc was found).

It owns
- backend choice: :data:`HAVE_CUDA` says whether the CUDA module exists; asking for it where it does not is a
  RuntimeError (never a silent fallback);
- every type/shape/dtype/device/contiguity check before a buffer or a pointer crosses into C++ (TypeError /
  ValueError naming the argument; C++ checks again, as the last line of defence);
- the CUDA device guard and stream: every launch runs under ``torch.cuda.device(t.device)`` on
  ``torch.cuda.current_stream(t.device)``, so a tensor on cuda:1 is sampled and counted on cuda:1;
- the size limit of the noise counters (:data:`MAX_COORDINATES`, one number defined in
  csrc/common/limits.h), checked here once;
- :func:`build_info` (``fastcert.build_info()``).

CPU entry points take numpy arrays; CUDA entry points take torch tensors (torch is imported lazily, so the
numpy-only users of this module, e.g. the exact stratified arithmetic, do not pay for it).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import numpy as np

from fastcert import _core

try:  # the CUDA module exists only where nvcc was found at build time
    from fastcert import _core_cuda
except ImportError:  # pragma: no cover - depends on the build
    _core_cuda = None

# ---------------------------------------------------------------------------------------- constants
NOISE_GAUSSIAN: int = int(_core.NOISE_GAUSSIAN)
NOISE_LAPLACE: int = int(_core.NOISE_LAPLACE)
NOISE_UNIFORM: int = int(_core.NOISE_UNIFORM)
NOISE_DISCRETE: int = int(_core.NOISE_DISCRETE)
NOISE_TYPES = (NOISE_GAUSSIAN, NOISE_LAPLACE, NOISE_UNIFORM, NOISE_DISCRETE)
# Largest number of coordinates of one input (csrc/common/limits.h: the coordinate's Philox counter word is
# 32 bits wide, for discrete and continuous noise alike).
MAX_COORDINATES: int = int(_core.MAX_COORDINATES)
STRATIFIED_MAX_RADIUS: int = int(_core.STRATIFIED_MAX_RADIUS)
HAVE_CUDA: bool = _core_cuda is not None

_U64 = 2**64
_U32 = 2**32


def _cuda_dtypes() -> dict:
    """torch dtype -> the dtype code of _core_cuda.count (float32 0, float16 1, bfloat16 2, float64 3)."""
    import torch

    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def cuda_logit_dtypes() -> tuple:
    """The logits dtypes :func:`count_cuda` takes (others must be cast first)."""
    return tuple(_cuda_dtypes())


# ---------------------------------------------------------------------------------------- checks
def check_coordinates(D: int, name: str = "x") -> int:
    """D (the number of coordinates of one input) against :data:`MAX_COORDINATES`: ValueError naming ``name``."""
    D = int(D)
    if D > MAX_COORDINATES:
        raise ValueError(f"{name} has {D} coordinates; the noise counters allow at most MAX_COORDINATES = 2^32 "
                         f"({MAX_COORDINATES})")
    return D


def _check_uint(name: str, v, bound: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    v = int(v)
    if not 0 <= v < bound:
        raise ValueError(f"{name} must be in [0, 2^{bound.bit_length() - 1}), got {v}")
    return v


def _check_noise(noise_type, scale, keep_thresh, K) -> tuple:
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    keep_thresh = _check_uint("keep_thresh", keep_thresh, _U64)
    K = _check_uint("K", K, _U32)
    scale = float(scale)
    if noise_type == NOISE_DISCRETE:
        if K < 1:
            raise ValueError("K must be >= 1 for discrete noise")
    elif not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    return int(noise_type), scale, keep_thresh, K


def _check_counter(seed, stream, start, B) -> tuple:
    seed = _check_uint("seed", seed, _U64)
    stream = _check_uint("stream", stream, _U32)
    start = _check_uint("start", start, _U64)
    if start + int(B) > _U64:
        raise ValueError(f"start + batch must be <= 2^64, got {start} + {B}")
    return seed, stream, start


def _check_array(name: str, a, dtypes: tuple, ndim: int, writeable: bool = False) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(str(np.dtype(d)) for d in dtypes)}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return a


# ---------------------------------------------------------------------------------------- CPU kernels
def sample_cpu(x: np.ndarray, out: np.ndarray, seed: int, stream: int, start: int, noise_type: int, scale: float,
               keep_thresh: int = 0, K: int = 0) -> None:
    """x: (D,) float32, out: (B, D) float32 (C-contiguous, writeable), in place:
    out[s] = x + noise(seed, stream, start + s) (discrete noise: the new grid levels / K)."""
    _check_array("x", x, (np.float32,), 1)
    _check_array("out", out, (np.float32,), 2, writeable=True)
    if out.shape[1] != x.shape[0]:
        raise ValueError(f"out must have shape (B, {x.shape[0]}) for x of {x.shape[0]} coordinates, got {out.shape}")
    check_coordinates(x.shape[0])
    seed, stream, start = _check_counter(seed, stream, start, out.shape[0])
    params = _check_noise(noise_type, scale, keep_thresh, K)
    _core.sample(x, out, seed, stream, start, *params)


def noise_cpu(out: np.ndarray, seed: int, stream: int, start: int, noise_type: int, scale: float,
              keep_thresh: int = 0, K: int = 0) -> None:
    """out: (B, D) float32 <- the noise alone (discrete: the level reached from level 0, / K)."""
    _check_array("out", out, (np.float32,), 2, writeable=True)
    check_coordinates(out.shape[1], "out")
    seed, stream, start = _check_counter(seed, stream, start, out.shape[0])
    params = _check_noise(noise_type, scale, keep_thresh, K)
    _core.noise(out, seed, stream, start, *params)


def count_cpu(logits: np.ndarray, counts: np.ndarray, cls: int = -1, score: np.ndarray | None = None,
              margin: np.ndarray | None = None) -> int:
    """logits: (B, C) float32|float64, counts: (C,) int64 += argmax counts (ties -> lower index); returns the
    number of NaN rows (not counted). With cls >= 0, score/margin (B,) float32 receive the softmax score of
    cls and its margin p_cls - max_{j != cls} p_j."""
    _check_array("logits", logits, (np.float32, np.float64), 2)
    _check_array("counts", counts, (np.int64,), 1, writeable=True)
    B, C = logits.shape
    if C < 1:
        raise ValueError("logits must have at least one class")
    if counts.shape[0] != C:
        raise ValueError(f"counts must have shape ({C},) for logits of {C} classes, got {counts.shape}")
    cls = int(cls)
    if not -1 <= cls < C:
        raise ValueError(f"cls must be -1 or a class index < {C}, got {cls}")
    for name, v in (("score", score), ("margin", margin)):
        if v is not None:
            _check_array(name, v, (np.float32,), 1, writeable=True)
            if v.shape[0] != B:
                raise ValueError(f"{name} must have shape ({B},), got {v.shape}")
            if cls < 0:
                raise ValueError(f"{name} needs cls >= 0")
    return int(_core.count(logits, counts, cls, score, margin))


# ---------------------------------------------------------------------------------------- CUDA kernels
def require_cuda(what: str = "this") -> None:
    """RuntimeError unless the CUDA module was built (never a silent fallback to the CPU)."""
    if _core_cuda is None:
        raise RuntimeError(f"{what}: fastcert._core_cuda was not built (no nvcc at build time; "
                           "see fastcert.build_info())")


def _check_cuda_tensor(name: str, t, dtypes: tuple, ndim: int | None = None, device=None):
    import torch

    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} must be on a CUDA device, got {t.device}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other arguments are on {device}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return t


def _launch(device, fn) -> None:
    """Run ``fn(stream_handle)`` with ``device`` current, on its current stream (the capture stream while a
    CUDA graph is being captured): the device guard of every CUDA launch."""
    import torch

    with torch.cuda.device(device):
        fn(torch.cuda.current_stream(device).cuda_stream)


def sample_cuda(x, out, seed: int, stream: int, start: int, noise_type: int, scale: float, keep_thresh: int = 0,
                K: int = 0, *, start_dev=None, key_dev=None) -> None:
    """x: (D,) (any shape, D elements) float32, out: (B, D) float32, both contiguous on the same CUDA device:
    out[s] = x + noise(seed, stream, start + s), on that device and its current stream.

    start_dev: None or a (1,) int64 tensor on the device added to ``start`` (CUDA-graph replays advance it,
    see :func:`advance_cuda`). key_dev: None or a (2,) int64 tensor {seed, stream} used instead of ``seed``
    and ``stream`` (one captured graph serves every input point)."""
    import torch

    require_cuda("sample_cuda")
    _check_cuda_tensor("x", x, (torch.float32,))
    dev = x.device
    _check_cuda_tensor("out", out, (torch.float32,), 2, dev)
    D = x.numel()
    if out.shape[1] != D:
        raise ValueError(f"out must have shape (B, {D}) for x of {D} coordinates, got {tuple(out.shape)}")
    check_coordinates(D)
    B = out.shape[0]
    seed, stream, start = _check_counter(seed, stream, start, B)
    params = _check_noise(noise_type, scale, keep_thresh, K)
    sp = kp = 0
    if start_dev is not None:
        _check_cuda_tensor("start_dev", start_dev, (torch.int64,), 1, dev)
        if start_dev.numel() != 1:
            raise ValueError(f"start_dev must have shape (1,), got {tuple(start_dev.shape)}")
        sp = start_dev.data_ptr()
    if key_dev is not None:
        _check_cuda_tensor("key_dev", key_dev, (torch.int64,), 1, dev)
        if key_dev.numel() != 2:
            raise ValueError(f"key_dev must have shape (2,) ({{seed, stream}}), got {tuple(key_dev.shape)}")
        kp = key_dev.data_ptr()
    if B == 0 or D == 0:
        return
    xp, op = x.data_ptr(), out.data_ptr()
    _launch(dev, lambda st: _core_cuda.sample(xp, D, op, B, seed, stream, start, *params, st, sp, kp))


def count_cuda(logits, counts, nan_rows, cls: int = -1, score=None, margin=None) -> None:
    """logits: (B, C) float32|float16|bfloat16|float64, counts: (C,) int64 += argmax counts, nan_rows: (1,)
    int64 += the number of NaN rows, all contiguous on one CUDA device (no host synchronization). With
    cls >= 0, score/margin (B,) float32 receive the softmax score of cls and its margin."""
    import torch

    require_cuda("count_cuda")
    codes = _cuda_dtypes()
    _check_cuda_tensor("logits", logits, tuple(codes), 2)
    dev = logits.device
    B, C = logits.shape
    if C < 1:
        raise ValueError("logits must have at least one class")
    _check_cuda_tensor("counts", counts, (torch.int64,), 1, dev)
    if counts.shape[0] != C:
        raise ValueError(f"counts must have shape ({C},) for logits of {C} classes, got {tuple(counts.shape)}")
    _check_cuda_tensor("nan_rows", nan_rows, (torch.int64,), 1, dev)
    if nan_rows.numel() != 1:
        raise ValueError(f"nan_rows must have shape (1,), got {tuple(nan_rows.shape)}")
    cls = int(cls)
    if not -1 <= cls < C:
        raise ValueError(f"cls must be -1 or a class index < {C}, got {cls}")
    ptrs = {}
    for name, v in (("score", score), ("margin", margin)):
        ptrs[name] = 0
        if v is not None:
            _check_cuda_tensor(name, v, (torch.float32,), 1, dev)
            if v.shape[0] != B:
                raise ValueError(f"{name} must have shape ({B},), got {tuple(v.shape)}")
            if cls < 0:
                raise ValueError(f"{name} needs cls >= 0")
            ptrs[name] = v.data_ptr() if B > 0 else 0
    if B == 0:
        return
    lp, cp, np_, code = logits.data_ptr(), counts.data_ptr(), nan_rows.data_ptr(), codes[logits.dtype]
    _launch(dev, lambda st: _core_cuda.count(lp, code, B, C, cp, np_, cls, ptrs["score"], ptrs["margin"], st))


def advance_cuda(counter, by: int) -> None:
    """counter: (1,) int64 on a CUDA device; counter += by on the device's current stream (capturable)."""
    import torch

    require_cuda("advance_cuda")
    _check_cuda_tensor("counter", counter, (torch.int64,), 1)
    if counter.numel() != 1:
        raise ValueError(f"counter must have shape (1,), got {tuple(counter.shape)}")
    by = _check_uint("by", by, _U64)
    cp = counter.data_ptr()
    _launch(counter.device, lambda st: _core_cuda.advance(cp, by, st))


def cuda_device_count() -> int:
    """CUDA devices visible to the CUDA module (0 where it was not built)."""
    return int(_core_cuda.device_count()) if _core_cuda is not None else 0


# ---------------------------------------------------------------------------------------- devices
def torchrun_device(device):
    """The CUDA device of this process under torchrun: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` and is
    made the current device (torch.cuda.set_device), so the ranks of one node use one GPU each instead of all
    landing on cuda:0 (NCCL needs one device per rank). Other devices, an explicit index, or no LOCAL_RANK in
    the environment: returned unchanged (as a torch.device)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}") from None
    local = os.environ.get("LOCAL_RANK")
    if dev.type != "cuda" or local is None:
        return dev
    try:
        lr = int(local)
    except ValueError:
        raise ValueError(f"LOCAL_RANK must be an integer, got {local!r}") from None
    if dev.index is None:
        n = torch.cuda.device_count()
        if not 0 <= lr < n:
            raise ValueError(f"LOCAL_RANK={lr} but this node has {n} CUDA device(s)")
        dev = torch.device("cuda", lr)
    torch.cuda.set_device(dev)
    return dev


# ---------------------------------------------------------------------------------------- pass-throughs
def stratified_thresholds(a: bytes, b: bytes, K: bytes, pn: bytes, pd: bytes, radii: Sequence[int]) -> list:
    """Exact stratified thresholds (csrc/stratified); big integers as little-endian bytes."""
    return _core.stratified_thresholds(a, b, K, pn, pd, radii)


def stratified_region_cardinalities(r: int, K: bytes) -> list:
    return _core.stratified_region_cardinalities(r, K)


def stratified_group_masses(a: bytes, b: bytes, K: bytes, r: int) -> tuple:
    return _core.stratified_group_masses(a, b, K, r)


def nearest_by_label(q, r, qlab, rlab, exclude, norm: int) -> tuple:
    """Blocked nearest-neighbour distances by label (csrc/distances): q (nq, F), r (nr, F) both uint8 or both
    float64, qlab (nq,) / rlab (nr,) int64, exclude None or (nq,) int64, norm 0 l1 | 1 l2 (squared) | 2 linf
    -> (inter (nq,), inter_index, intra, intra_index)."""
    return _core.nearest_by_label(q, r, qlab, rlab, exclude, norm)


MAX_KERNEL_THREADS = 1024


def _check_threads(threads) -> int:
    """OpenMP threads of the IBP kernels: 0 (OpenMP's default) to MAX_KERNEL_THREADS."""
    return _check_uint("threads", threads, MAX_KERNEL_THREADS + 1)


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.shape == b.shape


def _check_disjoint(named: dict, allowed=()) -> None:
    """No two of these arrays share memory, except the pairs in ``allowed`` when they are the same buffer."""
    items = list(named.items())
    for i, (n1, a1) in enumerate(items):
        for n2, a2 in items[i + 1:]:
            if not np.may_share_memory(a1, a2):
                continue
            if ((n1, n2) in allowed or (n2, n1) in allowed) and _same_buffer(a1, a2):
                continue
            raise ValueError(f"{n1} and {n2} must not overlap in memory"
                             + (" (an output may only be exactly its own input)" if allowed else ""))


def interval_relu(c: np.ndarray, r: np.ndarray, c_out: np.ndarray, r_out: np.ndarray, threads: int = 0) -> None:
    """Interval ReLU in center/radius form (csrc/ibp), elementwise over 1-D arrays of one float dtype:
    lo = max(c - r, 0), hi = max(c + r, 0), c_out = (hi + lo) / 2, r_out = (hi - lo) / 2. The outputs may be
    the inputs (in place)."""
    _check_array("c", c, (np.float32, np.float64), 1)
    for name, a, w in (("r", r, False), ("c_out", c_out, True), ("r_out", r_out, True)):
        _check_array(name, a, (c.dtype,), 1, writeable=w)
        if a.shape != c.shape:
            raise ValueError(f"{name} must have shape {c.shape} to match c, got {a.shape}")
    _check_disjoint({"c": c, "r": r, "c_out": c_out, "r_out": r_out}, allowed=(("c", "c_out"), ("r", "r_out")))
    _core.interval_relu(c, r, c_out, r_out, _check_threads(threads))


def _check_crown(lam, per_sample: dict, writeable: bool) -> tuple:
    """Shared checks of the CROWN kernels: lam (B, K, F) float32/float64 C-contiguous; every per-sample array
    (B, F) of lam's dtype. Returns (B, K, F)."""
    _check_array("lam", lam, (np.float32, np.float64), 3, writeable=writeable)
    B, K, F = lam.shape
    for name, a in per_sample.items():
        _check_array(name, a, (lam.dtype,), 2)
        if a.shape != (B, F):
            raise ValueError(f"{name} must have shape ({B}, {F}) to match lam {lam.shape}, got {a.shape}")
    return B, K, F


def crown_relu_back(lam: np.ndarray, a_l: np.ndarray, a_u: np.ndarray, t: np.ndarray, bias: np.ndarray,
                    threads: int = 0) -> None:
    """CROWN's step through a ReLU, fused (csrc/ibp), in place: lam (B, K, F) <- lam * (lam >= 0 ? a_l : a_u)
    and bias (B, K) += sum_f min(lam, 0) * t; a_l, a_u, t are (B, F). One read and one write of lam."""
    B, K, _ = _check_crown(lam, {"a_l": a_l, "a_u": a_u, "t": t}, writeable=True)
    _check_array("bias", bias, (lam.dtype,), 2, writeable=True)
    if bias.shape != (B, K):
        raise ValueError(f"bias must have shape ({B}, {K}) to match lam {lam.shape}, got {bias.shape}")
    _check_disjoint({"lam": lam, "bias": bias, "a_l": a_l, "a_u": a_u, "t": t},
                    allowed=(("a_l", "a_u"), ("a_l", "t"), ("a_u", "t")))  # read-only inputs may coincide
    _core.crown_relu_back(lam, a_l, a_u, t, bias, _check_threads(threads))


def crown_concretize(lam: np.ndarray, c: np.ndarray, r: np.ndarray, x: np.ndarray | None = None, dual: int = 0,
                     threads: int = 0) -> np.ndarray:
    """Sums over the features of lam (B, K, F) in one read (csrc/ibp) -> (B, K, 4) float64:
    sum lam c, sum |lam| r, sum lam x (0 when x is None), and sum lam^2 (dual 1) / max |lam| (dual 2) / 0."""
    arrays = {"c": c, "r": r} if x is None else {"c": c, "r": r, "x": x}
    _check_crown(lam, arrays, writeable=False)
    if dual not in (0, 1, 2):
        raise ValueError(f"dual must be 0 (none), 1 (l2) or 2 (l1), got {dual!r}")
    return _core.crown_concretize(lam, c, r, x, int(dual), _check_threads(threads))


def max_threads() -> int:
    """OpenMP threads of the sampling kernels."""
    return int(_core.max_threads())


def distances_max_threads() -> int:
    return int(_core.distances_max_threads())


def version() -> str:
    return str(_core.__version__)


def build_info() -> dict:
    """Return a dict describing the compiled modules and optional backends.

    Keys: ``version``, ``cpu`` (compiler, OpenMP, threads), ``cuda_module`` (None when _core_cuda
    was not built, else its architectures and runtime version), ``cuda_devices`` (visible to the
    CUDA module), ``torch_cuda`` (torch sees a GPU), ``triton`` (importable), ``max_coordinates``.
    """
    import torch

    cpu = dict(_core.build_info())
    cpu["threads"] = max_threads()
    info = {
        "version": version(),
        "cpu": cpu,
        "cuda_module": None,
        "cuda_devices": 0,
        "torch_cuda": bool(torch.cuda.is_available()),
        "triton": importlib.util.find_spec("triton") is not None,
        "max_coordinates": MAX_COORDINATES,
    }
    if _core_cuda is not None:
        info["cuda_module"] = dict(_core_cuda.build_info())
        info["cuda_devices"] = cuda_device_count()
    return info


# ---------------------------------------------------------------------------------------- lattice (sound smoothing)
def lattice_sample_cpu(base, out: np.ndarray, seed: int, stream: int, start: int, thresholds: np.ndarray,
                       j_min: int, denom: int, offsets: bool = False) -> None:
    """Lattice sampler of sound smoothing (fastcert.smoothing.sound), in place.

    base: (D,) int64 (grid index times m); out: (B, D) float32 <- float32((base + J) / denom), or with
    ``offsets=True`` out: (B, D) int64 <- J itself (``base`` ignored, may be None). J = j_min + #{thresholds
    <= U} for one 64-bit Philox uniform U per (sample start + b of ``stream``, coordinate);
    thresholds: (N,) uint64, non-decreasing (the kernel checks the order).
    """
    _check_array("out", out, (np.int64,) if offsets else (np.float32,), 2, writeable=True)
    _check_array("thresholds", thresholds, (np.uint64,), 1)
    if thresholds.size < 1:
        raise ValueError("thresholds must not be empty")
    check_coordinates(out.shape[1], "out")
    seed, stream, start = _check_counter(seed, stream, start, out.shape[0])
    if isinstance(j_min, bool) or not isinstance(j_min, (int, np.integer)) or not abs(int(j_min)) < 2**52:
        raise ValueError(f"j_min must be an integer with |j_min| < 2^52, got {j_min!r}")
    if offsets:
        _core.lattice_offsets(out, seed, stream, start, thresholds, int(j_min))
        return
    _check_array("base", base, (np.int64,), 1)
    if out.shape[1] != base.shape[0]:
        raise ValueError(f"out must have shape (B, {base.shape[0]}), got {out.shape}")
    if isinstance(denom, bool) or not isinstance(denom, (int, np.integer)) or not 1 <= int(denom) < 2**52:
        raise ValueError(f"denom must be an integer in [1, 2^52), got {denom!r}")
    _core.lattice_sample(base, out, seed, stream, start, thresholds, int(j_min), int(denom))
