"""Issue 16, part 4 on the command line: `--model SPEC` (and `--weights`) in certify (smoothing and IBP),
predict and curve. Every format certifies to the same log rows as the same network loaded as a fastcert
checkpoint; formats without training metadata need --dataset and the noise flags; a model that does not fit
the dataset fails with one line (exit status 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastcert.cli import main
from fastcert.data import load_dataset
from fastcert.models.checkpoint import save_checkpoint
from fastcert.models.loading import COHEN_NORMALIZATION
from fastcert.models.zoo import build_model

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--n0", "20", "--n", "200", "--max", "3", "--batch", "200", "--alpha", "0.01", "--quiet"]
NOISE = ["--noise", "gaussian", "--sigma", "0.25"]

FACTORY_MODULE = '''
import torch
from fastcert.models.zoo import build_model


def full():
    """The whole network, normalization included; the input shape comes from --dataset."""
    return build_model("mlp", (1, 8, 8), 10)


def body():
    """The network without its normalization layer, stating it."""
    return build_model("mlp", (1, 8, 8), 10)[1], {"input_shape": (1, 8, 8), "mean": MEAN, "std": STD}


def three_classes():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))


def wrong_input():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
'''


def _rows(path):
    """The log's rows, every column but time."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    keep = [i for i, h in enumerate(header) if h != "time"]
    return [header[i] for i in keep], [[ln.split("\t")[i] for i in keep] for ln in lines[1:]]


def _settings(log) -> dict:
    return json.loads(Path(str(log) + ".json").read_text())


def _one_error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """One small digits MLP (trained 4 epochs with Gaussian noise) saved in every format, and the factory
    module `my_cert_nets` it can be rebuilt from."""
    from safetensors.torch import save_file

    from fastcert.training.loop import train

    d = tmp_path_factory.mktemp("formats")
    data = load_dataset("digits", "train")
    ckpt = d / "mlp.ckpt"
    model = train("mlp", data, method="gaussian", sigma=0.25, epochs=4, batch_size=64, seed=0, out=ckpt,
                  progress=False, log=lambda *_: None).eval()
    x = data.x[:2]
    torch.jit.save(torch.jit.script(model), d / "mlp.ts")
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, d / "mlp.pt2")
    torch.save(model.state_dict(), d / "full.pt")
    save_file({k: v.contiguous() for k, v in model[1].state_dict().items()}, d / "body.safetensors")
    mean = tuple(float(v) for v in model[0].mean.flatten())
    std = tuple(float(v) for v in model[0].std.flatten())
    (d / "my_cert_nets.py").write_text(f"MEAN = {mean!r}\nSTD = {std!r}\n" + FACTORY_MODULE)
    sys.path.insert(0, str(d))
    sys.modules.pop("my_cert_nets", None)
    yield {"dir": d, "ckpt": ckpt, "model": model}
    sys.path.remove(str(d))
    sys.modules.pop("my_cert_nets", None)


def _specs(f):
    d = f["dir"]
    return {
        "torchscript": [d / "mlp.ts"],
        "torch.export": [d / "mlp.pt2"],
        "factory + state dict": ["my_cert_nets:full", "--weights", d / "full.pt"],
        "factory + safetensors": ["my_cert_nets:body", "--weights", d / "body.safetensors"],
    }


@pytest.mark.parametrize("fmt", ["torchscript", "torch.export", "factory + state dict", "factory + safetensors"])
def test_each_format_certifies_like_the_fastcert_checkpoint(fmt, formats, tmp_path):
    ref, got = tmp_path / "ref.tsv", tmp_path / "got.tsv"
    assert main(["certify", "--model", str(formats["ckpt"]), *SMALL, "--out", str(ref)]) == 0
    spec = [str(a) for a in _specs(formats)[fmt]]
    assert main(["certify", "--model", *spec, "--dataset", "digits", *NOISE, *SMALL, "--out", str(got)]) == 0
    header, rows = _rows(got)
    assert (header, rows) == _rows(ref) and len(rows) == 3
    assert any(float(r[header.index("radius")]) > 0 for r in rows)  # not a trivial log
    st, st_ref = _settings(got), _settings(ref)
    assert st["noise"] == st_ref["noise"] == "Gaussian(sigma=0.25)"
    assert st["model_format"] == {"torchscript": "torchscript", "torch.export": "torch.export"}.get(fmt, "factory")
    assert st["training_noise"] is None and st_ref["training_noise"] == "Gaussian(sigma=0.25)"
    assert ("weights" in st) == fmt.startswith("factory") and "model_format" not in st_ref


