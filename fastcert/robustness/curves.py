"""Robustness curves (Goepfert et al., "Adversarial Robustness Curves", 2019): per-point minimal
adversarial perturbation sizes d_p(x) in l1, l2 and linf, and the curve eps -> fraction of points with
d_p(x) <= eps. Perturbed points always stay in the input box [0, 1]^D.

* :func:`curve` — methods "linear" (exact closed form for affine models), "attack" (batched FAB-style
  minimal-norm attack + bisection, restarts; an upper bound on d_p), "exact" (mixed-integer program,
  small ReLU nets), "auto" (linear when the model is affine, else attack). A point whose attack fails
  counts as +inf; misclassified points count as 0. Optionally a certified lower bound per point (the
  IBP-certified linf radius, or radii you pass in), so that the band [attack curve, certified curve]
  contains the true curve.
* :class:`RobustnessCurve` — the result: ``.at``, ``.certified_at``, ``.save`` (.npz / .csv),
  :func:`load_curve`, ``.plot`` (drawn by :mod:`fastcert.robustness.plot`).

Class distances live in :mod:`fastcert.robustness.distances`.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastcert.ibp.radius import certified_radius
from fastcert.robustness.attacks import _Twin, affine_min_perturbation, affine_relu_layers, min_norm_attack
from fastcert.robustness.distances import parse_norms
from fastcert.robustness.exact_mip import mip_min_perturbation
from fastcert.validate import check_int

__all__ = ["curve", "RobustnessCurve", "load_curve", "ibp_certified_band"]


# ---------------------------------------------------------------------------------------------------
# the curve object
# ---------------------------------------------------------------------------------------------------
@dataclass
class RobustnessCurve:
    """Per-point minimal perturbation sizes and the robustness curves derived from them.

    ``distances[norm]``: (N,) float64, 0 where the model misclassifies, +inf where no adversarial point
    was found; ``attacks[norm]``: (N,) str, which method produced each distance ("misclassified",
    "linear", "exact", "fab", "fab-restartK", "fab-targetK", "polish", "failed"); ``certified[norm]``: optional (N,) certified
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
        curve. ``others``: more curves for the same figure. Returns the matplotlib figure
        (:func:`fastcert.robustness.plot.plot_curves`)."""
        from fastcert.robustness.plot import plot_curves

        return plot_curves([self, *others], path=path, axes=axes, max_eps=max_eps)


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


# ---------------------------------------------------------------------------------------------------
# curve(): checks, method choice, one batch per method, certified radii
# ---------------------------------------------------------------------------------------------------
_METHODS = ("auto", "attack", "exact", "linear")


def _check_inputs(model, x, y, method, counts: dict):
    """-> (x float tensor, y long tensor), both on the CPU, after every argument check of :func:`curve`."""
    if method not in _METHODS:
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
    for name, (v, lo) in counts.items():
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
    return x, y


def _choose_method(model, method: str, input_shape, device):
    """-> (the method used: "linear" | "attack" | "exact", the model's affine/ReLU layers or None)."""
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
    return ("attack" if use == "auto" else use), layers


def _linear_batch(layers, twin: _Twin, xb, yb, norm: str):
    """Exact distances of an affine model and float32 witnesses -> (size, x_adv, names)."""
    W, b = layers[0]
    xb64, yb_c = xb.double().cpu(), yb.cpu()
    size, _, _ = affine_min_perturbation(W, b, xb64, yb_c, norm)
    size = size.to(xb.device)
    names = np.array(["linear"] * xb.shape[0], dtype=object)
    # witnesses: push the margin past the boundary by a growing relative overshoot until the float32
    # point is misclassified by the float32 model and its float64 twin
    xa = xb.clone()
    todo = torch.isfinite(size)
    for over in (1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3):
        if not bool(todo.any()):
            break
        _, cand, _ = affine_min_perturbation(W, b, xb64, yb_c, norm, overshoot=over)
        cand = cand.float().to(xb.device)
        ok = twin.wrong(cand, yb, mask=todo)
        xa[ok] = cand[ok]
        todo &= ~ok
    if bool(todo.any()):  # no float32 witness near the exact point: mark it
        names[todo.cpu().numpy()] = "linear (no float32 witness)"
    return size, xa, names


def _exact_batch(layers, xb, yb, sel, size, xa, names, norm: str, time_limit: float, log: dict, workers: int = 1,
                 bar=None):
    """After the attack, the MIP per point: the attack's (size, xa, names) updated in place where the
    MIP is optimal; the attack distance and the MIP's lower bound recorded in ``log`` by point index.
    ``workers`` points are solved at once (threads: HiGHS releases the GIL while it solves, one HiGHS
    thread each); ``bar`` advances by one as each point finishes."""
    from concurrent.futures import ThreadPoolExecutor

    L = [(W.numpy(), b.numpy()) for W, b in layers]
    upper = [float(v) for v in size]

    def solve(k):
        return mip_min_perturbation(L, xb[k].double().cpu().numpy(), int(yb[k]), norm, upper=upper[k],
                                    time_limit=time_limit)

    n = sel.numel()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, n))) as pool:
        futures = [pool.submit(solve, k) for k in range(n)]
        for k, fut in enumerate(futures):  # in point order, so the updates do not depend on timing
            r = fut.result()
            _apply_mip(r, k, sel, size, xa, names, norm, log, xb.device)
            if bar is not None:
                bar.update(1)


