"""Figures of certified confidence and class distances (matplotlib, Agg backend; written to a file)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confidence(logs, path, labels=None) -> str:
    """Mean certified confidence bound (correctly classified points) against radius, CDF-based and
    expectation-based, one pair of curves per log (``fastcert.io.readers.ConfidenceLog``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels = list(labels) if labels else [Path(lg.path).name for lg in logs]
    for lab, lg in zip(labels, logs):
        ok = np.asarray(lg.correct, dtype=bool)
        if not ok.any():
            continue
        ax.plot(lg.radii, lg.cdf[ok].mean(0), "-o", ms=3, label=f"{lab} (CDF-based)")
        ax.plot(lg.radii, lg.exp[ok].mean(0), "--", label=f"{lab} (expectation-based)")
    ax.set_xlabel("l2 radius")
    ax.set_ylabel("mean certified confidence (correct points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_class_distances(out: dict, norms, path, name: str, reference: str) -> str:
    """Histograms of the inter- and intra-class distances of ``fastcert.class_distances`` per norm, with
    half the smallest inter-class distance marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.4), squeeze=False)
    for ax, n in zip(axes[0], norms):
        inter, intra = out[n]["inter"], out[n]["intra"]
        fin = np.concatenate([inter[np.isfinite(inter)], intra[np.isfinite(intra)]])
        bins = np.linspace(0, fin.max() if fin.size else 1.0, 60)
        ax.hist(inter[np.isfinite(inter)], bins=bins, alpha=0.6, label="inter-class (other label)")
        ax.hist(intra[np.isfinite(intra)], bins=bins, alpha=0.6, label="intra-class (same label)")
        ax.axvline(inter.min() / 2, color="k", ls="--", lw=1, label="half the min inter distance")
        ax.set_xlabel(f"{n} distance to nearest {reference} point")
        ax.set_title(f"{name}, {n}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