def test_ibp_and_predict_and_curve_take_any_model(formats, tmp_path):
    ckpt, spec = str(formats["ckpt"]), ["my_cert_nets:full", "--weights", str(formats["dir"] / "full.pt")]
    ibp = ["--method", "ibp", "--eps", "0.005,0.02", "--max", "5", "--quiet"]
    assert main(["certify", "--model", ckpt, *ibp, "--out", str(tmp_path / "ibp_ref.tsv")]) == 0
    assert main(["certify", "--model", *spec, "--dataset", "digits", *ibp, "--out", str(tmp_path / "ibp.tsv")]) == 0
    assert _rows(tmp_path / "ibp.tsv") == _rows(tmp_path / "ibp_ref.tsv")
    quick = ["--n", "200", "--max", "3", "--batch", "200", "--alpha", "0.01", "--quiet"]
    assert main(["predict", "--model", ckpt, *quick, "--out", str(tmp_path / "p_ref.tsv")]) == 0
    ts = str(formats["dir"] / "mlp.ts")
    assert main(["predict", "--model", ts, "--dataset", "digits", *NOISE, *quick, "--out", str(tmp_path / "p.tsv")]) == 0
    assert _rows(tmp_path / "p.tsv") == _rows(tmp_path / "p_ref.tsv")
    attack = ["--norms", "l2", "--search", "attack", "--restarts", "1", "--steps", "10", "--targets", "1",
              "--max", "3", "--quiet"]
    assert main(["curve", "--model", ckpt, *attack, "--out", str(tmp_path / "c_ref.json")]) == 0
    assert main(["curve", "--model", *spec, "--dataset", "digits", *attack, "--out", str(tmp_path / "c.json")]) == 0
    from fastcert.robustness.curves import load_curve

    a, b = load_curve(tmp_path / "c_ref.json"), load_curve(tmp_path / "c.json")
    assert np.array_equal(a.distances["l2"], b.distances["l2"]) and b.label == "full"


def test_formats_without_metadata_need_the_flags(formats, tmp_path, capsys):
    ts, pt2 = str(formats["dir"] / "mlp.ts"), str(formats["dir"] / "mlp.pt2")
    out = ["--out", str(tmp_path / "x.tsv")]
    cases = [
        (["--model", ts, *NOISE], "--dataset is required"),             # TorchScript records no input shape
        (["--model", pt2, *NOISE], "--dataset is required: a torch.export model records no dataset"),
        (["--model", "my_cert_nets:body", *NOISE], "--dataset is required: a factory model"),
        (["--model", ts, "--dataset", "digits"], "--noise is required: a TorchScript model carries no training"),
        (["--model", ts, "--dataset", "digits", "--noise", "laplace"], "--sigma is required for --noise laplace"),
        (["--model", pt2, "--dataset", "digits", "--noise", "discrete", "--K", "16"], "--keep is required"),
        (["--model", str(formats["ckpt"]), "--weights", str(formats["dir"] / "full.pt")], "--weights: only a"),
        (["--model", "my_cert_nets:full", "--weights", ts, "--dataset", "digits", *NOISE], "--weights:"),
        (["--model", "my_cert_nets:missing", "--dataset", "digits", *NOISE], "--model: cannot find the factory"),
    ]
    for args, needle in cases:
        assert main(["certify", *args, *SMALL, *out]) == 2, args
        err = _one_error(capsys)
        assert needle in err, (args, err)
    assert not (tmp_path / "x.tsv").exists()


@pytest.mark.parametrize("factory,what", [
    ("three_classes", "gives 3 logits, expected 10"),
    ("wrong_input", "does not run on an input of shape (1, 1, 8, 8)"),
])
def test_a_model_that_does_not_fit_fails_with_one_line(factory, what, formats, tmp_path, capsys):
    for cmd in (["certify", *NOISE, *SMALL], ["certify", "--method", "ibp", "--quiet"],
                ["predict", *NOISE, "--quiet"], ["curve", "--quiet"]):
        rc = main([cmd[0], "--model", f"my_cert_nets:{factory}", "--dataset", "digits", *cmd[1:],
                   "--out", str(tmp_path / "x.tsv")])
        err = _one_error(capsys)
        assert rc == 2 and f"--model my_cert_nets:{factory} does not fit --dataset digits" in err and what in err, err


def test_ibp_refuses_a_model_it_cannot_bound(formats, tmp_path, capsys):
    assert main(["certify", "--model", str(formats["dir"] / "mlp.ts"), "--dataset", "digits", "--method", "ibp",
                 "--quiet", "--out", str(tmp_path / "x.tsv")]) == 2
    assert "--method ibp cannot bound the model" in _one_error(capsys)


