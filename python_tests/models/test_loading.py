"""Safe checkpoints (issue 16, part 1) and load_model's five formats (issue 16, part 4)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn

import fastcert
from fastcert.models.checkpoint import FORMAT, FORMAT_V1, load_checkpoint, read_checkpoint, save_checkpoint
from fastcert.models.loading import COHEN_NORMALIZATION, ExportedModel, load_model
from fastcert.models.zoo import ResNet50, build_model

SHAPE = (1, 8, 8)
MEAN, STD = (0.5,), (0.25,)


class Evil:
    """Unpickling this runs a shell command: the crafted checkpoint of issue 16."""

    def __reduce__(self):
        return os.system, ("touch PWNED",)


def _small(seed=0):
    torch.manual_seed(seed)
    m = build_model("cnn_small", SHAPE, 10, MEAN, STD).eval()
    return m


def _x(n=5, shape=SHAPE, seed=1):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def _adam_and_scheduler(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10, pct_start=0.25)
    for _ in range(2):
        opt.zero_grad()
        model(_x(4)).sum().backward()
        opt.step()
        sched.step()
    return opt, sched


# ----------------------------------------------------------------------------- 1. safe loading
@pytest.mark.parametrize("zipped", [True, False])
def test_crafted_pickle_is_refused_and_never_run(tmp_path, monkeypatch, zipped):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT_V1, "state_dict": {}, "x": Evil()}, evil, _use_new_zipfile_serialization=zipped)
    for load in (load_checkpoint, load_model, read_checkpoint):
        with pytest.raises(ValueError, match=r"refusing to load .*evil\.pt.*nothing in it was run"):
            load(evil)
    assert not (tmp_path / "PWNED").exists()
    # the resume path of train(out=...) reads the same way
    from fastcert.training.loop import train

    ds = fastcert.load_dataset("digits", "train").subset(range(32))
    with pytest.raises(ValueError, match=r"out: refusing to load .*evil\.pt"):
        train("mlp", ds, method="gaussian", sigma=0.25, epochs=1, seed=0, out=evil, progress=False,
              log=lambda *_: None)
    assert not (tmp_path / "PWNED").exists()
    # a bare pickle (not torch.save's container) and a plain state dict file
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(__import__("pickle").dumps({"x": Evil()}, protocol=4))
    with pytest.raises(ValueError, match="raw.pkl"):
        load_model(raw)
    assert not (tmp_path / "PWNED").exists()


def test_crafted_pickle_refused_by_the_cli(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT_V1, "arch": "mlp", "state_dict": Evil()}, evil)
    r = subprocess.run([sys.executable, "-m", "fastcert.cli", "certify", "--model", "evil.pt", "--out", "log.tsv"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "evil.pt" in r.stderr and "refusing to load" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "PWNED").exists()


def test_new_checkpoints_are_safetensors_plus_json(tmp_path):
    from safetensors import safe_open

    m = _small()
    p = tmp_path / "m.pt"  # the user's extension, whatever the format
    save_checkpoint(p, m, arch="cnn_small", input_shape=SHAPE, num_classes=10, mean=MEAN, std=STD,
                    config={"method": "gaussian", "sigma": 0.25, "eps": (0.1, 0.2)})
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["fastcert"])
    assert meta["format"] == FORMAT == "fastcert-checkpoint-2"
    assert meta["arch"] == "cnn_small" and meta["input_shape"] == [1, 8, 8] and meta["config"]["sigma"] == 0.25
    with safe_open(str(p), "pt") as f:  # any safetensors reader gets the weights
        assert set(f.keys()) == {f"model/{k}" for k in m.state_dict()}
        assert torch.equal(f.get_tensor("model/1.0.weight"), m.state_dict()["1.0.weight"])
    m2, meta2 = load_checkpoint(p)
    x = _x()
    assert torch.equal(m(x), m2(x))
    assert meta2["input_shape"] == SHAPE and meta2["mean"] == MEAN and meta2["config"]["eps"] == (0.1, 0.2)


def test_optimizer_state_round_trips_exactly_and_bytes_are_reproducible(tmp_path):
    m = _small()
    opt, sched = _adam_and_scheduler(m)
    extra = {"train_state": {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}}
    kw = dict(arch="cnn_small", input_shape=SHAPE, num_classes=10, mean=MEAN, std=STD, config={"seed": 0})
    save_checkpoint(tmp_path / "a.pt", m, extra=extra, **kw)
    save_checkpoint(tmp_path / "b.pt", m, extra=extra, **kw)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    state, meta = read_checkpoint(tmp_path / "a.pt")
    got = meta["train_state"]["optimizer"]
    want = opt.state_dict()
    assert got["param_groups"] == want["param_groups"]  # tuples (betas) and None stay what they were
    assert list(got["state"]) == list(want["state"])  # int keys stay ints
    for k, s in want["state"].items():
        assert s.keys() == got["state"][k].keys() and all(torch.equal(s[j], got["state"][k][j]) for j in s)
    assert meta["train_state"]["scheduler"] == sched.state_dict()
    # resuming from the copy continues exactly like the original
    m2 = _small(seed=5)
    m2.load_state_dict(state)
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=1e-3, total_steps=10, pct_start=0.25)
    opt2.load_state_dict(got)
    sched2.load_state_dict(meta["train_state"]["scheduler"])
    for model, o, s in ((m, opt, sched), (m2, opt2, sched2)):
        o.zero_grad()
        model(_x(4, seed=9)).sum().backward()
        o.step()
        s.step()
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "c.pt", m, extra={"f": object()}, **kw)


def _v1(path, model, **extra):
    """A checkpoint in the format before issue 16 (fastcert-checkpoint-1: a torch.save dict)."""
    payload = {"format": FORMAT_V1, "arch": "cnn_small", "arch_kwargs": {}, "input_shape": SHAPE, "num_classes": 10,
               "mean": MEAN, "std": STD, "config": {"sigma": 0.5},
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    with open(path, "wb") as f:
        torch.save(payload, f)


def test_old_pt_checkpoints_still_load_safely(tmp_path):
    m = _small()
    opt, sched = _adam_and_scheduler(m)
    _v1(tmp_path / "old.pt", m, train_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    for load in (load_checkpoint, load_model):
        m2, meta = load(tmp_path / "old.pt")
        assert torch.equal(m(_x()), m2(_x()))
        assert meta["format"] == FORMAT_V1 and meta["config"] == {"sigma": 0.5} and meta["input_shape"] == SHAPE
    _, meta = read_checkpoint(tmp_path / "old.pt")
    assert meta["train_state"]["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]


def test_training_resumes_from_new_and_old_checkpoints(tmp_path, monkeypatch):
    """Interrupted after epoch 1 (new format, or that file rewritten in the old format), a rerun with the
    same --out ends with the same weights as a run that never stopped."""
    import fastcert.training.loop as loop

    ds = fastcert.load_dataset("digits", "train").subset(range(96))
    kw = dict(method="gaussian", sigma=0.25, epochs=2, batch_size=32, seed=3, progress=False, log=lambda *_: None)
    loop.train("mlp", ds, out=tmp_path / "ref.pt", **kw)
    ref, _ = read_checkpoint(tmp_path / "ref.pt")
    save = loop._save

    class Stop(Exception):
        pass

    def save_then_stop(out, *a):
        save(out, *a)
        raise Stop

    for old_format in (False, True):
        out = tmp_path / f"run{int(old_format)}.pt"
        monkeypatch.setattr(loop, "_save", save_then_stop)
        with pytest.raises(Stop):
            loop.train("mlp", ds, out=out, **kw)
        monkeypatch.setattr(loop, "_save", save)
        state, meta = read_checkpoint(out)
        assert meta["config"]["epochs_done"] == 1
        if old_format:
            with open(out, "wb") as f:
                torch.save({**meta, "format": FORMAT_V1, "state_dict": state}, f)
        loop.train("mlp", ds, out=out, **kw)
        got, meta = read_checkpoint(out)
        assert meta["format"] == FORMAT and meta["config"]["epochs_done"] == 2
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


# ----------------------------------------------------------------------------- 4. any model in
@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from fastcert.models.zoo import build_model\n"
        "def full():\n"
        "    return build_model('cnn_small', (1, 8, 8), 10, (0.5,), (0.25,))\n"
        "def body():\n"
        "    return build_model('cnn_small', (1, 8, 8), 10)[1], {'input_shape': (1, 8, 8), 'mean': (0.5,),"
        " 'std': (0.25,)}\n"
        "def not_a_module():\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_nets", None)
    yield
    sys.modules.pop("my_nets", None)


def test_every_format_gives_the_same_logits(tmp_path, factories):
    from safetensors.torch import save_file

    m = _small()
    x = _x(7)
    want = m(x)
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(ckpt, m, arch="cnn_small", input_shape=SHAPE, num_classes=10, mean=MEAN, std=STD)
    _v1(tmp_path / "old.pt", m)
    torch.jit.save(torch.jit.script(m), tmp_path / "m.ts")
    torch.jit.save(torch.jit.trace(m, x[:1]), tmp_path / "traced.pt")
    ep = torch.export.export(m, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "dyn.pt2")
    torch.export.save(torch.export.export(m, (x[:1],)), tmp_path / "fixed.pt2")  # batch 1 only
    torch.save(m.state_dict(), tmp_path / "full.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in m[1].state_dict().items()}}, tmp_path / "body.pth")
    save_file({k: v.contiguous() for k, v in m[1].state_dict().items()}, tmp_path / "body.safetensors")
    cases = {
        "fastcert": (str(ckpt), {}),
        "fastcert-1": (tmp_path / "old.pt", {}),
        "torchscript": (tmp_path / "m.ts", {"input_shape": SHAPE}),
        "traced": (tmp_path / "traced.pt", {"input_shape": SHAPE}),
        "export": (tmp_path / "dyn.pt2", {}),
        "export-batch-1": (tmp_path / "fixed.pt2", {}),
        "factory": ("my_nets:full", {"weights": tmp_path / "full.pt", "input_shape": SHAPE}),
        "factory-states-normalization": ("my_nets:body", {"weights": tmp_path / "body.pth"}),
        "factory-safetensors": ("my_nets:body", {"weights": tmp_path / "body.safetensors"}),
        "factory-fastcert-weights": ("my_nets:full", {"weights": ckpt, "input_shape": SHAPE}),
    }
    for name, (spec, kw) in cases.items():
        model, meta = fastcert.load_model(spec, **kw)
        with torch.no_grad():
            got = model(x)
        assert torch.allclose(got, want, atol=1e-6, rtol=0), name
        assert meta["num_classes"] == 10 and meta["input_shape"] == SHAPE, name
        assert not model.training, name
        if name not in ("fastcert", "fastcert-1"):
            assert meta["config"] == {} and "sigma" not in meta, name  # no training metadata: noise unset
    assert isinstance(load_model(tmp_path / "fixed.pt2")[0], ExportedModel)
    # normalization stated by the caller for a model that expects normalized inputs
    torch.jit.save(torch.jit.script(m[1]), tmp_path / "body.ts")
    model, meta = load_model(tmp_path / "body.ts", input_shape=SHAPE, mean=MEAN, std=STD,
                             sample=fastcert.load_dataset("digits", "test").x[0])
    assert torch.allclose(model(x), want, atol=1e-6, rtol=0) and meta["mean"] == MEAN


def test_bad_specs_fail_clearly(tmp_path, factories):
    m = _small()
    torch.jit.save(torch.jit.script(m), tmp_path / "m.ts")
    with pytest.raises(ValueError, match=r"input_shape: .*m\.ts does not record its input shape"):
        load_model(tmp_path / "m.ts")
    with pytest.raises(ValueError, match=r"does not run on an input of shape \(1, 1, 28, 28\)"):
        load_model(tmp_path / "m.ts", input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="num_classes: .* gives 10 logits, expected 3"):
        load_model(tmp_path / "m.ts", input_shape=SHAPE, num_classes=3)
    torch.jit.save(torch.jit.script(nn.Sequential(m, nn.Flatten(0))), tmp_path / "flat.ts")
    with pytest.raises(ValueError, match=r"gives \(10,\) on an input of shape \(1, 1, 8, 8\); expected \(1, "):
        load_model(tmp_path / "flat.ts", input_shape=SHAPE)
    save_checkpoint(tmp_path / "c.pt", m, arch="cnn_small", input_shape=SHAPE, num_classes=10, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"input_shape: .* was trained on inputs of shape \(1, 8, 8\)"):
        load_model(tmp_path / "c.pt", input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="weights: only a 'package.module:factory'"):
        load_model(tmp_path / "c.pt", weights=tmp_path / "c.pt")
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="factory"):
        load_model(tmp_path / "sd.pt")  # a bare state dict: which network?
    torch.save(m[1][:2].state_dict(), tmp_path / "part.pt")
    with pytest.raises(ValueError, match="weights: .*part.pt does not fit the model of my_nets:full"):
        load_model("my_nets:full", weights=tmp_path / "part.pt", input_shape=SHAPE)
    with pytest.raises(ValueError, match="not an nn.Module"):
        load_model("my_nets:not_a_module")
    with pytest.raises(ValueError, match="cannot find the factory"):
        load_model("my_nets:missing")
    with pytest.raises(ValueError, match="input_shape: the factory my_nets:body states"):
        load_model("my_nets:body", input_shape=(1, 28, 28))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "none.pt")
    with pytest.raises(TypeError, match="model"):
        load_model(3)
    # a torch.export archive holding objects that torch.export.load would unpickle freely
    with zipfile.ZipFile(tmp_path / "evil.pt2", "w") as z:
        z.writestr("evil/archive_format", "pt2")
        z.writestr("evil/data/constants/opaque_obj_0", __import__("pickle").dumps(Evil()))
    with pytest.raises(ValueError, match=r"refusing to load .*evil\.pt2"):
        load_model(tmp_path / "evil.pt2")


# ----------------------------------------------------------------------------- Cohen et al.'s checkpoints
class _CohenBlock(nn.Module):
    """Written here from the description of Cohen et al.'s code/archs/cifar_resnet.py: the same
    parameter names (conv1, bn1, conv2, bn2, downsample.0/.1), independently of fastcert's zoo."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class _CohenCifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = [_CohenBlock(cin if j == 0 else planes, planes, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.view(x.size(0), -1))


