"""Class distances (Goepfert et al., "How to compare adversarial robustness of classifiers from a global
perspective", ICLR 2021): per point, the distance to the nearest point of another class and of the same
class, in l1, l2 and linf.

* :func:`class_distances` — through the blocked C++/OpenMP kernel (``fastcert._native.nearest_by_label``).
  Data on the 1/255 grid (images) are computed exactly in integers.
* :func:`class_distances_torch` — the straightforward chunked ``torch.cdist`` path (the benchmark's
  reference, and a GPU path).
* :func:`parse_norms` and the point/label checks shared with :mod:`fastcert.robustness.curves`.
"""
from __future__ import annotations

import numpy as np

from fastcert.robustness.attacks import NORMS

__all__ = ["class_distances", "class_distances_torch", "parse_norms"]

_NORM_CODE = {"l1": 0, "l2": 1, "linf": 2}
GRID_LEVELS = 255


def parse_norms(norms) -> tuple:
    """A tuple of distinct norm names from a sequence or a comma-separated string ('l1,linf')."""
    if isinstance(norms, str):
        norms = tuple(n.strip() for n in norms.split(",") if n.strip())
    norms = tuple(norms)
    if not norms:
        raise ValueError("norms must name at least one of l1, l2, linf")
    for n in norms:
        if n not in NORMS:
            raise ValueError(f"norms: unknown norm {n!r} (choose from {', '.join(NORMS)})")
    if len(set(norms)) != len(norms):
        raise ValueError(f"norms: duplicate entries in {norms}")
    return norms


