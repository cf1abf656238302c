"""The figures of fastcert.analysis.plots are written as PNG files and draw what they are given."""
from __future__ import annotations

import numpy as np

from fastcert.analysis.plots import plot_class_distances, plot_confidence
from fastcert.io.readers import read_kumar_log

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_confidence_writes_a_png(tmp_path):
    log = tmp_path / "conf.tsv"
    log.write_text("idx\tlabel\tpredict\texp_cdf_00\texp_cdf_50\texp_00\texp_50\tcorrect\ttime\n"
                   "0\t1\t1\t0.9\t0.7\t0.85\t0.6\t1\t0:00:01.000000\n"
                   "1\t2\t0\t0.8\t0.5\t0.75\t0.4\t0\t0:00:01.000000\n")
    logs = [read_kumar_log(log)]
    assert list(logs[0].radii) == [0.0, 0.5]
    out = plot_confidence(logs, tmp_path / "c.png", labels=["run"])
    data = (tmp_path / "c.png").read_bytes()
    assert out.endswith("c.png") and data.startswith(PNG) and len(data) > 1000


def test_plot_class_distances_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    out = {n: {"inter": rng.random(20) + 1, "intra": rng.random(20)} for n in ("l2", "linf")}
    plot_class_distances(out, ("l2", "linf"), tmp_path / "d.png", "digits", "train")
    data = (tmp_path / "d.png").read_bytes()
    assert data.startswith(PNG) and len(data) > 1000