def test_factory_from_pythonpath_on_the_command_line(formats, tmp_path):
    """The console entry point, with the factory's module found through PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(formats["dir"]), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "log.tsv"
    r = subprocess.run([sys.executable, "-m", "fastcert.cli", "certify", "--model", "my_cert_nets:body", "--weights",
                        str(formats["dir"] / "body.safetensors"), "--dataset", "digits", *NOISE, *SMALL,
                        "--out", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref.tsv"
    assert main(["certify", "--model", str(formats["ckpt"]), *SMALL, "--out", str(ref)]) == 0
    assert _rows(out) == _rows(ref)


# ----------------------------------------------------------------------------- Cohen et al.'s checkpoints
def _zoo_to_cohen(name: str, blocks_per_stage: int) -> str:
    """fastcert's CifarResNet names -> Cohen et al.'s (code/archs/cifar_resnet.py) inside their
    Sequential(NormalizeLayer, network): conv1/bn1, layer<stage>.<block>, downsample, fc."""
    parts = name.split(".")
    if parts[0] == "conv":
        parts[0] = "conv1"
    elif parts[0] == "bn":
        parts[0] = "bn1"
    elif parts[0] == "layers":
        i = int(parts[1])
        rest = ["downsample" if p == "shortcut" else p for p in parts[2:]]
        parts = [f"layer{i // blocks_per_stage + 1}", str(i % blocks_per_stage), *rest]
    return "1." + ".".join(parts)


def _cifar10_folder(path: Path, n: int = 2) -> Path:
    """A CIFAR-10-shaped dataset in the binary batch format (label byte + 3x32x32 bytes), n test images."""
    rng = np.random.default_rng(3)
    path.mkdir()
    rows = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3 * 32 * 32))], 1)
    rows.astype(np.uint8).tofile(path / "test_batch.bin")
    return path


def test_cohen_checkpoint_certifies_like_the_fastcert_checkpoint(tmp_path):
    mean, std = COHEN_NORMALIZATION["cifar10"]
    torch.manual_seed(0)
    net = build_model("resnet20", (3, 32, 32), 10, mean, std).eval()
    g = torch.Generator().manual_seed(1)
    for mod in net.modules():  # BatchNorm statistics as a trained network has them
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
    ckpt = tmp_path / "resnet20.ckpt"
    save_checkpoint(ckpt, net, arch="resnet20", input_shape=(3, 32, 32), num_classes=10, mean=mean, std=std)
    state = {_zoo_to_cohen(k, 3): v for k, v in net[1].state_dict().items()}
    assert {"1.conv1.weight", "1.layer2.0.downsample.0.weight", "1.layer3.2.bn2.running_var", "1.fc.bias"} <= set(state)
    cohen = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": state}, cohen,
               _use_new_zipfile_serialization=False)
    data = f"cifar10:{_cifar10_folder(tmp_path / 'cifar')}"
    quick = ["--n0", "10", "--n", "100", "--batch", "100", "--alpha", "0.01", "--quiet", *NOISE]
    assert main(["certify", "--model", str(ckpt), "--dataset", data, *quick, "--out", str(tmp_path / "ref.tsv")]) == 0
    assert main(["certify", "--model", str(cohen), "--dataset", data, *quick, "--out", str(tmp_path / "got.tsv")]) == 0
    assert _rows(tmp_path / "got.tsv") == _rows(tmp_path / "ref.tsv") and len(_rows(tmp_path / "ref.tsv")[1]) == 2
    assert _settings(tmp_path / "got.tsv")["model_format"] == "cohen"


def test_cohen_checkpoint_needs_dataset_and_noise(tmp_path, capsys):
    net = build_model("resnet20", (3, 32, 32), 10)
    state = {_zoo_to_cohen(k, 3): v for k, v in net[1].state_dict().items()}
    cohen = tmp_path / "checkpoint.pth.tar"
    torch.save({"arch": "cifar_resnet20", "state_dict": {f"module.{k}": v for k, v in state.items()}}, cohen)
    assert main(["certify", "--model", str(cohen), *NOISE, "--out", str(tmp_path / "x.tsv")]) == 2
    assert "--dataset is required: Cohen et al.'s model records no dataset" in _one_error(capsys)
    data = f"cifar10:{_cifar10_folder(tmp_path / 'cifar')}"
    assert main(["certify", "--model", str(cohen), "--dataset", data, "--out", str(tmp_path / "x.tsv")]) == 2
    assert "--noise is required: Cohen et al.'s model carries no training metadata" in _one_error(capsys)
    # digits does not fit a CIFAR network
    assert main(["certify", "--model", str(cohen), "--dataset", "digits", *NOISE, "--out", str(tmp_path / "x.tsv")]) == 2
    assert "does not fit --dataset digits" in _one_error(capsys)
