"""Reproducibility (issue 10): same seed, same device -> identical outputs, for every CLI subcommand and
the main Python API entry points.

Each command runs twice in this process with the same ``--seed`` into two folders; between the runs the
global RNGs (torch, numpy, random) are scrambled, so an output that depends on leftover global RNG state
(instead of the seed alone) fails here. What is compared:

* byte for byte: train checkpoints, threshold tables, curve CSV files, analyze plots and tables, the
  settings sidecars (``<log>.json``) of certify/predict, and stdout (output paths replaced by a
  placeholder; in train's per-epoch lines the wall-clock "(2.1s)" is stripped);
* certify / predict logs: every column except ``time`` (wall-clock seconds per point), the only
  wall-clock field in them; it is stripped, everything else must match byte for byte;
* ``.npz`` outputs (curve, distances): byte for byte too (written with a fixed zip timestamp by
  ``fastcert.models.zoo.save_npz``), and array by array;
* bench: see :func:`test_bench`.

A different seed must change the output of every command whose output is random (certify in each mode
but IBP, predict, train, curve), which shows that these checks can fail; the deterministic ones
(threshold, distances, analyze, certify --method ibp, the bench rows' names) must not depend on it.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcert
from fastcert.cli import main
from fastcert.cli.entry import SUBCOMMANDS

_SCRAMBLE = iter(range(1, 10**6))


def scramble():
    """Move every global RNG to a new state (and use it), as earlier unrelated work in a process would."""
    k = next(_SCRAMBLE) * 7919
    torch.manual_seed(k)
    np.random.seed(k % 2**32)
    random.seed(k)
    torch.rand(3), np.random.rand(3), random.random()


def run(capsys, *argv) -> str:
    """``python -m fastcert.cli *argv`` in this process, after a scramble; returns its stdout."""
    scramble()
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def table(path):
    """A TSV log as (header, rows) without the wall-clock ``time`` column."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    keep = [i for i, h in enumerate(header) if h != "time"]
    assert len(keep) == len(header) - 1, "every log has exactly one wall-clock column, time"
    return [header[i] for i in keep], [[r.split("\t")[i] for i in keep] for r in lines[1:]]


def npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small MLP trained with Gaussian noise on digits (about a second)."""
    from fastcert.training.loop import train

    path = tmp_path_factory.mktemp("repro") / "mlp.pt"
    train("mlp", fastcert.load_dataset("digits", "train"), method="gaussian", sigma=0.25, epochs=2, seed=0,
          out=path, progress=False, log=lambda *_: None)
    return path


# which test below covers each subcommand: a new subcommand without a reproducibility test fails here
COVERED = {"certify": "test_certify", "predict": "test_predict", "analyze": "test_analyze",
           "threshold": "test_threshold", "curve": "test_curve", "distances": "test_distances",
           "train": "test_train", "bench": "test_bench"}


def test_every_subcommand_is_covered():
    assert set(SUBCOMMANDS) == set(COVERED)
    assert all(callable(globals()[name]) for name in COVERED.values())


# ------------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("method", ["gaussian", "ibp"])
def test_train(method, tmp_path, capsys):
    def once(folder, seed):
        out = tmp_path / folder / "m.pt"
        text = run(capsys, "train", "--arch", "mlp", "--method", method, "--epochs", "1", "--max-train", "300",
                   "--batch", "64", "--seed", seed, "--quiet", "--out", out)
        return out.read_bytes(), re.sub(r"\(\d+(\.\d+)?s\)", "(wall-clock)", text.replace(str(out), "OUT"))

    a, b, c = once("a", 3), once("b", 3), once("c", 4)
    assert a[0] == b[0]  # the checkpoint, byte for byte (weights, optimizer state, config)
    assert a[1] == b[1]  # the printed losses and accuracies
    assert a[0] != c[0]  # another seed: other initial weights and batches


CERTIFY_MODES = {
    "gaussian": ["--sigma", "0.25"],
    "laplace": ["--noise", "laplace", "--sigma", "0.25"],
    "uniform": ["--noise", "uniform", "--sigma", "0.5"],
    "discrete": ["--noise", "discrete", "--keep", "0.8", "--K", "16"],  # digits lie on the 1/16 grid
    "top-k": ["--top-k", "2"],
    "confidence": ["--confidence-measure", "margin", "--radii", "0.1,0.25"],
    "sequential": ["--sequential", "--radii", "0.1,0.2"],
    "adaptive": ["--adaptive"],
    "ibp": ["--method", "ibp", "--eps", "0.01,0.05"],
}


@pytest.mark.parametrize("mode", sorted(CERTIFY_MODES))
def test_certify(mode, ckpt, tmp_path, capsys):
    def once(folder, seed):
        out = tmp_path / folder / "log.tsv"
        run(capsys, "certify", "--model", ckpt, *CERTIFY_MODES[mode], "--n0", "20", "--n", "200", "--alpha", "0.05",
            "--batch", "100", "--skip", "40", "--max", "4", "--seed", seed, "--quiet", "--out", out)
        meta = Path(str(out) + ".json")
        return table(out), meta.read_bytes() if meta.exists() else None

    a, b, c = once("a", 7), once("b", 7), once("c", 8)
    assert len(a[0][1]) == 4
    assert a == b
    if mode == "ibp":
        assert a[0] == c[0]  # IBP is deterministic: the seed plays no part
    else:
        assert a[0][1] != c[0][1]  # Monte Carlo: another seed, other counts and bounds


def test_predict(ckpt, tmp_path, capsys):
    def once(folder, seed):
        out = tmp_path / folder / "pred.tsv"
        run(capsys, "predict", "--model", ckpt, "--sigma", "1.0", "--n", "30", "--alpha", "0.2", "--max", "12",
            "--seed", seed, "--quiet", "--out", out)
        return table(out), Path(str(out) + ".json").read_bytes()

    a, b, c = once("a", 7), once("b", 7), once("c", 8)
    assert a == b
    assert a[0][1] != c[0][1]  # heavy noise and few samples: the answers (or abstentions) change


def test_analyze(ckpt, tmp_path, capsys):
    log = tmp_path / "log.tsv"
    run(capsys, "certify", "--model", ckpt, "--n0", "20", "--n", "300", "--max", "6", "--quiet", "--out", log)

    def once(folder, seed):
        png = tmp_path / folder / "acc.png"
        png.parent.mkdir()
        text = run(capsys, "analyze", log, "--radii", "0,0.1,0.2", "--plot", png)
        return text.replace(str(png), "PNG"), png.read_bytes()

    a, b, c = once("a", 1), once("b", 1), once("c", 2)
    assert a == b == c  # no randomness in it (analyze has no --seed: test_cli.test_flags_only_where_used)


def test_threshold(tmp_path, capsys):
    def once(folder, seed):
        out = tmp_path / folder / "thr.tsv"
        out.parent.mkdir()
        run(capsys, "threshold", "--keep", "0.8", "--K", "3", "--max-radius", "6", "--exact", "--out", out)
        return out.read_bytes()

    assert once("a", 1) == once("b", 1) == once("c", 2)  # exact arithmetic: no seed involved (and no --seed)


def test_curve(ckpt, tmp_path, capsys):
    def once(folder, seed, suffix):
        out = tmp_path / folder / f"c{suffix}"
        text = run(capsys, "curve", "--model", ckpt, "--norms", "l2", "--max", "4", "--batch", "2",
                   "--restarts", "1", "--steps", "10", "--seed", seed, "--quiet", "--out", out)
        return out, text

    (a_csv, ta), (b_csv, tb), (c_csv, _) = once("a", 5, ".csv"), once("b", 5, ".csv"), once("c", 6, ".csv")
    assert a_csv.read_bytes() == b_csv.read_bytes() and ta == tb
    assert a_csv.read_bytes() != c_csv.read_bytes()  # the random restarts start elsewhere
    # .npz: byte for byte (fixed zip timestamps) and the same arrays
    (a_npz, _), (b_npz, _) = once("a", 5, ".npz"), once("b", 5, ".npz")
    assert a_npz.read_bytes() == b_npz.read_bytes()
    za, zb = npz(a_npz), npz(b_npz)
    assert same_arrays(za, zb)
    assert np.array_equal(za["d_l2"], fastcert.robustness.curves.load_curve(a_csv).distances["l2"])


def test_distances(tmp_path, capsys):
    def once(folder, seed):
        out = tmp_path / folder / "d.npz"
        text = run(capsys, "distances", "--norms", "l1,l2,linf", "--max", "60", "--max-reference", "300",
                   "--quiet", "--out", out)
        return npz(out), text, out.read_bytes()

    (a, ta, ba), (b, tb, bb), (c, tc, bc) = once("a", 1), once("b", 1), once("c", 2)
    assert ba == bb == bc
    assert same_arrays(a, b) and same_arrays(a, c)  # exact nearest neighbours: no seed involved
    assert ta == tb == tc


def test_bench(tmp_path, capsys, monkeypatch):
    """bench's output is wall-clock timings, which no seed makes reproducible: the timing fields (every
    key ending in ``_s`` or ``_rate``) are stripped and everything else (which rows, their names and
    units, the floor flags) must match across two runs with different seeds. To keep this cheap the
    timing loop (fastcert.bench.workloads.best_of) is cut to a single call of each workload; the workloads, and
    bench's own checks of our results against the references, still run."""
    import fastcert.bench.workloads as bench

    monkeypatch.setattr(bench, "best_of", lambda fn, repeats=5, min_time=0.2: (fn(), 1.0)[1])

    def once(folder, seed):
        out = tmp_path / folder / "bench.json"
        out.parent.mkdir()
        run(capsys, "bench", "--seed", seed, "--out", out)
        rows = json.loads(out.read_text())
        return [{k: v for k, v in r.items() if not k.endswith(("_s", "_rate"))} for r in rows]

    a, b = once("a", 0), once("b", 1)
    assert len(a) >= 7 and all("benchmark" in r and "unit" in r for r in a)
    assert a == b  # two runs, two seeds: the same rows (so, a fortiori, for the same seed)


