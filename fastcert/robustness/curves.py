"""Robustness curves and class distances (Goepfert et al., "Adversarial Robustness Curves", 2019, and
"How to compare adversarial robustness of classifiers from a global perspective", ICLR 2021).

* :func:`curve` — per-point minimal adversarial perturbation sizes d_p(x) in l1, l2 and linf and the
  robustness curve eps -> fraction of points with d_p(x) <= eps. Perturbed points always stay in the
  input box [0, 1]^D. Methods: "linear" (exact closed form for affine models), "attack" (batched
  FAB-style minimal-norm attack + bisection, restarts; an upper bound on d_p), "exact" (mixed-integer
  program, small ReLU nets), "auto" (linear when the model is affine, else attack). A point whose attack
  fails counts as +inf; misclassified points count as 0. Optionally a certified lower bound per point
  (IBP for linf, or radii you pass in), so that the band [attack curve, certified curve] contains the
  true curve.
* :func:`class_distances` — per point, the distance to the nearest point of another class and of the
  same class, through the blocked C++/OpenMP kernel (``fastcert._core.nearest_by_label``). Data on the
  1/255 grid (images) are computed exactly in integers.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastcert.robustness.attacks import NORMS

__all__ = ["curve", "RobustnessCurve", "class_distances", "load_curve", "croce_mat_model"]

_NORM_CODE = {"l1": 0, "l2": 1, "linf": 2}
GRID_LEVELS = 255


def _parse_norms(norms) -> tuple:
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
    from fastcert import _core

    norms = _parse_norms(norms)
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
            inter, ii, intra, ia = _core.nearest_by_label(q[s:e], r, yq[s:e], yr, ex, _NORM_CODE[norm])
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

    norms = _parse_norms(norms)
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


# ---------------------------------------------------------------------------------------------------
# robustness curves
# ---------------------------------------------------------------------------------------------------
@dataclass
class RobustnessCurve:
    """Per-point minimal perturbation sizes and the robustness curves derived from them.

    ``distances[norm]``: (N,) float64, 0 where the model misclassifies, +inf where no adversarial point
    was found; ``attacks[norm]``: (N,) str, which method produced each distance ("misclassified",
    "linear", "exact", "fab", "fab-restartK", "failed"); ``certified[norm]``: optional (N,) certified
    lower bounds on the same distances; ``label``: a name for legends.
    """

    norms: tuple
    distances: dict
    attacks: dict = field(default_factory=dict)
    certified: dict = field(default_factory=dict)
    label: str = "model"
    meta: dict = field(default_factory=dict)
    adversarials: dict = field(default_factory=dict)

    def __len__(self):
        return len(next(iter(self.distances.values()))) if self.distances else 0

    def _check(self, norm):
        if norm not in self.distances:
            raise ValueError(f"norm {norm!r} not in this curve (has {', '.join(self.distances)})")

    def at(self, eps, norm: str):
        """Fraction of points with d_p(x) <= eps (the adversarial error at budget eps). eps: scalar or array."""
        self._check(norm)
        d = np.sort(self.distances[norm])
        e = np.asarray(eps, dtype=np.float64)
        if np.any(np.isnan(e)):
            raise ValueError("eps must not be NaN")
        frac = np.searchsorted(d, e, side="right") / max(len(d), 1)
        return float(frac) if frac.ndim == 0 else frac

    def certified_at(self, eps, norm: str):
        """Upper bound on :meth:`at` from certified lower bounds: fraction NOT certified at eps."""
        if norm not in self.certified:
            raise ValueError(f"no certified bounds for norm {norm!r}")
        r = np.asarray(self.certified[norm], dtype=np.float64)
        e = np.asarray(eps, dtype=np.float64)
        # not certified at eps: r < eps, and every point without any certificate (r = 0, which covers
        # the misclassified points whose distance 0 counts in at(0))
        frac = np.mean((r[:, None] < e.reshape(1, -1)) | (r[:, None] <= 0), axis=0)
        return float(frac[0]) if e.ndim == 0 else frac.reshape(e.shape)

    def accuracy(self) -> float:
        d = next(iter(self.distances.values()))
        return float(np.mean(d > 0))

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write ``.npz`` (default) or ``.csv`` (one row per point), atomically."""
        from fastcert.io.files import atomic_write, save_npz

        path = Path(path)
        if path.suffix == ".csv":
            def write(tmp):
                with open(tmp, "w", newline="") as f:
                    w = csv.writer(f)
                    cols = []
                    for n in self.norms:
                        cols += [f"d_{n}", f"attack_{n}"] + ([f"cert_{n}"] if n in self.certified else [])
                    w.writerow(["# label", self.label])
                    w.writerow(["idx"] + cols)
                    for i in range(len(self)):
                        row = [i]
                        for n in self.norms:
                            row += [repr(float(self.distances[n][i])), self.attacks.get(n, [""] * len(self))[i]]
                            if n in self.certified:
                                row.append(repr(float(self.certified[n][i])))
                        w.writerow(row)
        else:
            arrays = {"norms": np.array(self.norms), "label": np.array(self.label)}
            for n in self.norms:
                arrays[f"d_{n}"] = np.asarray(self.distances[n], dtype=np.float64)
                if n in self.attacks:
                    arrays[f"attack_{n}"] = np.asarray(self.attacks[n], dtype=str)
                if n in self.certified:
                    arrays[f"cert_{n}"] = np.asarray(self.certified[n], dtype=np.float64)
            save_npz(path, arrays)
            return
        atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "RobustnessCurve":
        return load_curve(path)

    # -- plotting ----------------------------------------------------------------------------------
    def plot(self, path=None, axes=None, others=(), max_eps=None):
        """One panel per norm: the attack curve (a lower bound on the true curve, or the curve itself for
        exact methods) and, where present, the certified curve (an upper bound): the band holds the true
        curve. ``others``: more curves for the same figure. Returns the matplotlib figure."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        curves = [self, *others]
        norms = [n for n in self.norms]
        if axes is None:
            fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.4), squeeze=False)
            axes = axes[0]
        else:
            fig = axes[0].figure
        for ax, n in zip(axes, norms):
            top = max_eps
            if top is None:
                fin = np.concatenate([c.distances[n][np.isfinite(c.distances[n])] for c in curves if n in c.distances])
                top = float(np.quantile(fin, 0.99)) * 1.1 if fin.size and fin.max() > 0 else 1.0
            eps = np.linspace(0, top, 400)
            for c in curves:
                if n not in c.distances:
                    continue
                line, = ax.plot(eps, c.at(eps, n), label=c.label)
                if n in c.certified:
                    ax.fill_between(eps, c.at(eps, n), c.certified_at(eps, n), color=line.get_color(), alpha=0.2,
                                    label=f"{c.label} (certified band)")
            ax.set_xlabel(f"{n} perturbation size eps")
            ax.set_ylabel("fraction with d(x) <= eps")
            ax.set_ylim(0, 1.02)
            ax.set_title(f"robustness curve, {n}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def load_curve(path) -> RobustnessCurve:
    """Read a curve written by :meth:`RobustnessCurve.save` (.npz or .csv)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"curve file not found: {path}")
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if len(rows) < 2 or rows[0][0] != "# label" or rows[1][0] != "idx":
            raise ValueError(f"{path}: not a fastcert curve CSV")
        label, head, body = rows[0][1], rows[1], rows[2:]
        norms = tuple(h[2:] for h in head if h.startswith("d_"))
        dist = {n: np.array([float(r[head.index(f"d_{n}")]) for r in body]) for n in norms}
        att = {n: np.array([r[head.index(f"attack_{n}")] for r in body], dtype=object) for n in norms}
        cert = {n: np.array([float(r[head.index(f"cert_{n}")]) for r in body]) for n in norms if f"cert_{n}" in head}
        return RobustnessCurve(norms, dist, att, cert, label)
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable curve file ({type(e).__name__})") from None
    if "norms" not in z.files:
        raise ValueError(f"{path}: not a fastcert curve file (no 'norms')")
    norms = tuple(str(n) for n in z["norms"])
    dist = {n: z[f"d_{n}"] for n in norms}
    att = {n: z[f"attack_{n}"].astype(object) for n in norms if f"attack_{n}" in z.files}
    cert = {n: z[f"cert_{n}"] for n in norms if f"cert_{n}" in z.files}
    return RobustnessCurve(norms, dist, att, cert, str(z["label"]))


