"""CLI `curve` and `distances`: outputs, re-plotting, several models, one-line errors."""
import numpy as np
import pytest
import torch

import fastcert
from fastcert.cli import main
from fastcert.robustness.curves import load_curve
from fastcert.models.zoo import build_model
from fastcert.models.checkpoint import save_checkpoint


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


def test_curve_cli_equals_api(tmp_path, ckpts):
    """The CLI computes batch by batch (for resuming); the result is fastcert.curve's on all points."""
    out = tmp_path / "c.npz"
    assert main(["curve", "--model", ckpts[0], "--norms", "l1,linf", "--max", "5", "--batch", "2", "--restarts", "1",
                 "--steps", "10", "--seed", "4", "--certified", "ibp", "--out", str(out), "--quiet"]) == 0
    got = load_curve(out)
    model, _ = fastcert.load_checkpoint(ckpts[0])
    te = fastcert.load_dataset("digits", "test")
    want = fastcert.curve(model, te.x[:5], te.y[:5], ("l1", "linf"), restarts=1, steps=10, batch_size=2, seed=4,
                          certified="ibp", label="m0")
    assert got.label == want.label and got.norms == want.norms
    for n in want.norms:
        assert np.array_equal(got.distances[n], want.distances[n]), n
        assert list(got.attacks[n]) == list(want.attacks[n]), n
        assert np.array_equal(got.certified[n], want.certified[n]), n


def test_curve_cli_polish_flag(tmp_path, ckpts):
    """--polish reaches fastcert.curve: --polish 0 is the attack without the boundary walk, the default
    is curve()'s default; a negative value is refused by name."""
    model, _ = fastcert.load_checkpoint(ckpts[0])
    te = fastcert.load_dataset("digits", "test")
    for flag, kw in ((["--polish", "0"], {"polish": 0}), ([], {})):
        out = tmp_path / f"p{len(flag)}.npz"
        assert main(["curve", "--model", ckpts[0], "--norms", "l2", "--max", "4", "--batch", "4", "--restarts", "0",
                     "--steps", "10", "--out", str(out), "--quiet"] + flag) == 0
        want = fastcert.curve(model, te.x[:4], te.y[:4], ("l2",), restarts=0, steps=10, batch_size=4, label="m0", **kw)
        assert np.array_equal(load_curve(out).distances["l2"], want.distances["l2"])
        if flag:
            assert "polish" not in set(load_curve(out).attacks["l2"])
    assert main(["curve", "--model", ckpts[0], "--polish", "-1", "--out", str(tmp_path / "bad.npz")]) == 2


def test_curve_resume(tmp_path, ckpts, capsys, monkeypatch):
    """Interrupted after 2 of 4 batches: the rows file holds exactly those points; a rerun with another
    setting is refused naming the option; the same command computes only the missing batches (a torn
    last line is recomputed), keeps the finished rows as they are, and removes the side files."""
    import fastcert.robustness.curves as fc
    from fastcert.cli.curve import rows_path

    out = tmp_path / "c.csv"
    base = ["curve", "--model", ckpts[0], "--norms", "l1,linf", "--max", "7", "--batch", "2", "--restarts", "0",
            "--steps", "10", "--quiet", "--out", str(out)]
    real, seeds = fc.curve, []

    def interrupted(*a, **k):
        if len(seeds) == 2:
            raise KeyboardInterrupt
        seeds.append(k["seed"])
        return real(*a, **k)

    monkeypatch.setattr(fc, "curve", interrupted)
    assert main([*base, "--seed", "2"]) == 130
    rows = rows_path(out)
    assert not out.exists() and rows.exists() and seeds == [2, 4]  # batch s is seeded with --seed + s
    lines = rows.read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "d_l1", "attack_l1", "d_linf", "attack_linf"]
    assert [ln.split("\t")[0] for ln in lines[1:]] == ["0", "1", "2", "3"]
    capsys.readouterr()
    for flag, value in (("--seed", "3"), ("--steps", "11"), ("--batch", "3"), ("--max", "6"),
                        ("--norms", "linf,l1"), ("--search", "attack")):
        argv = [*base, "--seed", "2"]
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag}: was" in err[0] and "other settings" in err[0], (flag, err)
    # a finished row is kept as written (here: changed by hand, so that recomputing it would show)
    fields = lines[1].split("\t")
    fields[1] = "0.5"
    rows.write_text("\n".join([lines[0], "\t".join(fields), *lines[2:]]) + "\n4\t0.12")  # + a torn row
    seeds.clear()
    monkeypatch.setattr(fc, "curve", lambda *a, **k: (seeds.append(k["seed"]), real(*a, **k))[1])
    assert main([*base, "--seed", "2"]) == 0
    assert seeds == [6, 8]  # only the batches of points 4-5 and 6
    c = load_curve(out)
    assert len(c) == 7 and c.distances["l1"][0] == 0.5
    assert not rows.exists() and not (tmp_path / "c.csv.rows.tsv.json").exists()
    # the uninterrupted run agrees everywhere else
    ref = tmp_path / "ref.csv"
    assert main([*base[:-1], str(ref), "--seed", "2"]) == 0
    r = load_curve(ref)
    for n in ("l1", "linf"):
        assert np.array_equal(c.distances[n][1:], r.distances[n][1:]) and list(c.attacks[n]) == list(r.attacks[n])
    assert c.distances["linf"][0] == r.distances["linf"][0]
