"""CLI `curve` and `distances`: outputs, re-plotting, several models, one-line errors."""
import numpy as np
import pytest
import torch

import fastcert
from fastcert.cli import main
from fastcert.curves import load_curve
from fastcert.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    tr = fastcert.load_dataset("digits", "train")
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        m = build_model("mlp", tr.input_shape, 10, tr.mean, tr.std, hidden=(16,))
        opt = torch.optim.Adam(m.parameters(), 1e-2)
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(tr.x), tr.y).backward()
            opt.step()
        p = d / f"m{i}.pt"
        save_checkpoint(p, m, arch="mlp", input_shape=tr.input_shape, num_classes=10, mean=tr.mean, std=tr.std,
                        arch_kwargs={"hidden": (16,)})
        paths.append(str(p))
    return paths


def test_curve_cli(tmp_path, ckpts, capsys):
    out = tmp_path / "c.npz"
    assert main(["curve", "--model", ckpts[0], "--norms", "l2,linf", "--max", "6", "--restarts", "0", "--steps", "10",
                 "--out", str(out), "--plot", str(tmp_path / "c.png"), "--quiet"]) == 0
    c = load_curve(out)
    assert c.norms == ("l2", "linf") and len(c) == 6 and np.all(c.distances["linf"] >= 0)
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["curve", "--load", str(out), "--plot", str(tmp_path / "r.png"), "--norms", "linf"]) == 0
    assert main(["curve", "--models", *ckpts, "--norms", "linf", "--max", "4", "--restarts", "0", "--steps", "5",
                 "--out", str(tmp_path / "{name}.npz"), "--plot", str(tmp_path / "two.png"), "--quiet"]) == 0
    assert (tmp_path / "m0.npz").exists() and (tmp_path / "m1.npz").exists()
    assert "clean accuracy" in capsys.readouterr().out


def test_distances_cli(tmp_path, capsys):
    out = tmp_path / "d.npz"
    assert main(["distances", "--norms", "l1,linf", "--max", "50", "--out", str(out), "--plot", str(tmp_path / "d.png"),
                 "--quiet"]) == 0
    z = np.load(out)
    assert z["inter_l1"].shape == (50,) and np.all(z["inter_linf"] > 0)
    assert "inter-class" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["curve", "--norms", "l2"], "--model"),
    (["curve", "--model", "/nonexistent.pt"], "not found"),
    (["curve", "--load", "/nonexistent.npz"], "not found"),
    (["curve", "--model", "x.pt", "--norms", "l7"], "norm"),
    (["distances", "--norms", "l9"], "norm"),
    (["distances", "--split", "val"], "--split"),
    (["distances", "--max", "0"], "--max"),
])
def test_cli_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