class _CohenNormalize(nn.Module):
    """Their NormalizeLayer keeps the constants as plain attributes: nothing in the state dict."""

    def __init__(self, means, sds):
        super().__init__()
        self.means, self.sds = torch.tensor(means), torch.tensor(sds)

    def forward(self, x):
        return (x - self.means.view(1, -1, 1, 1)) / self.sds.view(1, -1, 1, 1)


def _randomize_bn(net, seed):
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
            mod.weight.data.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=g))
            mod.bias.data.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
    return net.eval()


def test_cohen_cifar_resnet20_checkpoint(tmp_path):
    torch.manual_seed(0)
    ref = nn.Sequential(_CohenNormalize(*COHEN_NORMALIZATION["cifar10"]), _randomize_bn(_CohenCifarResNet(20), 1))
    sd = ref.state_dict()
    # their exact parameter names
    for k in ("1.conv1.weight", "1.bn1.running_var", "1.layer1.0.conv1.weight", "1.layer1.2.bn2.bias",
              "1.layer2.0.downsample.0.weight", "1.layer3.0.downsample.1.running_mean", "1.layer3.2.conv2.weight",
              "1.fc.weight", "1.fc.bias"):
        assert k in sd, k
    assert not any(k.startswith("0.") for k in sd)
    p = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": sd,
                "optimizer": torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9).state_dict()}, p,
               _use_new_zipfile_serialization=False)  # their checkpoints predate torch's zip format
    model, meta = load_model(p)
    x = _x(4, (3, 32, 32))
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5, rtol=1e-5)
    assert meta["format"] == "cohen" and meta["cohen_arch"] == "cifar_resnet20" and meta["arch"] == "resnet20"
    assert meta["dataset"] == "cifar10" and meta["num_classes"] == 10 and meta["input_shape"] == (3, 32, 32)
    assert meta["mean"] == (0.4914, 0.4822, 0.4465) and meta["std"] == (0.2023, 0.1994, 0.2010)
    assert meta["config"] == {}
    # with DataParallel's prefixes too, the same
    torch.save({"arch": "cifar_resnet20", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, p)
    model2, _ = load_model(p)
    with torch.no_grad():
        assert torch.equal(model(x), model2(x))
    # the loaded model is fastcert's resnet20: a checkpoint of it rebuilds from the zoo
    save_checkpoint(tmp_path / "z.pt", model, arch=meta["arch"], input_shape=meta["input_shape"],
                    num_classes=10, mean=meta["mean"], std=meta["std"])
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "z.pt")[0](x), model(x))
    # a resnet110 checkpoint holding resnet20 weights does not fit, and says so
    torch.save({"arch": "cifar_resnet110", "state_dict": sd}, p)
    with pytest.raises(ValueError, match="does not fit Cohen et al.'s cifar_resnet110"):
        load_model(p)