def _apply_mip(r, k, sel, size, xa, names, norm, log, device):
    log["attack"].setdefault(norm, {})[int(sel[k])] = float(size[k])
    log["lower"].setdefault(norm, {})[int(sel[k])] = float(r["lower"])
    if r["status"] == "optimal" and math.isfinite(r["distance"]):
        # optimal up to HiGHS' tolerances: when the attack's verified witness is as small, it is kept
        # (it is the optimum to within those tolerances)
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


def _one_norm(model, twin: _Twin, xf, y, wrong, norm: str, use: str, layers, opts: dict, log: dict, bar):
    """Distances in one norm, batch by batch -> (d (N,) float64, attack names (N,), adversarials (N, D));
    misclassified points get 0 and "misclassified"."""
    N, bs = xf.shape[0], opts["batch_size"]
    d = np.zeros(N)
    a = np.array(["misclassified"] * N, dtype=object)
    adv = xf.clone()
    for s in range(0, N, bs):
        e = min(N, s + bs)
        sel = torch.nonzero(~wrong[s:e])[:, 0] + s
        if sel.numel():
            xb, yb = xf[sel], y[sel]
            if use == "linear":
                size, xa, names = _linear_batch(layers, twin, xb, yb, norm)
            else:
                size, xa, names = min_norm_attack(model, xb, yb, norm, input_shape=opts["input_shape"],
                                                  steps=opts["steps"], restarts=opts["restarts"],
                                                  seed=opts["seed"] + s, twin=twin, targets=opts["targets"],
                                                  patience=opts["patience"], polish=opts["polish"])
                names = np.array(names, dtype=object)
                if use == "exact":
                    if bar is not None:  # the points that need no MIP are done; the MIP's advance one by one
                        bar.update(e - s - sel.numel())
                    _exact_batch(layers, xb, yb, sel, size, xa, names, norm, opts["mip_time_limit"], log,
                                 opts["mip_workers"], bar)
            d[sel.cpu().numpy()] = size.double().cpu().numpy()
            a[sel.cpu().numpy()] = names
            adv[sel] = xa.to(adv.dtype)
        if bar is not None and not (use == "exact" and sel.numel()):
            bar.update(e - s)
    return d, a, adv


def _certified_radii(certified, model, x, y, dist: dict, norms, batch_size: int) -> dict:
    """The ``certified`` argument of :func:`curve` -> {norm: (N,) certified radii}."""
    N = x.shape[0]
    if isinstance(certified, dict):
        cert = {}
        for n, r in certified.items():
            if n not in norms:
                raise ValueError(f"certified: norm {n!r} not among {norms}")
            r = np.asarray(r, dtype=np.float64)
            if r.shape != (N,) or np.any(np.isnan(r)) or np.any(r < 0):
                raise ValueError(f"certified[{n!r}] must be (N,) non-negative radii")
            cert[n] = r
        return cert
    if certified == "ibp":
        return ibp_certified_band(model, x, y, dist, norms, batch_size)
    if certified is not None:
        raise ValueError(f"certified must be None, 'ibp' or a dict of radii, got {certified!r}")
    return {}


