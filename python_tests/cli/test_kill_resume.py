"""Interruption (issue 10, item 4): SIGKILL `certify`, `train` and `curve` while they work, rerun the
same command, and compare with a run that was never interrupted.

The kill moment: poll the output until the process has finished at least 2 rows (certify), 2 epochs
(train) or 1 batch of points (curve), then wait a random extra moment (seeded) and SIGKILL, so the kill
lands anywhere in the following rows / epochs / batches, mid-write included, yet never before the
process has started writing.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcert.cli import main
from fastcert.models.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _start(args, cwd):
    with open(Path(cwd) / "killed.stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fastcert.cli", *map(str, args)], cwd=cwd, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
    proc.stderr_path = Path(cwd) / "killed.stderr"
    return proc


def _kill_when(proc, ready, extra_s, timeout=600.0):
    """Poll ready() until true, sleep extra_s, SIGKILL. Returns False if the process ended first.

    The timeout is generous: on a loaded machine (several test runs sharing 2 cores) the first epochs of
    `train` alone can take minutes; a process that never writes anything still fails, with its stderr."""
    t0 = time.time()
    while not ready():
        if proc.poll() is not None:
            return False
        if time.time() - t0 > timeout:
            proc.kill()
            proc.wait(timeout=60)
            err = proc.stderr_path.read_text()[-2000:]
            raise AssertionError(f"the process did not reach the kill point within {timeout:.0f}s "
                                 f"(never started writing, or the machine is overloaded); its stderr: {err!r}")
        time.sleep(0.05)
    time.sleep(extra_s)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return True


def _rows(path):
    lines = Path(path).read_text().splitlines()
    return lines[0].split("\t"), [ln.split("\t") for ln in lines[1:]]


def _without_time(header, rows):
    t = header.index("time")
    return [r[:t] + r[t + 1:] for r in rows]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from fastcert.data import load_dataset
    from fastcert.training.loop import train

    path = tmp_path_factory.mktemp("kr") / "digits_mlp.pt"
    train("mlp", load_dataset("digits", "train"), method="gaussian", sigma=0.25, epochs=3, seed=0, out=path,
          progress=False, log=lambda *_: None)
    return path


def test_certify_killed_and_resumed(ckpt, tmp_path):
    rng = np.random.default_rng(100)
    args = ["certify", "--model", ckpt, "--sigma", "0.25", "--n0", "20", "--n", "100000", "--alpha", "0.01",
            "--batch", "20000", "--skip", "7", "--max", "5", "--seed", "11", "--quiet"]
    out = tmp_path / "killed.tsv"

    def two_rows():
        return out.exists() and out.read_text().count("\n") >= 3  # header + 2 finished rows

    proc = _start([*args, "--out", out], tmp_path)
    killed = _kill_when(proc, two_rows, float(rng.uniform(0.0, 0.5)))
    before = out.read_bytes()
    finished_before = [ln for ln in before.decode().splitlines()[1:]] if before.endswith(b"\n") else \
        before.decode().splitlines()[1:-1]
    assert len(finished_before) >= 2
    if killed:
        assert len(finished_before) < 5, "the run finished before the kill: make the rows slower"
    # rerun the same command to completion
    r = subprocess.run([sys.executable, "-m", "fastcert.cli", *map(str, args), "--out", out], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    header, rows = _rows(out)
    idx = [int(row[0]) for row in rows]
    assert idx == [0, 7, 14, 21, 28]  # none lost, none duplicated, in order
    assert ["\t".join(x) for x in rows[:len(finished_before)]] == finished_before  # finished rows kept as they were
    # the same log as an uninterrupted run (all columns but time)
    ref = tmp_path / "ref.tsv"
    assert main([*map(str, args), "--out", str(ref)]) == 0
    ref_header, ref_rows = _rows(ref)
    assert ref_header == header
    assert _without_time(header, rows) == _without_time(ref_header, ref_rows)


_SEEN: dict = {}


def _epochs_done(path):
    """The checkpoint's epochs_done, read again only when the file changed (polling must not steal the CPU
    the training process needs)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    if key not in _SEEN:
        try:
            _SEEN[key] = int(read_checkpoint(path)[1]["config"]["epochs_done"])
        except Exception:  # noqa: BLE001 - never torn (atomic rename), but be defensive while polling
            return 0
    return _SEEN[key]


def test_train_killed_and_resumed(tmp_path):
    epochs = 6
    args = ["train", "--arch", "cnn_small", "--method", "gaussian", "--sigma", "0.25", "--epochs", str(epochs),
            "--batch", "4", "--seed", "3", "--quiet"]
    out = tmp_path / "killed.pt"
    proc = _start([*args, "--out", out], tmp_path)
    killed = _kill_when(proc, lambda: _epochs_done(out) >= 2, float(np.random.default_rng(7).uniform(0.0, 0.4)))
    done_at_kill = _epochs_done(out)
    assert done_at_kill >= 2
    if killed:
        assert done_at_kill < epochs, "training finished before the kill: make the epochs slower"
    r = subprocess.run([sys.executable, "-m", "fastcert.cli", *args, "--out", str(out)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    resumed_state, resumed = read_checkpoint(out)
    assert resumed["config"]["epochs_done"] == epochs
    # uninterrupted reference run with the same seed
    ref = tmp_path / "ref.pt"
    assert main([*args, "--out", str(ref)]) == 0
    expected_state, _ = read_checkpoint(ref)
    assert resumed_state.keys() == expected_state.keys()
    for k, v in expected_state.items():
        assert torch.equal(resumed_state[k], v), k


def test_curve_killed_and_resumed(ckpt, tmp_path):
    """`curve --out` saves each finished batch to OUT.rows.tsv; kill it after >= 1 batch, rerun: the rows
    finished before the kill are kept, none is lost or duplicated, and OUT is byte for byte the file of an
    uninterrupted run (CSV output, so the bytes can be compared)."""
    from fastcert.cli.curve import rows_path

    args = ["curve", "--model", ckpt, "--norms", "linf,l2", "--max", "12", "--batch", "2", "--restarts", "1",
            "--steps", "10", "--seed", "5", "--quiet"]
    out = tmp_path / "killed.csv"
    rows = rows_path(out)

    def one_batch():
        return rows.exists() and rows.read_text().count("\n") >= 3  # header + one finished batch of 2 points

    proc = _start([*args, "--out", out], tmp_path)
    killed = _kill_when(proc, one_batch, float(np.random.default_rng(21).uniform(0.0, 0.3)))
    assert killed and not out.exists(), "the run finished before the kill: make the batches slower"
    header, kept = _rows(rows)
    kept = kept if rows.read_bytes().endswith(b"\n") else kept[:-1]  # a torn last line is not a row
    assert 2 <= len(kept) < 12
    r = subprocess.run([sys.executable, "-m", "fastcert.cli", *map(str, args), "--out", out], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.exists() and not rows.exists() and not Path(str(rows) + ".json").exists()
    final = list(csv.reader(out.read_text().splitlines()))
    head, body = final[1], final[2:]
    assert [int(b[0]) for b in body] == list(range(12))  # none lost, none duplicated, in order
    for row in kept:  # the rows finished before the kill are the final ones
        got = dict(zip(head, body[int(row[0])]))
        for col, v in zip(header[1:], row[1:]):
            assert got[col] == (repr(float(v)) if col.startswith("d_") else v), (row, col)
    ref = tmp_path / "ref.csv"
    assert main([*map(str, args), "--out", str(ref)]) == 0
    assert out.read_bytes() == ref.read_bytes()