def test_cohen_imagenet_resnet50_checkpoint(tmp_path):
    # torchvision's ResNet-50 has 25,557,032 parameters with these names
    full = ResNet50((3, 224, 224), 1000)
    assert sum(p.numel() for p in full.parameters()) == 25_557_032
    names = set(full.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
            "layer1.0.conv3.weight", "layer1.0.bn3.weight", "layer4.2.conv3.weight", "fc.weight"} <= names
    del full
    torch.manual_seed(0)
    net = _randomize_bn(ResNet50((3, 64, 64), 1000, width=8), 2)  # the same graph at 1/8 width: cheap
    ref = nn.Sequential(_CohenNormalize(*COHEN_NORMALIZATION["imagenet"]), nn.DataParallel(net)).eval()
    sd = ref.state_dict()
    assert "1.module.layer3.5.bn3.running_var" in sd and "1.module.fc.bias" in sd
    p = tmp_path / "imagenet.pth.tar"
    torch.save({"arch": "resnet50", "state_dict": sd}, p)
    model, meta = load_model(p, input_shape=(3, 64, 64))
    x = _x(2, (3, 64, 64))
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5, rtol=1e-5)
    assert meta["dataset"] == "imagenet" and meta["num_classes"] == 1000 and meta["arch"] == "resnet50"
    assert meta["mean"] == (0.485, 0.456, 0.406) and meta["std"] == (0.229, 0.224, 0.225)
    assert meta["arch_kwargs"] == {"width": 8} and meta["input_shape"] == (3, 64, 64)