# ------------------------------------------------------------------------------------ the Python API
def test_api_smooth(ckpt):
    model, meta = fastcert.load_checkpoint(ckpt)
    x = fastcert.load_dataset("digits", "test").x[3]
    sm = fastcert.Smooth(model, meta["num_classes"], fastcert.Gaussian(0.5))

    def calls(seed):
        scramble()
        c = sm.certify(x, 20, 300, 0.01, 128, seed=seed)
        t = sm.certify_topk(x, 2, 20, 300, 0.01, 128, seed=seed)
        conf = fastcert.certify_confidence(sm, x, 20, 300, 0.01, 128, seed=seed, radii=[0.1, 0.2])
        p = sm.predict(x, 300, 0.01, 128, seed=seed)
        return (c.prediction, c.radius, c.radii, list(c.counts), c.p_lower, c.n_used, t.prediction, t.p_lower,
                list(t.counts), list(conf.cdf), list(conf.expectation), p)

    assert calls(11) == calls(11)
    assert calls(11) != calls(12)


def test_api_train():
    data = fastcert.load_dataset("digits", "train").subset(range(300))

    def weights(seed):
        scramble()
        m = fastcert.train("mlp", data, method="gaussian", epochs=1, batch_size=64, seed=seed, progress=False,
                           log=lambda *_: None)
        return {k: v.clone() for k, v in m.state_dict().items()}

    a, b, c = weights(2), weights(2), weights(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_api_curve_distances_threshold(ckpt):
    model, _ = fastcert.load_checkpoint(ckpt)
    te = fastcert.load_dataset("digits", "test")

    def curve(seed):
        scramble()
        c = fastcert.curve(model, te.x[:5], te.y[:5], ("l2",), restarts=1, steps=10, batch_size=5, seed=seed)
        return c.distances["l2"], list(c.attacks["l2"])

    (da, aa), (db, ab), (dc, _) = curve(1), curve(1), curve(4)
    assert np.array_equal(da, db) and aa == ab
    assert not np.array_equal(da, dc)
    d1 = fastcert.class_distances(te.x[:50], te.y[:50])
    d2 = fastcert.class_distances(te.x[:50], te.y[:50])
    assert all(np.array_equal(d1[n][k], d2[n][k]) for n in d1 for k in ("inter", "intra"))
    assert fastcert.threshold("0.8", 3, range(5)) == fastcert.threshold("0.8", 3, range(5))
