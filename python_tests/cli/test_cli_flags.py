"""Issue 16: defaults from the checkpoint, one name per quantity (deprecated spellings still work and warn),
argparse choices (one line, exit status 2), every flag with help, only the flags a subcommand uses, the
`fastcert` console script, and Fashion-MNIST under CI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

import fastcert
from fastcert.io.readers import read_log
from fastcert.cli import main
from fastcert.cli.entry import SUBCOMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
FASHION = "/usr/share/datasets/fashion-mnist"
QUICK = ["--n0", "10", "--n", "100", "--alpha", "0.05", "--batch", "100", "--max", "2", "--quiet"]

# noise name -> (train flags, the noise certify must use by default)
TRAINED = {
    "gaussian": (["--sigma", "0.3"], fastcert.Gaussian(0.3)),
    "laplace": (["--sigma", "0.2"], fastcert.Laplace(0.2)),
    "uniform": (["--sigma", "0.4"], fastcert.Uniform(0.4)),
    "discrete": (["--keep", "0.5", "--K", "16"], fastcert.Discrete(Fraction(1, 2), 16)),  # digits: 1/16 grid
}


def _settings(log) -> dict:
    return json.loads(Path(str(log) + ".json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny MLPs trained 1 epoch on digits with each noise, plus one trained with IBP and one with none."""
    d = tmp_path_factory.mktemp("trained")
    out = {}
    for method, (flags, _) in {**TRAINED, "ibp": (["--eps", "0.05"], None), "none": ([], None)}.items():
        path = d / f"{method}.pt"
        assert main(["train", "--arch", "mlp", "--method", method, *flags, "--epochs", "1", "--max-train", "320",
                     "--batch", "32", "--quiet", "--out", str(path)]) == 0
        out[method] = path
    return out


# ---------------------------------------------------------------------------------- defaults from the model
@pytest.mark.parametrize("noise", sorted(TRAINED))
def test_certify_uses_the_training_noise(noise, trained, tmp_path, capsys):
    log = tmp_path / "log.tsv"
    assert main(["certify", "--model", str(trained[noise]), *QUICK, "--out", str(log)]) == 0
    st = _settings(log)
    assert st["noise"] == repr(TRAINED[noise][1])
    assert st["training_noise"] == repr(TRAINED[noise][1]) and st["training_method"] == noise
    assert st["contradicts_training"] == [] and st["dataset"] == "digits"
    assert "warning" not in capsys.readouterr().err
    assert read_log(log)["_n"] == 2


@pytest.mark.parametrize("noise", ["gaussian", "discrete"])
def test_predict_uses_the_training_noise(noise, trained, tmp_path):
    log = tmp_path / "pred.tsv"
    assert main(["predict", "--model", str(trained[noise]), "--n", "100", "--alpha", "0.05", "--max", "2",
                 "--quiet", "--out", str(log)]) == 0
    assert _settings(log)["noise"] == repr(TRAINED[noise][1])