def _as_points(x, name: str) -> np.ndarray:
    """(N, ...) array-like -> (N, D) contiguous float64, finite."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must have a numeric dtype, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, ...) with at least 2 dimensions, got {x.shape}")
    if x.shape[0] == 0 or x[0].size == 0:
        raise ValueError(f"{name} must hold at least one non-empty point, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float64, copy=False)
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no features")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def _as_labels(y, n: int, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
    return np.ascontiguousarray(y.astype(np.int64))


def _on_grid(*arrays) -> bool:
    for a in arrays:
        q = np.rint(a * GRID_LEVELS)
        if q.min() < 0 or q.max() > GRID_LEVELS or np.abs(q / GRID_LEVELS - a).max() > 1e-6:
            return False
    return True


def class_distances(x, y, norms=("l1", "l2", "linf"), reference=None, *, grid="auto", return_index=False,
                    chunk: int = 1024, progress: bool = False) -> dict:
    """Per point of x, the distance to the nearest point of ``reference`` with another label ("inter")
    and with the same label ("intra"), in each norm.

    x: (N, ...) array or tensor; y: (N,) integer labels. ``reference``: None (x itself; each point is
    excluded from its own search, its duplicates are not), a pair ``(x_ref, y_ref)``, or an object with
    ``.x`` and ``.y`` (a fastcert Dataset). ``grid``: "auto" computes exactly in integer levels when every
    value is within 1e-6 of a multiple of 1/255 (8-bit images: the distances are those of the grid
    values k/255), ``True`` requires it, ``False`` uses float64 throughout. Returns ``{norm: {"inter":
    (N,) float64, "intra": (N,) float64}}`` (+inf where no such point exists; with ``return_index`` also
    "inter_index"/"intra_index", -1 where none; ties -> smallest reference index).
    """
    from fastcert import _native

    norms = parse_norms(norms)
    xq = _as_points(x, "x")
    yq = _as_labels(y, xq.shape[0], "y")
    if reference is None:
        xr, yr, exclude = xq, yq, np.arange(xq.shape[0], dtype=np.int64)
    else:
        if hasattr(reference, "x") and hasattr(reference, "y"):
            rx, ry = reference.x, reference.y
        elif isinstance(reference, (tuple, list)) and len(reference) == 2:
            rx, ry = reference
        else:
            raise TypeError("reference must be None, a pair (x_ref, y_ref) or an object with .x and .y")
        xr = _as_points(rx, "reference x")
        yr = _as_labels(ry, xr.shape[0], "reference y")
        exclude = None
        if xr.shape[1] != xq.shape[1]:
            raise ValueError(f"reference points have {xr.shape[1]} features, x has {xq.shape[1]}")
    if int(chunk) < 1:
        raise ValueError("chunk must be >= 1")
    if grid not in ("auto", True, False):
        raise ValueError(f"grid must be 'auto', True or False, got {grid!r}")
    use_grid = grid is True or (grid == "auto" and _on_grid(xq, xr))
    if grid is True and not _on_grid(xq, xr):
        raise ValueError("grid=True but the data are not on the 1/255 grid")
    if use_grid:
        q = np.ascontiguousarray(np.rint(xq * GRID_LEVELS).astype(np.uint8))
        r = q if reference is None else np.ascontiguousarray(np.rint(xr * GRID_LEVELS).astype(np.uint8))
        scale = float(GRID_LEVELS)
    else:
        q, r, scale = xq, xr, 1.0
    out = {}
    n = q.shape[0]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * len(norms), desc="class distances", unit="pt")
    for norm in norms:
        res = {k: [] for k in ("inter", "inter_index", "intra", "intra_index")}
        for s in range(0, n, int(chunk)):
            e = min(n, s + int(chunk))
            ex = None if exclude is None else exclude[s:e]
            inter, ii, intra, ia = _native.nearest_by_label(q[s:e], r, yq[s:e], yr, ex, _NORM_CODE[norm])
            res["inter"].append(inter)
            res["inter_index"].append(ii)
            res["intra"].append(intra)
            res["intra_index"].append(ia)
            if bar is not None:
                bar.update(e - s)
        d = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.float64 if "index" not in k else np.int64)
             for k, v in res.items()}
        for k in ("inter", "intra"):
            v = np.sqrt(d[k]) if norm == "l2" else d[k]
            d[k] = v / scale  # a division, so k/255 is the correctly rounded value
        if not return_index:
            d = {"inter": d["inter"], "intra": d["intra"]}
        out[norm] = d
    if bar is not None:
        bar.close()
    return out


def class_distances_torch(x, y, norms=("l1", "l2", "linf"), reference=None, device="cpu", chunk=256) -> dict:
    """The straightforward path: chunked ``torch.cdist`` (float64) on ``device``; same output as
    :func:`class_distances` with ``grid=False`` (inter/intra only). The benchmark's reference, and a GPU
    path where one is present."""
    import torch

    norms = parse_norms(norms)
    xq = torch.from_numpy(_as_points(x, "x")).to(device)
    yq = torch.from_numpy(_as_labels(y, xq.shape[0], "y")).to(device)
    if reference is None:
        xr, yr = xq, yq
    else:
        rx, ry = (reference.x, reference.y) if hasattr(reference, "x") else reference
        xr = torch.from_numpy(_as_points(rx, "reference x")).to(device)
        yr = torch.from_numpy(_as_labels(ry, xr.shape[0], "reference y")).to(device)
    p = {"l1": 1.0, "l2": 2.0, "linf": float("inf")}
    out = {}
    for norm in norms:
        inter, intra = [], []
        for s in range(0, xq.shape[0], chunk):
            dist = torch.cdist(xq[s:s + chunk], xr, p=p[norm])
            same = yq[s:s + chunk, None] == yr[None, :]
            if reference is None:
                idx = torch.arange(s, min(s + chunk, xq.shape[0]), device=device)
                dist[torch.arange(len(idx), device=device), idx] = float("inf")
                same[torch.arange(len(idx), device=device), idx] = True
            inter.append(torch.where(same, torch.full_like(dist, float("inf")), dist).amin(1))
            if reference is None:
                same[torch.arange(len(idx), device=device), idx] = False
            intra.append(torch.where(same, dist, torch.full_like(dist, float("inf"))).amin(1))
        out[norm] = {"inter": torch.cat(inter).cpu().numpy(), "intra": torch.cat(intra).cpu().numpy()}
    return out