def ibp_certified_band(model, x, y, dist: dict, norms, batch_size: int, tol: float = 1e-4) -> dict:
    """The certified lower curve of ``curve(certified="ibp")``: per point the largest IBP-certified linf
    radius (:func:`fastcert.ibp.radius.certified_radius`, bisection to ``tol``, capped at the largest
    finite linf distance found, at least 1e-3), used for every norm (the l1 and l2 balls of radius r lie
    inside the linf ball of radius r)."""
    import torch

    from fastcert.ibp.radius import certified_radius

    top = max(float(np.max(dist["linf"][np.isfinite(dist["linf"])], initial=0.0)) if "linf" in dist else 0.0, 1e-3)
    num_classes = None
    r = np.zeros(x.shape[0])
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(xb[:1]).shape[1])
        r[s:s + batch_size] = certified_radius(model, xb, yb, num_classes, cap=top, tol=tol).cpu().numpy()
    return {n: r.copy() for n in norms}


def curve(model, x, y, norms=("l1", "l2", "linf"), *, method="auto", restarts: int = 2, steps: int = 100,
          targets: int = 3,
          batch_size: int = 256, seed: int = 0, certified=None, label: str = "model", keep_adversarials=False,
          mip_time_limit: float = 60.0, device=None, progress: bool = False) -> RobustnessCurve:
    """Minimal adversarial perturbations of ``model`` at (x, y) in each norm -> :class:`RobustnessCurve`.

    model: a torch module mapping (B, *input_shape) images in [0, 1] to logits (fastcert zoo models);
    x: (N, *input_shape) in [0, 1]; y: (N,) labels. Perturbed points stay in [0, 1].
    method: "linear" (exact, affine models only), "attack" (FAB-style: one run from x, ``restarts`` random
    restarts and ``targets`` targeted runs towards the runner-up classes, ``steps`` steps each, bisection
    refinement; upper bounds on d_p, the smallest over all runs kept and its run logged in ``.attacks``), "exact" (after the attack, a mixed-integer program solved by HiGHS:
    MILPs for l1 and linf, an outer-approximation sequence of MILPs for l2 that stops when the proven lower
    bound is within 1e-4 relative of the best point; the lower bounds are in ``.meta["mip_lower"]``; small
    ReLU nets), "auto".
    certified: None, "ibp" (IBP-certified linf radius on a grid, also a valid lower bound for l1 and l2
    since those balls lie inside the linf ball), or a dict {norm: (N,) radii} you computed (e.g. smoothing).
    """
    import torch

    from fastcert.robustness.attacks import affine_min_perturbation, affine_relu_layers, min_norm_attack, _Twin

    norms = _parse_norms(norms)
    if method not in ("auto", "attack", "exact", "linear"):
        raise ValueError(f"method must be 'auto', 'attack', 'exact' or 'linear', got {method!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor or array")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("x must lie in [0, 1] (models carry their own normalization)")
    y = torch.as_tensor(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y))
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or y.shape != (x.shape[0],):
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},)")
    for name, v, lo in (("restarts", restarts, 0), ("steps", steps, 1), ("batch_size", batch_size, 1),
                        ("targets", targets, 0)):
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    model = model.eval()
    x = x.float().to(device)
    y = y.long().to(device)
    N = x.shape[0]
    input_shape = tuple(x.shape[1:])
    D = int(np.prod(input_shape))
    with torch.no_grad():
        C = model(x[:1]).shape[1]
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(f"y must hold labels in [0, {C})")
    layers = None
    if method in ("auto", "linear", "exact"):
        layers = affine_relu_layers(model.cpu(), input_shape)
        model.to(device)
    is_affine = layers is not None and len(layers) == 1
    if method == "linear" and not is_affine:
        raise ValueError("method='linear' needs an affine model (Normalize/Flatten/Linear only)")
    if method == "exact" and layers is None:
        raise ValueError("method='exact' needs a chain of Linear/Conv2d/ReLU layers (see affine_relu_layers)")
    use = "linear" if (method == "linear" or (method == "auto" and is_affine)) else method
    if use == "auto":
        use = "attack"

    twin = _Twin(model, input_shape, device)
    xf = x.reshape(N, D)
    with torch.no_grad():
        wrong = torch.cat([model(x[s:s + batch_size]).argmax(1) != y[s:s + batch_size] for s in range(0, N, batch_size)])
    dist, att, advs, meta = {}, {}, {}, {"method": use, "time_s": {}}
    attack_sizes: dict = {}  # method="exact": the attack's distance per point index, before the MIP
    mip_lower: dict = {}  # method="exact": the MIP's proven lower bound per point index
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=N * len(norms), desc=f"curve ({use})", unit="pt")
    for norm in norms:
        t0 = time.perf_counter()
        d = np.zeros(N)
        a = np.array(["misclassified"] * N, dtype=object)
        adv = xf.clone()
        for s in range(0, N, batch_size):
            e = min(N, s + batch_size)
            sel = torch.nonzero(~wrong[s:e])[:, 0] + s
            if sel.numel():
                xb, yb = xf[sel], y[sel]
                if use == "linear":
                    W, b = layers[0]
                    xb64, yb_c = xb.double().cpu(), yb.cpu()
                    size, _, _ = affine_min_perturbation(W, b, xb64, yb_c, norm)
                    size = size.to(device)
                    names = np.array(["linear"] * sel.numel(), dtype=object)
                    # witnesses: push the margin past the boundary by a growing relative overshoot until
                    # the float32 point is misclassified by the float32 model and its float64 twin
                    xa = xb.clone()
                    todo = torch.isfinite(size)
                    for over in (1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3):
                        if not bool(todo.any()):
                            break
                        _, cand, _ = affine_min_perturbation(W, b, xb64, yb_c, norm, overshoot=over)
                        cand = cand.float().to(device)
                        ok = todo & twin.wrong(cand, yb)
                        xa[ok] = cand[ok]
                        todo &= ~ok
                    if bool(todo.any()):  # no float32 witness near the exact point: mark it
                        names[todo.cpu().numpy()] = "linear (no float32 witness)"
                else:
                    size, xa, names = min_norm_attack(model, xb, yb, norm, input_shape=input_shape, steps=steps,
                                                      restarts=restarts, seed=seed + s, twin=twin, targets=targets)
                    names = np.array(names, dtype=object)
                    if use == "exact":
                        from fastcert.robustness.exact_mip import mip_min_perturbation

                        L = [(W.numpy(), b.numpy()) for W, b in layers]
                        for k in range(sel.numel()):
                            r = mip_min_perturbation(L, xb[k].double().cpu().numpy(), int(yb[k]), norm,
                                                     upper=float(size[k]), time_limit=mip_time_limit)
                            attack_sizes.setdefault(norm, {})[int(sel[k])] = float(size[k])
                            mip_lower.setdefault(norm, {})[int(sel[k])] = float(r["lower"])
                            if r["status"] == "optimal" and math.isfinite(r["distance"]):
                                # optimal up to HiGHS' tolerances: when the attack's verified witness is
                                # as small, it is kept (it is the optimum to within those tolerances)
                                if r["distance"] <= float(size[k]):
                                    size[k] = r["distance"]
                                    if r["x_adv"] is not None:
                                        xa[k] = torch.from_numpy(r["x_adv"]).float().to(device)
                                names[k] = "exact"
                            elif r["status"] == "infeasible" and not math.isfinite(float(size[k])):
                                size[k] = float("inf")
                                names[k] = "exact"
                            else:
                                names[k] = f"{names[k]} (mip {r['status']})"
                d[sel.cpu().numpy()] = size.double().cpu().numpy()
                a[sel.cpu().numpy()] = names
                adv[sel] = xa.to(adv.dtype)
            if bar is not None:
                bar.update(e - s)
        dist[norm], att[norm] = d, a
        if keep_adversarials:
            advs[norm] = adv.reshape(N, *input_shape).cpu()
        meta["time_s"][norm] = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if use == "exact":
        meta["attack_distances"] = {n: np.array([v.get(i, dist[n][i]) for i in range(N)])
                                    for n, v in attack_sizes.items()}
        meta["mip_lower"] = {n: np.array([v.get(i, dist[n][i]) for i in range(N)]) for n, v in mip_lower.items()}
    cert = {}
    if isinstance(certified, dict):
        for n, r in certified.items():
            if n not in norms:
                raise ValueError(f"certified: norm {n!r} not among {norms}")
            r = np.asarray(r, dtype=np.float64)
            if r.shape != (N,) or np.any(np.isnan(r)) or np.any(r < 0):
                raise ValueError(f"certified[{n!r}] must be (N,) non-negative radii")
            cert[n] = r
    elif certified == "ibp":
        cert = ibp_certified_band(model, x, y, dist, norms, batch_size)
    elif certified is not None:
        raise ValueError(f"certified must be None, 'ibp' or a dict of radii, got {certified!r}")
    return RobustnessCurve(norms, dist, att, cert, label, meta, advs)


