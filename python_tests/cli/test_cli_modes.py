"""certify's other modes (top-k, confidence, sequential, adaptive), distributed certification under
torchrun (gloo, 2 processes) and analyze's readers for the original papers' files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastcert.io.readers import read_log
from fastcert.cli import main

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
BASE = ["--n0", "20", "--n", "600", "--alpha", "0.01", "--batch", "300", "--quiet", "--seed", "3"]


def _run(*args):
    return main([str(a) for a in args])


def test_topk_log(digits_ckpt, tmp_path):
    out = tmp_path / "topk.tsv"
    assert _run("certify", "--model", digits_ckpt, *BASE, "--max", "3", "--top-k", "3", "--out", out) == 0
    lg = read_log(out)
    assert lg["_n"] == 3 and set(lg["k"]) == {3}
    for pred, label, correct, radius in zip(lg["predict"], lg["label"], lg["correct"], lg["radius"]):
        classes = [int(c) for c in str(pred).split(",")] if str(pred) != "-1" else []
        assert len(classes) in (0, 3)
        assert correct == int(label in classes and radius > 0)


def test_confidence_log_and_analyze(digits_ckpt, tmp_path, capsys):
    out = tmp_path / "conf_margin.tsv"
    assert _run("certify", "--model", digits_ckpt, *BASE, "--max", "3", "--confidence-measure", "margin",
                "--radii", "0,0.25,0.5", "--out", out) == 0
    lg = read_log(out)
    assert [c for c in lg if str(c).startswith("exp")] == ["exp_cdf_00", "exp_cdf_25", "exp_cdf_50", "exp_00",
                                                           "exp_25", "exp_50"]
    assert np.all(lg["exp_cdf_00"] >= lg["exp_cdf_25"]) and np.all(lg["exp_cdf_25"] >= lg["exp_cdf_50"])
    assert _run("analyze", out) == 0
    assert "certified accuracy at confidence" in capsys.readouterr().out


def test_sequential_and_adaptive_logs(digits_ckpt, tmp_path):
    out = tmp_path / "seq.tsv"
    assert _run("certify", "--model", digits_ckpt, *BASE[:2], "--n", "4000", *BASE[4:], "--max", "3",
                "--sequential", "--radii", "0.1,0.3", "--out", out) == 0
    lg = read_log(out)
    assert "certified_0.1" in lg and "certified_0.3" in lg
    assert np.all(lg["n_used"] <= 20 + 4000)
    assert np.all(lg["certified_0.3"] <= lg["certified_0.1"])  # a larger radius is never easier
    out2 = tmp_path / "adaptive.tsv"
    assert _run("certify", "--model", digits_ckpt, *BASE[:2], "--n", "4000", *BASE[4:], "--max", "3", "--adaptive",
                "--out", out2) == 0
    assert np.all(read_log(out2)["n_used"] <= 4020)


def test_mode_conflicts(digits_ckpt, tmp_path, capsys):
    assert _run("certify", "--model", digits_ckpt, *BASE, "--top-k", "2", "--sequential", "--radii", "0.1",
                "--out", tmp_path / "x.tsv") == 2
    assert "choose one" in capsys.readouterr().err
    assert _run("certify", "--model", digits_ckpt, *BASE, "--sequential", "--out", tmp_path / "y.tsv") == 2
    assert "--radii" in capsys.readouterr().err


def test_torchrun_two_processes_equal_single_process(digits_ckpt, tmp_path):
    """Two gloo ranks shard the indices; the merged log equals a one-process run (all columns but time)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["certify", "--model", str(digits_ckpt), "--N0", "20", "--N", "500", "--alpha", "0.01", "--batch", "250",
            "--quiet", "--seed", "9", "--max-points", "5", "--skip", "2"]
    dist_out = tmp_path / "dist.tsv"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                        "-m", "fastcert.cli", *args, "--out", str(dist_out)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "dist.tsv.part0of2").exists() and (tmp_path / "dist.tsv.part1of2").exists()
    single = tmp_path / "single.tsv"
    assert main(args + ["--out", str(single)]) == 0

    def content(p):
        return [ln.split("\t")[:5] + ln.split("\t")[6:] for ln in Path(p).read_text().splitlines()]

    assert content(dist_out) == content(single)
    assert [row[0] for row in content(single)[1:]] == ["0", "2", "4", "6", "8"]


