"""Figures of robustness curves: the one module of fastcert.robustness that imports matplotlib (lazily,
inside :func:`plot_curves`, so importing fastcert never pulls it in)."""
from __future__ import annotations

import numpy as np


def plot_curves(curves, path=None, axes=None, max_eps=None):
    """One panel per norm of ``curves[0]``: each curve's attack curve (a lower bound on the true curve, or
    the curve itself for exact methods) and, where present, its certified curve (an upper bound), the
    band between them shaded: it holds the true curve. ``curves``: RobustnessCurve objects; ``axes``: one
    matplotlib axis per norm to draw into (default: a new figure); ``max_eps``: the right end of the eps
    axis (default: 1.1 x the 99% quantile of the finite distances). Saved to ``path`` when given
    (Agg backend). Returns the matplotlib figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    norms = list(curves[0].norms)
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