def curve(model, x, y, norms=("l1", "l2", "linf"), *, method="auto", restarts: int = 2, steps: int = 100,
          targets: int = 3, patience: int | None = 5, polish: int = 100,
          batch_size: int = 256, seed: int = 0, certified=None, label: str = "model", keep_adversarials=False,
          mip_time_limit: float = 60.0, mip_workers: int | None = None, device=None,
          progress: bool = False) -> RobustnessCurve:
    """Minimal adversarial perturbations of ``model`` at (x, y) in each norm -> :class:`RobustnessCurve`.

    model: a torch module mapping (B, *input_shape) images in [0, 1] to logits (fastcert zoo models);
    x: (N, *input_shape) in [0, 1]; y: (N,) labels. Perturbed points stay in [0, 1].
    method: "linear" (exact, affine models only), "attack" (FAB-style: one run from x, up to ``restarts``
    random restarts (the first on every point, each further one only on the points the previous one
    improved by more than 0.1%) and ``targets`` targeted runs towards the runner-up classes, run as one
    batch, ``steps`` steps each, bisection refinement; a point leaves a run once ``patience`` steps in a
    row have not shortened its distance by more than 0.01%, None keeps every point for all steps; then
    ``polish`` steps along the decision boundary from the best point found (FMN's budget rule, 0: none);
    upper bounds on d_p, the smallest over all runs kept and its run logged in ``.attacks``),
    "exact" (after the attack, a mixed-integer program solved by HiGHS: MILPs for l1 and linf, an
    outer-approximation sequence of MILPs for l2 that stops when the proven lower bound is within 1e-4
    relative of the best point; the lower bounds are in ``.meta["mip_lower"]``; small ReLU nets;
    ``mip_workers`` points at once, default one per CPU; ``progress`` advances per point), "auto".
    certified: None, "ibp" (the largest IBP-certified linf radius, by bisection to 1e-4, see
    :func:`ibp_certified_band`; also a valid lower bound for l1 and l2 since those balls lie inside the
    linf ball), or a dict {norm: (N,) radii} you computed (e.g. smoothing).
    """
    norms = parse_norms(norms)
    x, y = _check_inputs(model, x, y, method, {"restarts": (restarts, 0), "steps": (steps, 1),
                                               "batch_size": (batch_size, 1), "targets": (targets, 0),
                                               "polish": (polish, 0)})
    if patience is not None:
        patience = check_int("patience", patience, 1)
    mip_workers = (os.cpu_count() or 1) if mip_workers is None else check_int("mip_workers", mip_workers, 1)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    model = model.eval()
    x, y = x.float().to(device), y.long().to(device)
    N, input_shape = x.shape[0], tuple(x.shape[1:])
    with torch.no_grad():
        C = model(x[:1]).shape[1]
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(f"y must hold labels in [0, {C})")
    use, layers = _choose_method(model, method, input_shape, device)

    twin = _Twin(model, input_shape, device)
    xf = x.reshape(N, -1)
    with torch.no_grad():
        wrong = torch.cat([model(x[s:s + batch_size]).argmax(1) != y[s:s + batch_size] for s in range(0, N, batch_size)])
    dist, att, advs, meta = {}, {}, {}, {"method": use, "time_s": {}}
    opts = {"batch_size": batch_size, "steps": steps, "restarts": restarts, "seed": seed, "targets": targets,
            "patience": patience, "polish": polish, "mip_workers": mip_workers,
            "input_shape": input_shape, "mip_time_limit": mip_time_limit}
    log = {"attack": {}, "lower": {}}  # method="exact": per norm, the attack distance / MIP lower bound per point
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=N * len(norms), desc=f"curve ({use})", unit="pt")
    for norm in norms:
        t0 = time.perf_counter()
        dist[norm], att[norm], adv = _one_norm(model, twin, xf, y, wrong, norm, use, layers, opts, log, bar)
        if keep_adversarials:
            advs[norm] = adv.reshape(N, *input_shape).cpu()
        meta["time_s"][norm] = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if use == "exact":
        for key, name in (("attack", "attack_distances"), ("lower", "mip_lower")):
            meta[name] = {n: np.array([v.get(i, dist[n][i]) for i in range(N)]) for n, v in log[key].items()}
    cert = _certified_radii(certified, model, x, y, dist, norms, batch_size)
    return RobustnessCurve(norms, dist, att, cert, label, meta, advs)