def test_merge_via_analyze(digits_ckpt, tmp_path, monkeypatch):
    args = ["certify", "--model", str(digits_ckpt), *BASE, "--max", "4"]
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.delenv("MASTER_ADDR", raising=False)
        assert main(args + ["--out", str(tmp_path / "m.tsv")]) == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert not (tmp_path / "m.tsv").exists()  # without a process group no rank merges on its own
    assert main(["analyze", str(tmp_path / "m.tsv"), "--merge", "2"]) == 0
    assert [int(i) for i in read_log(tmp_path / "m.tsv")["idx"]] == [0, 1, 2, 3]


def test_analyze_topk_counts_and_thresholds(capsys, tmp_path):
    path = SHARED / "jia_topk_counts_cifar10_sigma0.25.txt"
    if not path.exists():
        pytest.skip("shared data not present")
    assert main(["analyze", "--topk-counts", str(path), "--k", "1", "--radii", "0,0.25"]) == 0
    out = capsys.readouterr().out
    assert "certified top-1 accuracy" in out
    # l0 thresholds + a log with p_lower
    thr = tmp_path / "thr.tsv"
    assert main(["threshold", "--keep", "0.8", "--K", "1", "--max-radius", "5", "--out", str(thr)]) == 0
    log = tmp_path / "l0.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\tp_lower\n"
                   "0\t1\t1\t2\t1\t0:00:01.0\t0.99\n1\t2\t2\t0\t1\t0:00:01.0\t0.6\n2\t3\t1\t0\t0\t0:00:01.0\t0.99\n")
    capsys.readouterr()
    assert main(["analyze", str(log), "--thresholds", str(thr), "--radii", "0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "r=0: 0.6667" in out


def test_discrete_noise_end_to_end(tmp_path):
    """Digits lie on the grid {0, 1/16, ..., 1}: train with discrete noise (K = 16), certify, and check
    every logged l0 radius against the exact thresholds: the largest r with threshold(r) < p_lower."""
    import fastcert

    ckpt = tmp_path / "d.pt"
    assert _run("train", "--arch", "cnn_small", "--method", "discrete", "--keep", "0.5", "--K", "16",
                "--epochs", "15", "--lr", "3e-3", "--quiet", "--out", ckpt) == 0
    out = tmp_path / "l0.tsv"
    assert _run("certify", "--model", ckpt, "--noise", "discrete", "--n0", "50", "--n", "2000", "--alpha", "0.01",
                "--max", "6", "--quiet", "--out", out) == 0
    lg = read_log(out)
    radii = lg["radius"]
    assert np.all(radii == np.round(radii)) and np.all(radii >= 0)
    assert np.sum(lg["predict"] >= 0) >= 3
    for p, r, pred in zip(lg["p_lower"], radii, lg["predict"]):
        if pred < 0:
            assert p <= 0.5 + 1e-8
            continue
        t = fastcert.threshold("0.5", 16, range(int(r) + 2))
        assert p > t[int(r)] and not p > t[int(r) + 1]


def test_discrete_radius_of_a_constant_classifier():
    """A base classifier that always says 0: p_lower = alpha^(1/n) exactly (Clopper-Pearson with all
    n samples in class 0), and the certified l0 radius is the largest r whose exact threshold is below it."""
    import torch

    import fastcert

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(x.shape[0]), torch.zeros(x.shape[0])], 1)

    sm = fastcert.Smooth(Const(), 2, fastcert.Discrete("0.5", 16))
    c = sm.certify(torch.full((64,), 0.5), 10, 2000, 0.01, 500, seed=0)
    assert c.p_lower == pytest.approx(0.01 ** (1 / 2000), rel=1e-12)
    t = fastcert.threshold("0.5", 16, range(6))
    want = max(r for r in range(6) if t[r] < c.p_lower)
    assert c.radius == want == 3
    assert c.radii["l0"] == 3 and c.radii["l1"] == pytest.approx(4 / 16)


def test_autocast_is_recorded_and_cuda_graph_needs_cuda(digits_ckpt, tmp_path):
    out = tmp_path / "bf16.tsv"
    assert _run("certify", "--model", digits_ckpt, *BASE, "--max", "2", "--autocast", "bfloat16", "--out", out) == 0
    assert read_log(out)["_n"] == 2
    sidecars = [p for p in tmp_path.iterdir() if p.name != "bf16.tsv" and p.name.startswith("bf16")]
    assert any('"autocast": "bfloat16"' in p.read_text() for p in sidecars), sidecars
    assert _run("certify", "--model", digits_ckpt, *BASE, "--max", "2", "--cuda-graph", "--out",
                tmp_path / "g.tsv") == 2
