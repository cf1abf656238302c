"""fastcert._native, the one door to the compiled modules: it alone imports them; it checks every argument
before a buffer or pointer crosses (TypeError / ValueError naming the argument); the coordinate limit is one
number; every CUDA launch runs under the tensor's device and on that device's current stream. The CUDA
launches are checked here without a GPU: fake tensors that claim a CUDA device (no storage) and a recording
stand-in for _core_cuda."""
from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcert
from fastcert import _core, _native
from fastcert.cli import distributed
from fastcert.errors import CliError

PKG = Path(fastcert.__file__).resolve().parent
NATIVE = {"_core", "_core_cuda"}


# ------------------------------------------------------------------------------------ import ownership
def _native_imports(path: Path, source: str | None = None) -> list[str]:
    """Every import of fastcert._core / _core_cuda in the module at ``path`` (its text, or ``source``),
    absolute or relative, at any depth (function-level imports and importlib/__import__ calls included)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    pkg = list(path.relative_to(PKG.parent).with_suffix("").parts[:-1])  # ['fastcert', 'smoothing']
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[:2] in (["fastcert", "_core"], ["fastcert", "_core_cuda"]):
                    found.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                mod = pkg[: len(pkg) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            else:
                mod = node.module.split(".") if node.module else []
            names = {a.name for a in node.names}
            if mod[:2] in (["fastcert", "_core"], ["fastcert", "_core_cuda"]) or (mod == ["fastcert"] and names & NATIVE):
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import "
                             f"{', '.join(sorted(names))}")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__"):
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.split(".")[-1] in NATIVE:
                    found.append(f"line {node.lineno}: dynamic import of {arg.value}")
    return found


def test_only_native_imports_the_compiled_modules():
    offenders = {}
    for path in sorted(PKG.rglob("*.py")):
        if path == PKG / "_native.py":
            continue
        hits = _native_imports(path)
        if hits:
            offenders[str(path.relative_to(PKG.parent))] = hits
    assert not offenders, f"only fastcert/_native.py may import _core/_core_cuda: {offenders}"
    assert _native_imports(PKG / "_native.py")  # the scan does see the real importer


@pytest.mark.parametrize("src", [
    "from fastcert import _core", "from fastcert import _core_cuda as c", "import fastcert._core",
    "from fastcert._core import sample", "from .. import _core_cuda", "from .._core import count",
    "def f():\n    from fastcert import os, _core", "import importlib\nimportlib.import_module('fastcert._core_cuda')"])
def test_import_scan_sees_every_form(src):
    # as if the source were fastcert/smoothing/probe.py (".." is then fastcert)
    assert _native_imports(PKG / "smoothing" / "probe.py", src), src
    # and a module directly in fastcert/
    assert _native_imports(PKG / "probe.py", "from . import _core"), "from . import _core"


@pytest.mark.parametrize("src", ["from fastcert import _native", "from . import _core_ext",
                                 "from fastcert.smoothing import _core", "import fastcert._corex"])
def test_import_scan_ignores_other_modules(src):
    assert not _native_imports(PKG / "smoothing" / "probe.py", src), src


# ------------------------------------------------------------------------------------ the coordinate limit
def test_max_coordinates_is_one_number():
    assert _native.MAX_COORDINATES == _core.MAX_COORDINATES == 2**32
    assert fastcert.build_info()["max_coordinates"] == 2**32
    assert _native.check_coordinates(2**32) == 2**32
    with pytest.raises(ValueError, match="x has 4294967297 coordinates.*MAX_COORDINATES"):
        _native.check_coordinates(2**32 + 1)
    with pytest.raises(ValueError, match="^out has"):
        _native.check_coordinates(2**34, "out")


# ------------------------------------------------------------------------------------ CPU argument checks
def test_cpu_checks_name_the_argument():
    x = np.zeros(4, np.float32)
    out = np.zeros((2, 4), np.float32)
    G = _native.NOISE_GAUSSIAN
    _native.sample_cpu(x, out, 1, 0, 0, G, 0.5)
    assert np.abs(out).sum() > 0
    with pytest.raises(TypeError, match="^x must be a numpy array"):
        _native.sample_cpu(torch.zeros(4), out, 1, 0, 0, G, 0.5)
    with pytest.raises(TypeError, match="^x must have dtype float32"):
        _native.sample_cpu(x.astype(np.float64), out, 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^out must have shape"):
        _native.sample_cpu(x, np.zeros((2, 5), np.float32), 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^out must be C-contiguous"):
        _native.sample_cpu(x, np.zeros((4, 2), np.float32).T, 1, 0, 0, G, 0.5)
    ro = np.zeros((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="^out must be writeable"):
        _native.sample_cpu(x, ro, 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^seed must be in"):
        _native.sample_cpu(x, out, -1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^stream must be in"):
        _native.sample_cpu(x, out, 1, 2**32, 0, G, 0.5)
    with pytest.raises(ValueError, match="^start \\+ batch"):
        _native.sample_cpu(x, out, 1, 0, 2**64 - 1, G, 0.5)
    with pytest.raises(ValueError, match="^noise_type"):
        _native.sample_cpu(x, out, 1, 0, 0, 9, 0.5)
    with pytest.raises(ValueError, match="^scale"):
        _native.sample_cpu(x, out, 1, 0, 0, G, 0.0)
    with pytest.raises(ValueError, match="^K must be >= 1"):
        _native.noise_cpu(out, 1, 0, 0, _native.NOISE_DISCRETE, 1.0, 0, 0)
    with pytest.raises(TypeError, match="^seed must be an integer"):
        _native.noise_cpu(out, 1.5, 0, 0, G, 1.0)


def test_count_cpu_checks_name_the_argument():
    logits = np.array([[0.0, 1.0, 0.5], [2.0, 1.0, 0.0]], np.float32)
    counts = np.zeros(3, np.int64)
    assert _native.count_cpu(logits, counts) == 0
    assert list(counts) == [1, 1, 0]
    with pytest.raises(TypeError, match="^counts must have dtype int64"):
        _native.count_cpu(logits, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="^counts must have shape \\(3,\\)"):
        _native.count_cpu(logits, np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="^logits must have dtype"):
        _native.count_cpu(logits.astype(np.float16), counts)
    with pytest.raises(ValueError, match="^cls must be -1 or a class index"):
        _native.count_cpu(logits, counts, 3)
    with pytest.raises(ValueError, match="^score must have shape \\(2,\\)"):
        _native.count_cpu(logits, counts, 0, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="^margin needs cls >= 0"):
        _native.count_cpu(logits, counts, -1, None, np.zeros(2, np.float32))


# ------------------------------------------------------------------------------------ CUDA, without a GPU
class FakeCuda(torch.Tensor):
    """A tensor that claims a CUDA device and has no storage: enough for the checks and the pointer."""

    @staticmethod
    def __new__(cls, shape, dtype=torch.float32, device="cuda:1", contiguous=True):
        t = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device=device)
        t._contig = contiguous
        return t

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"FakeCuda has no data ({func})")

    def data_ptr(self):
        return 0x1000 + id(self) % 4096

    def is_contiguous(self, *a, **k):
        return self._contig


@pytest.fixture
def cuda_recorder(monkeypatch):
    """_core_cuda replaced by a recorder; torch.cuda.device / current_stream track the current device."""
    calls = []
    current = [torch.device("cuda", 0)]

    class Stream:
        def __init__(self, dev):
            self.cuda_stream = 7000 + dev.index

    @contextlib.contextmanager
    def device(dev):
        old = current[0]
        current[0] = torch.device(dev)
        try:
            yield
        finally:
            current[0] = old

    class Recorder:
        def __getattr__(self, name):
            def call(*args):
                calls.append((name, current[0], args))
            return call

    monkeypatch.setattr(_native, "_core_cuda", Recorder())
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev=None: Stream(torch.device(dev or current[0])))
    return calls


def test_cuda_launches_run_on_the_tensors_device(cuda_recorder):
    x, out = FakeCuda((3, 4)), FakeCuda((5, 12))
    _native.sample_cuda(x, out, 11, 1, 40, _native.NOISE_GAUSSIAN, 0.5)
    name, dev, args = cuda_recorder[-1]
    assert name == "sample" and dev == torch.device("cuda", 1)
    assert args[:7] == (x.data_ptr(), 12, out.data_ptr(), 5, 11, 1, 40)
    assert args[11] == 7001  # the stream of cuda:1, not of the current device cuda:0
    assert args[12:] == (0, 0)
    ctr, key = FakeCuda((1,), torch.int64), FakeCuda((2,), torch.int64)
    _native.sample_cuda(x, out, 0, 0, 0, _native.NOISE_GAUSSIAN, 0.5, start_dev=ctr, key_dev=key)
    assert cuda_recorder[-1][2][12:] == (ctr.data_ptr(), key.data_ptr())

    logits = FakeCuda((5, 10), torch.bfloat16, "cuda:2")
    counts, nan = FakeCuda((10,), torch.int64, "cuda:2"), FakeCuda((1,), torch.int64, "cuda:2")
    score = FakeCuda((5,), torch.float32, "cuda:2")
    _native.count_cuda(logits, counts, nan, 3, score)
    name, dev, args = cuda_recorder[-1]
    assert name == "count" and dev == torch.device("cuda", 2)
    assert args == (logits.data_ptr(), 2, 5, 10, counts.data_ptr(), nan.data_ptr(), 3, score.data_ptr(), 0, 7002)
    _native.advance_cuda(ctr, 1000)
    assert cuda_recorder[-1] == ("advance", torch.device("cuda", 1), (ctr.data_ptr(), 1000, 7001))


def test_cuda_checks_name_the_argument(cuda_recorder):
    x, out = FakeCuda((12,)), FakeCuda((5, 12))
    G = _native.NOISE_GAUSSIAN
    with pytest.raises(ValueError, match="^out is on cuda:0 but the other arguments are on cuda:1"):
        _native.sample_cuda(x, FakeCuda((5, 12), device="cuda:0"), 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^x must be on a CUDA device"):
        _native.sample_cuda(torch.zeros(12), out, 1, 0, 0, G, 0.5)
    with pytest.raises(TypeError, match="^out must have dtype torch.float32"):
        _native.sample_cuda(x, FakeCuda((5, 12), torch.float16), 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^out must be contiguous"):
        _native.sample_cuda(x, FakeCuda((5, 12), contiguous=False), 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^out must have shape \\(B, 12\\)"):
        _native.sample_cuda(x, FakeCuda((5, 13)), 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^x has 4294967297 coordinates"):
        _native.sample_cuda(FakeCuda((2**32 + 1,)), FakeCuda((1, 2**32 + 1)), 1, 0, 0, G, 0.5)
    with pytest.raises(ValueError, match="^key_dev must have shape \\(2,\\)"):
        _native.sample_cuda(x, out, 1, 0, 0, G, 0.5, key_dev=FakeCuda((3,), torch.int64))
    with pytest.raises(TypeError, match="^start_dev must have dtype torch.int64"):
        _native.sample_cuda(x, out, 1, 0, 0, G, 0.5, start_dev=FakeCuda((1,)))
    logits, nan = FakeCuda((5, 10)), FakeCuda((1,), torch.int64)
    with pytest.raises(TypeError, match="^logits must have dtype"):
        _native.count_cuda(FakeCuda((5, 10), torch.int32), FakeCuda((10,), torch.int64), nan)
    with pytest.raises(ValueError, match="^counts must have shape \\(10,\\)"):
        _native.count_cuda(logits, FakeCuda((9,), torch.int64), nan)
    with pytest.raises(ValueError, match="^nan_rows is on cuda:0"):
        _native.count_cuda(logits, FakeCuda((10,), torch.int64), FakeCuda((1,), torch.int64, "cuda:0"))
    with pytest.raises(ValueError, match="^margin needs cls >= 0"):
        _native.count_cuda(logits, FakeCuda((10,), torch.int64), nan, -1, None, FakeCuda((5,)))
    assert cuda_recorder == []  # nothing was launched


def test_missing_cuda_module_is_an_error(monkeypatch):
    monkeypatch.setattr(_native, "_core_cuda", None)
    with pytest.raises(RuntimeError, match="_core_cuda was not built"):
        _native.sample_cuda(FakeCuda((4,)), FakeCuda((2, 4)), 1, 0, 0, _native.NOISE_GAUSSIAN, 0.5)
    assert _native.cuda_device_count() == 0


# ------------------------------------------------------------------------------------ torchrun devices
def test_torchrun_device_uses_local_rank(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert _native.torchrun_device("cuda") == torch.device("cuda")  # not under torchrun: unchanged
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert _native.torchrun_device("cuda") == torch.device("cuda", 2)
    assert chosen == [torch.device("cuda", 2)]
    assert _native.torchrun_device("cuda:3") == torch.device("cuda", 3)  # an explicit index wins
    assert _native.torchrun_device("cpu") == torch.device("cpu")
    assert distributed.rank_device("cuda") == "cuda:2"
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(ValueError, match="LOCAL_RANK=5 but this node has 4"):
        _native.torchrun_device("cuda")
    with pytest.raises(CliError, match="LOCAL_RANK=5"):
        distributed.rank_device("cuda")


def test_rank_world(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.rank_world() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.rank_world() == (3, 4)
    assert distributed.part_path("log.tsv", 3, 4) == "log.tsv.part3of4"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(CliError, match="bad RANK=4 / WORLD_SIZE=4"):
        distributed.rank_world()


# ------------------------------------------------------------------------------------ Triton launchers
def test_triton_launchers_check_their_shapes():
    from fastcert.ibp.triton.path import _Runner

    run = _Runner({}, {})  # no kernels: every bad call must stop before a launch
    x = torch.zeros(2, 3, 4, 4)
    one = torch.ones(1)
    with pytest.raises(ValueError, match="^eps: one budget per sample"):
        run.box(x, torch.zeros(3), 0.0, 1.0, one, torch.zeros(1))
    with pytest.raises(ValueError, match="^scale/shift"):
        run.box(x, torch.zeros(2), 0.0, 1.0, torch.ones(2), torch.zeros(2))
    with pytest.raises(TypeError, match="^x: float32"):
        run.box(x.double(), torch.zeros(2), 0.0, 1.0, one, torch.zeros(1))
    with pytest.raises(ValueError, match="^y: the stacked"):
        run.epilogue(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="^scale: 2"):
        run.epilogue(torch.zeros(2, 4, 4), torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="^add: shape"):
        run.epilogue(torch.zeros(2, 4, 4), add=torch.zeros(2, 4, 5))
    lin = torch.nn.Linear(5, 3)
    with pytest.raises(ValueError, match="^y: 4 input features"):
        run.linear(torch.zeros(2, 8), lin, torch.ones(3), torch.zeros(3), False)
    with pytest.raises(ValueError, match="^shift: 3"):
        run.linear(torch.zeros(2, 10), lin, torch.ones(3), torch.zeros(4), False)