@pytest.mark.parametrize("flags,expect,recorded", [
    (["--noise", "laplace", "--sigma", "0.3"], fastcert.Laplace(0.3), ["--noise laplace"]),
    (["--sigma", "0.5"], fastcert.Gaussian(0.5), ["--sigma 0.5"]),
    (["--sigma", "0.3"], fastcert.Gaussian(0.3), []),  # the same value does not contradict
])
def test_contradicting_flag_warns_and_is_recorded(flags, expect, recorded, trained, tmp_path, capsys):
    log = tmp_path / "log.tsv"
    assert main(["certify", "--model", str(trained["gaussian"]), *flags, *QUICK, "--out", str(log)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    st = _settings(log)
    assert st["noise"] == repr(expect) and st["contradicts_training"] == recorded
    warnings = [ln for ln in err if ln.startswith("warning:")]
    if recorded:
        assert len(warnings) == 1 and all(r in warnings[0] for r in recorded) and "Gaussian(sigma=0.3)" in warnings[0]
    else:
        assert warnings == []


def test_discrete_contradicting_keep_is_recorded(trained, tmp_path, capsys):
    log = tmp_path / "log.tsv"
    assert main(["certify", "--model", str(trained["discrete"]), "--keep", "0.6", *QUICK, "--out", str(log)]) == 0
    assert _settings(log)["contradicts_training"] == ["--keep 0.6"]
    assert _settings(log)["noise"] == repr(fastcert.Discrete(Fraction(3, 5), 16))
    assert capsys.readouterr().err.count("warning:") == 1


def test_ibp_trained_checkpoint_certifies_with_ibp(trained, tmp_path):
    log = tmp_path / "ibp.tsv"
    assert main(["certify", "--model", str(trained["ibp"]), "--eps", "0.01", "--max", "3", "--quiet",
                 "--out", str(log)]) == 0
    st = _settings(log)
    assert st["method"] == "ibp" and st["training_method"] == "ibp"
    assert "certified_0.01" in read_log(log)
    # smoothing is still one flag away (the noise is then required: IBP training used none)
    rc = main(["certify", "--model", str(trained["ibp"]), "--method", "smoothing", *QUICK,
               "--out", str(tmp_path / "s.tsv")])
    assert rc == 2


@pytest.mark.parametrize("model,flags,flag", [
    ("none", [], "--noise"),                       # trained without noise: which noise is not known
    ("gaussian", ["--noise", "laplace"], "--sigma"),  # another family: its scale is not the checkpoint's
    ("gaussian", ["--noise", "discrete"], "--keep"),
    ("gaussian", ["--noise", "discrete", "--keep", "0.5"], "--K"),
])
def test_missing_value_is_an_error_naming_the_flag(model, flags, flag, trained, tmp_path, capsys):
    rc = main(["certify", "--model", str(trained[model]), *flags, *QUICK, "--out", str(tmp_path / "x.tsv")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(err) == 1 and f"{flag} is required" in err[0], err


def test_dataset_default_comes_from_the_checkpoint(trained, tmp_path):
    """A checkpoint trained on a dataset whose path it does not record needs --dataset (named)."""
    from fastcert.cli.common import resolve_dataset

    class Args:
        dataset = None

    assert resolve_dataset(Args, {"config": {"dataset": "fashion-mnist"}}) == "fashion-mnist"
    assert resolve_dataset(Args, {}) == "digits"
    with pytest.raises(fastcert.errors.CliError, match="--dataset"):
        resolve_dataset(Args, {"config": {"dataset": "mnist"}})
    Args.dataset = "digits"
    assert resolve_dataset(Args, {"config": {"dataset": "mnist"}}) == "digits"


# ------------------------------------------------------------------------------ deprecated spellings
def _notice(err: str, old: str) -> bool:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return sum(ln.startswith("notice:") and old in ln and "deprecated" in ln for ln in lines) == 1


def test_cli_alpha_keep_still_works_with_a_notice(trained, tmp_path, capsys):
    new, old = tmp_path / "new.tsv", tmp_path / "old.tsv"
    args = ["certify", "--model", str(trained["discrete"]), "--noise", "discrete", "--K", "16", *QUICK]
    assert main([*args, "--keep", "0.6", "--out", str(new)]) == 0
    capsys.readouterr()
    assert main([*args, "--alpha-keep", "0.6", "--out", str(old)]) == 0
    assert _notice(capsys.readouterr().err, "--alpha-keep")
    cut = lambda p: [ln.split("\t")[:5] + ln.split("\t")[6:] for ln in Path(p).read_text().splitlines()]  # noqa
    assert cut(new) == cut(old) and _settings(new) == _settings(old)
    # and in train and predict
    assert main(["predict", "--model", str(trained["discrete"]), "--alpha-keep", "0.5", "--n", "50", "--max", "1",
                 "--quiet", "--out", str(tmp_path / "p.tsv")]) == 0
    assert _notice(capsys.readouterr().err, "--alpha-keep")
    assert main(["train", "--arch", "mlp", "--method", "discrete", "--alpha-keep", "0.5", "--K", "16", "--epochs", "1",
                 "--max-train", "160", "--batch", "16", "--quiet", "--out", str(tmp_path / "d.pt")]) == 0
    assert _notice(capsys.readouterr().err, "--alpha-keep")
    assert fastcert.load_checkpoint(tmp_path / "d.pt")[1]["config"]["keep"] == 0.5


def test_threshold_alpha_still_works_with_a_notice(capsys):
    assert main(["threshold", "--keep", "4/5", "--K", "1", "--max-radius", "3"]) == 0
    new = capsys.readouterr()
    assert main(["threshold", "--alpha", "4/5", "--K", "1", "--max-radius", "3"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out and _notice(old.err, "--alpha") and new.err == ""
    assert main(["threshold", "--alpha", "1.5", "--K", "1"]) == 2  # an error names the spelling used
    assert "error: --alpha must be in (0, 1)" in capsys.readouterr().err
    assert main(["threshold", "--K", "1"]) == 2
    assert "--keep is required" in capsys.readouterr().err


def test_curve_method_still_works_with_a_notice(tmp_path, capsys):
    ck = tmp_path / "m.pt"
    assert main(["train", "--arch", "mlp", "--method", "none", "--epochs", "1", "--max-train", "160", "--batch", "16",
                 "--quiet", "--out", str(ck)]) == 0
    capsys.readouterr()
    base = ["curve", "--model", str(ck), "--norms", "linf", "--max", "2", "--restarts", "0", "--steps", "5", "--quiet"]
    assert main([*base, "--search", "attack", "--out", str(tmp_path / "a.npz")]) == 0
    assert not _notice(capsys.readouterr().err, "--method")
    assert main([*base, "--method", "attack", "--out", str(tmp_path / "b.npz")]) == 0
    assert _notice(capsys.readouterr().err, "--method")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_api_old_spellings_warn_and_agree():
    from fastcert.smoothing import stratified
    from fastcert.smoothing.noise import make_noise

    with pytest.warns(DeprecationWarning, match="keep"):
        old = fastcert.Discrete(alpha=0.8, K=3)
    assert repr(old) == repr(fastcert.Discrete(keep=0.8, K=3)) == repr(fastcert.Discrete(0.8, 3))
    with pytest.warns(DeprecationWarning):
        assert old.alpha == old.keep == Fraction(4, 5)
    with pytest.warns(DeprecationWarning, match="keep"):
        assert fastcert.threshold(alpha="0.8", K=1, radii=[0, 1, 2]) == fastcert.threshold(keep="0.8", K=1,
                                                                                          radii=[0, 1, 2])
    with pytest.warns(DeprecationWarning):
        assert make_noise("discrete", alpha_keep=0.5, K=4).keep == make_noise("discrete", keep=0.5, K=4).keep
    with pytest.warns(DeprecationWarning):
        assert stratified.region_probabilities(2, alpha="0.8", K=3) == stratified.region_probabilities(2, "0.8", 3)
    with pytest.warns(DeprecationWarning):
        assert stratified.certified_l0_radius(0.99, alpha="0.8", K=1) == stratified.certified_l0_radius(0.99, "0.8", 1)
    with pytest.raises(TypeError, match="keep"):
        fastcert.Discrete(0.8, 3, alpha=0.8)  # both names: refused


def test_train_api_alpha_keep_warns(tmp_path):
    from fastcert.training.loop import train

    data = fastcert.load_dataset("digits", "train").subset(range(160))
    with pytest.warns(DeprecationWarning, match="keep"):
        train("mlp", data, method="discrete", alpha_keep=0.5, K=16, epochs=1, batch_size=16, out=tmp_path / "a.pt", progress=False,
              log=lambda *_: None)
    train("mlp", data, method="discrete", keep=0.5, K=16, epochs=1, batch_size=16, out=tmp_path / "b.pt", progress=False,
          log=lambda *_: None)
    ca, cb = (fastcert.load_checkpoint(tmp_path / f)[1]["config"] for f in ("a.pt", "b.pt"))
    assert ca == cb and ca["keep"] == 0.5


# ------------------------------------------------------------------------------ choices, help, flags
def _actions(name):
    return [a for a in build_parser(name)._actions if a.option_strings and a.dest != "help"]


ENUMS = [(name, a.option_strings[0]) for name in SUBCOMMANDS for a in _actions(name) if a.choices]


def test_enumerations_use_choices():
    assert {("certify", "--method"), ("certify", "--noise"), ("certify", "--split"), ("certify", "--autocast"),
            ("certify", "--confidence-measure"), ("predict", "--noise"), ("predict", "--split"),
            ("train", "--method"), ("train", "--arch"), ("curve", "--search"), ("curve", "--split"),
            ("curve", "--certified"), ("distances", "--split"), ("distances", "--reference"),
            ("analyze", "--confidence-measure")} <= set(ENUMS)


@pytest.mark.parametrize("name,flag", ENUMS)
def test_enumeration_rejects_a_bad_value_with_one_line_and_status_2(name, flag, capsys):
    assert main([name, flag, "no-such-value"]) == 2
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "invalid choice" in err[0], err


def test_bad_choice_in_a_real_process_exits_2():
    r = subprocess.run([sys.executable, "-m", "fastcert.cli", "certify", "--noise", "cauchy"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--noise" in r.stderr, r.stderr


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_flag_has_help(name):
    missing = [a.option_strings[0] for a in _actions(name) if not (a.help and a.help.strip())]
    assert missing == []


def test_flags_only_where_used(capsys):
    flags = {name: {s for a in _actions(name) for s in a.option_strings} for name in SUBCOMMANDS}
    for name in ("analyze", "threshold", "distances"):
        assert not flags[name] & {"--seed", "--device", "--batch"}, name
    assert "--batch" not in flags["bench"] and {"--seed", "--device"} <= flags["bench"]
    for name in ("certify", "predict", "curve", "train"):
        assert {"--seed", "--device", "--batch"} <= flags[name], name
    assert main(["analyze", "--seed", "1"]) == 2
    assert "--seed" in capsys.readouterr().err


def test_shared_flags_mean_the_same():
    """--skip/--max (--max-points), --n/--N, --split, --eps: one definition (same help, same default)."""
    def spec(name, flag):
        a = next(a for a in _actions(name) if flag in a.option_strings)
        return tuple(a.option_strings), a.default, a.help, a.choices

    for flag in ("--skip", "--max"):
        assert spec("certify", flag) == spec("predict", flag) == spec("curve", flag) == spec("distances", flag)
    assert spec("certify", "--max")[0] == ("--max", "--max-points") and spec("certify", "--max")[1] == -1
    assert spec("certify", "--n")[0] == spec("predict", "--n")[0] == ("--n", "--N")
    assert spec("certify", "--n0")[0] == ("--n0", "--N0")
    assert spec("certify", "--split") == spec("predict", "--split")
    for name in ("certify", "predict", "analyze"):
        assert "failure probability" in spec(name, "--alpha")[2]
    assert "--alpha" not in {s for a in _actions("threshold") if a.dest != "keep" for s in a.option_strings}


def test_train_eps_is_one_linf_budget(tmp_path, capsys):
    rc = main(["train", "--arch", "mlp", "--method", "ibp", "--eps", "0.1,0.2", "--epochs", "1", "--max-train", "20",
               "--quiet", "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "--eps" in capsys.readouterr().err


def test_distances_skip_and_max(tmp_path):
    import numpy as np

    out = tmp_path / "d.npz"
    assert main(["distances", "--norms", "linf", "--skip", "3", "--max", "7", "--quiet", "--out", str(out)]) == 0
    want = fastcert.load_dataset("digits", "test").y[0:21:3].numpy()
    assert np.array_equal(np.load(out)["labels"], want)


# ------------------------------------------------------------------------------ analyze
def test_analyze_thresholds_refuses_non_integer_radii(tmp_path, capsys):
    thr = tmp_path / "thr.tsv"
    assert main(["threshold", "--keep", "0.8", "--K", "1", "--max-radius", "5", "--out", str(thr)]) == 0
    log = tmp_path / "l0.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\tp_lower\n0\t1\t1\t2\t1\t0:00:01.0\t0.99\n")
    capsys.readouterr()
    assert main(["analyze", str(log), "--thresholds", str(thr), "--radii", "0,0.5"]) == 2
    err = capsys.readouterr().err
    assert "--radii" in err and "integers" in err
    assert main(["analyze", str(log), "--thresholds", str(thr)]) == 0  # default l0 radii 0..5
    assert "r=5:" in capsys.readouterr().out


def test_analyze_does_not_guess_the_confidence_measure(capsys):
    path = SHARED / "kumar_cifar10_margin_noise_0.25"
    if not path.exists():
        pytest.skip("shared data not present")
    copy_named_score = Path(os.environ.get("TMPDIR", "/tmp")) / f"score_named_{os.getpid()}"
    shutil.copy(path, copy_named_score)
    try:
        assert main(["analyze", str(path)]) == 2
        assert "--confidence-measure" in capsys.readouterr().err
        assert main(["analyze", str(path), "--confidence-measure", "margin"]) == 0
        by_flag = capsys.readouterr().out
        assert "confidence > 0 " in by_flag
        # the file name plays no part
        assert main(["analyze", str(copy_named_score), "--confidence-measure", "margin"]) == 0
        assert capsys.readouterr().out.replace(str(copy_named_score), "F") == by_flag.replace(str(path), "F")
    finally:
        copy_named_score.unlink()


# ------------------------------------------------------------------------------ the console script
def _console():
    exe = shutil.which("fastcert") or str(Path(sys.executable).parent / "fastcert")
    if not Path(exe).exists():
        pytest.fail("the fastcert console script is not installed (pip install -e .)")
    return exe


@pytest.mark.parametrize("args", [["--help"], ["certify", "--help"], ["threshold", "--keep", "0.8", "--K", "1",
                                                                        "--max-radius", "2"],
                                  ["certify", "--noise", "cauchy"], ["frobnicate"], []])
def test_console_script_works_like_python_m(args):
    a = subprocess.run([_console(), *args], capture_output=True, text=True, timeout=300)
    b = subprocess.run([sys.executable, "-m", "fastcert.cli", *args], capture_output=True, text=True, timeout=300)
    assert a.returncode == b.returncode
    norm = lambda t: " ".join(t.replace("python -m fastcert.cli", "fastcert").split())  # noqa: E731 (rewrapped)
    assert norm(a.stdout) == norm(b.stdout) and norm(a.stderr) == norm(b.stderr)
    if args[-1:] == ["--help"]:
        assert a.stdout.startswith("usage: fastcert")


# ------------------------------------------------------------------------------ Fashion-MNIST
def need_fashion_mnist():
    """Skip without the Debian dataset, except under CI (env CI set), where .ci/run installs it: fail there."""
    if not os.path.isdir(FASHION):
        if os.environ.get("CI"):
            pytest.fail(f"Fashion-MNIST not found at {FASHION} under CI: .ci/run installs dataset-fashion-mnist")
        pytest.skip("no Debian dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)")


def test_fashion_mnist_from_the_command_line(tmp_path, capsys):
    need_fashion_mnist()
    out = tmp_path / "d.npz"
    assert main(["distances", "--dataset", "fashion-mnist", "--norms", "linf", "--max", "20", "--max-reference", "200",
                 "--quiet", "--out", str(out)]) == 0
    assert "linf: inter-class" in capsys.readouterr().out


def test_missing_fashion_mnist_fails_under_ci(monkeypatch):
    """The guard itself: under CI a missing dataset is a failure, elsewhere a skip."""
    monkeypatch.setattr(sys.modules[__name__], "FASHION", "/nonexistent/fashion-mnist")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="under CI"):
        need_fashion_mnist()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        need_fashion_mnist()