def croce_mat_model(path, input_shape=None, num_classes=None):
    """Load a fully connected ReLU network stored as MATLAB ``.mat`` weights (as released with Croce et
    al., "Provable robustness of ReLU networks via maximization of linear regions", AISTATS 2019).

    The file holds weight matrices and bias vectors per layer. Recognized key pairs, per layer k
    (1-based, in order): ``U{k}``/``bU{k}``, ``W{k}``/``b{k}`` or ``weights``/``biases`` cell arrays. A
    weight of shape (in, out) is transposed to torch's (out, in) when its first dimension matches the
    previous layer's width. Returns ``nn.Sequential(Flatten, Linear, ReLU, ..., Linear)`` in float32.
    Inputs are taken as in the original (images in [0, 1], no normalization).
    """
    import torch
    from scipy.io import loadmat
    from torch import nn

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f".mat model not found: {path}")
    try:
        m = loadmat(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable .mat file ({type(e).__name__})") from None
    Ws, bs = [], []
    if "weights" in m and "biases" in m:
        Ws = [np.asarray(w, dtype=np.float64) for w in np.ravel(m["weights"])]
        bs = [np.asarray(b, dtype=np.float64).ravel() for b in np.ravel(m["biases"])]
    else:
        for wk, bk in (("U", "bU"), ("W", "b")):
            k = 1
            while f"{wk}{k}" in m and f"{bk}{k}" in m:
                Ws.append(np.asarray(m[f"{wk}{k}"], dtype=np.float64))
                bs.append(np.asarray(m[f"{bk}{k}"], dtype=np.float64).ravel())
                k += 1
            if Ws:
                break
    if not Ws:
        raise ValueError(f"{path}: no layer weights found (expected U1/bU1..., W1/b1... or weights/biases)")
    d_in = int(np.prod(input_shape)) if input_shape is not None else None
    layers: list = [nn.Flatten()]
    for i, (W, b) in enumerate(zip(Ws, bs)):
        if W.ndim != 2:
            raise ValueError(f"{path}: layer {i + 1} weight is not a matrix")
        if d_in is None:
            d_in = W.shape[0] if W.shape[1] == b.size else W.shape[1]
        if W.shape == (b.size, d_in):
            pass
        elif W.shape == (d_in, b.size):
            W = W.T
        else:
            raise ValueError(f"{path}: layer {i + 1} weight {W.shape} does not fit input width {d_in} and bias {b.size}")
        lin = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(Ws) - 1:
            layers.append(nn.ReLU())
        d_in = W.shape[0]
    if num_classes is not None and d_in != int(num_classes):
        raise ValueError(f"{path}: the last layer has {d_in} outputs, expected {num_classes}")
    return nn.Sequential(*layers).float().eval()
