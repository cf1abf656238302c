"""Certified-accuracy tables and plots from certification logs: ours and the original papers'
(Cohen et al.'s ``certify`` output, time in seconds or H:MM:SS; Kumar et al.'s confidence logs; our
extra ``radius_<norm>`` columns), read by :func:`fastcert.io.readers.read_log`.

certified accuracy at r = fraction of logged points that are correct and have radius >= r
(Cohen et al.'s ``analyze.py``); average certified radius (ACR) = mean of radius * correct.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fastcert.io.readers import read_log

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def _need(log, *names):
    for n in names:
        if n not in log:
            raise ValueError(f"{log.get('_path', 'log')}: no column {n!r}")


def certified_accuracy(log: dict, radii=DEFAULT_RADII, column: str = "radius") -> np.ndarray:
    """Fraction of points correct with ``column`` >= r, for each r."""
    _need(log, "correct", column)
    correct = log["correct"].astype(bool)
    rad = log[column].astype(np.float64)
    n = max(log["_n"], 1)
    return np.array([float(np.sum(correct & (rad >= float(r)))) / n for r in radii])


def average_certified_radius(log: dict, column: str = "radius") -> float:
    _need(log, "correct", column)
    rad = log[column].astype(np.float64)
    return float(np.mean(np.where(log["correct"].astype(bool), rad, 0.0))) if log["_n"] else 0.0


def summary(log: dict) -> dict:
    out = {"points": log["_n"]}
    if "predict" in log:
        out["abstain"] = float(np.mean(log["predict"] == -1)) if log["_n"] else 0.0
    if "correct" in log:
        out["accuracy"] = float(np.mean(log["correct"])) if log["_n"] else 0.0
    if "time" in log:
        out["mean_time_s"] = float(np.mean(log["time"])) if log["_n"] else 0.0
    if "n_used" in log:
        out["mean_n_used"] = float(np.mean(log["n_used"])) if log["_n"] else 0.0
    return out


def is_confidence_log(log: dict) -> bool:
    return any(k.startswith("exp_cdf_") for k in log if isinstance(k, str))


def format_table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[c if isinstance(c, str) else (f"{c:.4f}" if isinstance(c, float) else str(c)) for c in r]
                        for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)


def analyze(paths, radii=DEFAULT_RADII, column: str = "radius", plot=None, labels=None) -> str:
    """Certified accuracy at ``radii`` and ACR for each log; returns the table as text and, with
    ``plot`` (a path), draws certified accuracy against radius, one curve per log."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    radii = [float(r) for r in radii]
    if any(not math.isfinite(r) or r < 0 for r in radii):
        raise ValueError("radii must be finite and >= 0")
    logs = [read_log(p) for p in paths]
    labels = list(labels) if labels else [Path(p).name for p in paths]
    header = ["log", "points", "acc"] + [f"r={r:g}" for r in radii] + ["ACR"]
    rows = []
    for lab, lg in zip(labels, logs):
        if is_confidence_log(lg):
            rows.append([lab, lg["_n"], float(np.mean(lg["correct"]))] + ["-"] * len(radii) + ["-"])
            continue
        acc = certified_accuracy(lg, radii, column)
        rows.append([lab, lg["_n"], float(np.mean(lg["correct"])) if lg["_n"] else 0.0]
                    + [float(a) for a in acc] + [average_certified_radius(lg, column)])
    text = format_table(rows, header)
    if plot:
        have = [(lab, lg) for lab, lg in zip(labels, logs) if column in lg]
        if not have:
            raise ValueError(f"no log has a {column!r} column to plot")
        plot_curves([lg for _, lg in have], [lab for lab, _ in have], plot, column=column)
    return text


def forward_passes(paths) -> str:
    """One line per log that has an ``n_used`` column: the forward passes of the run (selection
    included) next to what fixed n would have used on the same points (n0 + n per point, from the
    log's settings sidecar ``<log>.json``; unknown without it)."""
    import json

    if isinstance(paths, (str, Path)):
        paths = [paths]
    lines = []
    for p in paths:
        lg = read_log(p)
        if "n_used" not in lg:
            continue
        used = int(np.sum(lg["n_used"].astype(np.int64))) if lg["_n"] else 0
        meta = Path(str(p) + ".json")
        line = f"{Path(p).name}: forward passes {used:,} over {lg['_n']} points"
        try:
            settings = json.loads(meta.read_text())
            fixed = int(lg["_n"]) * (int(settings["n0"]) + int(settings["n"]))
            line += f"; fixed n = {settings['n']:,} would use {fixed:,} ({fixed / max(used, 1):.1f}x)"
        except (OSError, ValueError, KeyError, TypeError):
            line += "; fixed n unknown (no settings sidecar with n0 and n)"
        lines.append(line)
    return "\n".join(lines)


def plot_curves(logs, labels, path, column="radius", title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for lab, lg in zip(labels, logs):
        rad = lg[column].astype(np.float64)
        finite = rad[np.isfinite(rad)]
        rmax = float(finite.max()) if finite.size else 1.0
        grid = np.linspace(0, max(rmax, 1e-6) * 1.05, 300)
        ax.plot(grid, certified_accuracy(lg, grid, column), label=lab)
    ax.set_xlabel(f"{column}")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_compare(paths, out_prefix, labels=None, norms=("l1", "l2", "linf")) -> list[str]:
    """One figure per norm (columns radius_<norm>), one curve per log: the 'which noise certifies the
    most in which norm' comparison. Returns the written paths."""
    logs = [read_log(p) for p in paths]
    labels = list(labels) if labels else [Path(p).name for p in paths]
    written = []
    for nm in norms:
        col = f"radius_{nm}"
        have = [(lab, lg) for lab, lg in zip(labels, logs) if col in lg]
        if not have:
            continue
        out = f"{out_prefix}_{nm}.png"
        plot_curves([lg for _, lg in have], [lab for lab, _ in have], out, column=col, title=f"certified in {nm}")
        written.append(out)
    if not written:
        raise ValueError("no log has radius_<norm> columns to compare")
    return written


def plot_tradeoff(paths, out, labels=None, column: str = "radius") -> str:
    """Clean accuracy against average certified radius, one point per log (the accuracy-robustness
    trade-off of a sweep, e.g. ACERT over kappa). Returns the table as text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [read_log(p) for p in paths]
    labels = list(labels) if labels else [Path(p).name for p in paths]
    acc = [float(np.mean(lg["correct"])) if lg["_n"] else 0.0 for lg in logs]
    acr = [average_certified_radius(lg, column) for lg in logs]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(acr, acc, "o-")
    for a, r, lab in zip(acc, acr, labels):
        ax.annotate(lab, (r, a), fontsize=8, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("average certified radius")
    ax.set_ylabel("clean accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return format_table([[lab, a, r] for lab, a, r in zip(labels, acc, acr)], ["log", "clean acc", "ACR"])
