"""Any model in: ``load_model(spec) -> (nn.Module, metadata)``.

``spec`` is one of
- (a) a fastcert checkpoint (safetensors + JSON, or the older ``.pt``; see fastcert.models.checkpoint);
- (b) a TorchScript file (``torch.jit.save``);
- (c) a ``torch.export`` program (``torch.export.save``, usually ``.pt2``);
- (d) ``"package.module:factory"``: ``factory()`` returns an ``nn.Module`` (or ``(module, info)`` with
  ``info`` stating some of ``input_shape``, ``num_classes``, ``mean``, ``std``), and ``weights=FILE``
  (a state dict saved by ``torch.save``, or a safetensors file) is loaded into it;
- (e) Cohen et al.'s released checkpoints (Certified Adversarial Robustness via Randomized Smoothing,
  ICML 2019): ``{"arch": "cifar_resnet20" | "cifar_resnet110" | "resnet50", "state_dict": ...}``, the
  state dict of ``Sequential(NormalizeLayer, network)`` (``module.`` prefixes of DataParallel for the
  ImageNet model); the normalization constants are those of their ``code/datasets.py``.

Files are recognised by their content, never by their name, and nothing is ever unpickled beyond
tensors, dicts, lists, tuples, strings and numbers (``torch.load(weights_only=True)``).

Formats (b)-(e) carry no training metadata: the metadata states what is known (input shape,
normalization, number of classes) and has an empty ``config`` (no noise). Every model is checked at
load: one forward pass on a (1, C, H, W) input must give (1, num_classes) logits.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from fastcert.models.checkpoint import FORMAT, FORMAT_V1, load_checkpoint, read_safetensors, safe_torch_load, sniff
from fastcert.models.zoo import CifarResNet, Normalize, ResNet50
from fastcert.validate import check_device

# Cohen et al., code/datasets.py (locuslab/smoothing): _CIFAR10_MEAN/_CIFAR10_STDDEV and
# _IMAGENET_MEAN/_IMAGENET_STDDEV, applied by the NormalizeLayer in front of every released network.
COHEN_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Cohen's arch name -> (dataset, fastcert zoo name, input shape)
COHEN_ARCHS = {
    "cifar_resnet20": ("cifar10", "resnet20", (3, 32, 32)),
    "cifar_resnet110": ("cifar10", "resnet110", (3, 32, 32)),
    "resnet50": ("imagenet", "resnet50", (3, 224, 224)),
}

_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_model(spec, *, weights=None, input_shape=None, num_classes=None, mean=None, std=None, sample=None,
               device="cpu") -> tuple[nn.Module, dict]:
    """Load a model from ``spec`` (see the module docstring for the five accepted forms).

    Args:
        spec: a file path, or ``"package.module:factory"``.
        weights: a state dict file (``torch.save`` or safetensors) for a factory spec; only for those.
        input_shape: (C, H, W) of one input. Required for TorchScript files and factories that do not
            state it; for checkpoints it must agree with the recorded one (Cohen's: overrides it).
        num_classes: if given, the number of logits the model must give.
        mean, std: per-channel normalization for a TorchScript / torch.export / factory model that
            expects normalized inputs: the model is wrapped as ``Sequential(Normalize(mean, std), model)``
            and then takes images in [0, 1]. Checkpoints (fastcert's, Cohen's) carry their own.
        sample: an input for the check at load, (C, H, W) or (1, C, H, W) (e.g. a dataset image);
            default: a fixed pseudo-random input of ``input_shape``.
        device: where the model is put.

    Returns:
        (model in eval mode on ``device``, metadata dict). The metadata has at least ``format``,
        ``input_shape``, ``num_classes``, ``mean``, ``std`` (None where unknown) and ``config``
        (the training configuration; empty outside fastcert checkpoints).

    Raises:
        FileNotFoundError: no such file. ValueError: an unsafe, foreign or damaged file, a model that does
        not fit the input shape or the number of classes (saying what did not fit), or bad arguments.
    """
    device = check_device(device)
    input_shape = _shape("input_shape", input_shape)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if sample is not None:
        sample = _sample(sample, input_shape)
        input_shape = input_shape or tuple(sample.shape[1:])
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"model must be a path or a 'package.module:factory' string, got {type(spec).__name__}")
    text = os.fspath(spec)
    if isinstance(spec, str) and _FACTORY.match(text) and not Path(text).exists():
        model, meta = _from_factory(text, weights, input_shape, num_classes, mean, std)
        return _finish(model, meta, text, sample, device)
    if weights is not None:
        raise ValueError("weights: only a 'package.module:factory' model spec takes weights")
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"model: checkpoint not found: {path}")
    if not path.is_file():
        raise ValueError(f"model: {path} is not a file")
    kind = sniff(path)
    if kind == "zip":
        names = _zip_names(path)
        if any(n.endswith("/archive_format") or n == "archive_format" or "serialized_exported_program" in n
               for n in names):
            model, meta = _from_export(path, names)
            meta = _fill(meta, input_shape, num_classes, mean, std, str(path))
            return _finish(_wrap(model, mean, std), meta, str(path), sample, device)
        if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
            model = _guard(path, lambda: torch.jit.load(str(path), map_location="cpu"))
            meta = _fill({"format": "torchscript"}, input_shape, num_classes, mean, std, str(path))
            return _finish(_wrap(model, mean, std), meta, str(path), sample, device)
    if kind in ("zip", "pickle"):
        payload = safe_torch_load(path, "model")
        if isinstance(payload, dict) and payload.get("format") == FORMAT_V1:
            return _checkpoint(path, input_shape, num_classes, mean, std, sample, device)
        if isinstance(payload, dict) and payload.get("arch") in COHEN_ARCHS and "state_dict" in payload:
            model, meta = _from_cohen(path, payload, input_shape, mean, std)
            meta = _fill(meta, None, num_classes, None, None, str(path))
            return _finish(model, meta, str(path), sample, device)
        raise ValueError(f"model: {path} is not a model: a torch.save file that is neither a fastcert nor a "
                         "Cohen et al. checkpoint (a plain state dict goes with a 'package.module:factory' spec "
                         "and weights=)")
    if kind == "safetensors":
        _, header = read_safetensors(path, "model")
        if "fastcert" not in header:
            raise ValueError(f"model: {path} is a safetensors file without fastcert metadata (a plain state "
                             "dict goes with a 'package.module:factory' spec and weights=)")
        return _checkpoint(path, input_shape, num_classes, mean, std, sample, device)
    raise ValueError(f"model: {path} is not a model file fastcert can read (fastcert checkpoint, TorchScript, "
                     "torch.export .pt2 or Cohen et al.'s checkpoint)")


# ----------------------------------------------------------------------------- argument checks
def _shape(name, shape):
    if shape is None:
        return None
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a tuple of ints (C, H, W), got {shape!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{name} must be (C, H, W) of positive sizes, got {shape!r}")
    return out


def _sample(sample, input_shape):
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"sample must be a torch.Tensor, got {type(sample).__name__}")
    x = sample.detach().to(torch.float32)
    if input_shape is None or tuple(x.shape) == input_shape:
        return x.unsqueeze(0)  # one input, e.g. a dataset image
    if tuple(x.shape) == (1, *input_shape):
        return x
    raise ValueError(f"sample must have shape input_shape {input_shape} or (1, *input_shape), "
                     f"got {tuple(sample.shape)}")


def _tuple_or_none(v):
    return None if v is None else tuple(float(t) for t in torch.as_tensor(v, dtype=torch.float64).flatten())


def _fill(meta, input_shape, num_classes, mean, std, source):
    """Metadata of a format without training metadata: what is known, noise left unset."""
    meta = dict(meta)
    meta.setdefault("input_shape", None)
    meta.setdefault("mean", None)
    meta.setdefault("std", None)
    meta.setdefault("num_classes", None)
    if input_shape is not None:
        meta["input_shape"] = tuple(input_shape)
    if mean is not None:
        meta["mean"], meta["std"] = _tuple_or_none(mean), _tuple_or_none(std)
    if num_classes is not None:
        meta["num_classes"] = int(num_classes)
    meta.setdefault("config", {})
    meta["source"] = source
    return meta


def _wrap(model, mean, std):
    return model if mean is None else nn.Sequential(Normalize(mean, std), model)


# ----------------------------------------------------------------------------- (a) fastcert checkpoints
def _checkpoint(path, input_shape, num_classes, mean, std, sample, device):
    if mean is not None:
        raise ValueError("mean: a fastcert checkpoint carries its own normalization; pass no mean/std")
    model, meta = load_checkpoint(path, device="cpu")
    if input_shape is not None and tuple(input_shape) != tuple(meta["input_shape"]):
        raise ValueError(f"input_shape: {path} was trained on inputs of shape {tuple(meta['input_shape'])}, "
                         f"got {tuple(input_shape)}")
    if num_classes is not None and int(num_classes) != int(meta["num_classes"]):
        raise ValueError(f"num_classes: {path} has {meta['num_classes']} classes, got {num_classes}")
    return _finish(model, meta, str(path), sample, device)


# ----------------------------------------------------------------------------- (b), (c) TorchScript, export
def _zip_names(path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"model: {path} is not a readable checkpoint ({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def _weights_only_everywhere():
    """Force every torch.load inside (including those torch.export.load makes with weights_only=False
    and its fallback after a refused pickle) to load weights only."""
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _guard(path, fn):
    import pickle

    try:
        with _weights_only_everywhere():
            return fn()
    except pickle.UnpicklingError:
        raise ValueError(f"model: refusing to load {path}: it holds a pickle that asks to run code or build "
                         "objects a model file never needs; nothing in it was run") from None
    except Exception as e:  # noqa: BLE001 - a torn or foreign archive
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"model: {path} is not a readable model file ({type(e).__name__}: {msg})") from None


class ExportedModel(nn.Module):
    """A ``torch.export`` program as a module. The program's graph is fixed (its train/eval behaviour was
    set when it was exported), so ``train()``/``eval()`` only set the flag. A program exported for one
    batch size is run on chunks of that size (the last one padded), so any batch works."""

    def __init__(self, program: nn.Module, batch: int | None):
        super().__init__()
        self.program = program
        self.batch = batch

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def forward(self, x):
        if self.batch is None or x.shape[0] == self.batch:
            return self.program(x)
        outs = []
        for i in range(0, x.shape[0], self.batch):
            chunk = x[i:i + self.batch]
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))])
            outs.append(self.program(chunk)[:n])
        return torch.cat(outs)


def _from_export(path, names):
    # torch.export archives may hold objects stored with plain pickle (opaque / torchbind constants),
    # which torch.export.load unpickles without restriction: refuse those archives unread
    bad = [n for n in names if "opaque_obj_" in n or "custom_obj_" in n]
    if bad:
        raise ValueError(f"model: refusing to load {path}: it holds pickled objects ({bad[0]}) that could run "
                         "code when read; nothing in it was run")
    if tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2]) < (2, 6):
        # older torch has no TORCH_FORCE_WEIGHTS_ONLY_LOAD, so torch.export.load could unpickle freely
        raise ValueError(f"model: loading a torch.export program ({path}) safely needs torch >= 2.6, "
                         f"this is {torch.__version__}")
    program = _guard(path, lambda: torch.export.load(str(path)))
    meta = {"format": "torch.export"}
    args = (program.example_inputs or ((), {}))[0]
    example = args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
    if example is not None and example.dim() >= 2:
        meta["input_shape"] = tuple(int(s) for s in example.shape[1:])
    module = program.module()
    batch = None
    if example is not None and example.dim() >= 2:
        probe = torch.zeros((example.shape[0] + 1, *example.shape[1:]), dtype=example.dtype)
        try:
            with torch.no_grad():
                module(probe)
        except Exception:  # noqa: BLE001 - exported for a fixed batch size
            batch = int(example.shape[0])
    return ExportedModel(module, batch), meta


# ----------------------------------------------------------------------------- (d) factories
def _from_factory(spec, weights, input_shape, num_classes, mean, std):
    modname, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(modname)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model: cannot find the factory {spec} ({type(e).__name__}: {e})") from None
    if not callable(obj):
        raise ValueError(f"model: {spec} is not callable")
    made = obj()
    info = {}
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], dict):
        made, info = made
    if not isinstance(made, nn.Module):
        raise ValueError(f"model: the factory {spec} returned a {type(made).__name__}, not an nn.Module "
                         "(or (nn.Module, dict))")
    unknown = set(info) - {"input_shape", "num_classes", "mean", "std"}
    if unknown:
        raise ValueError(f"model: the factory {spec} states unknown keys {sorted(unknown)}; it may state "
                         "input_shape, num_classes, mean and std")
    stated = {"input_shape": _shape("input_shape", info.get("input_shape")), "num_classes": info.get("num_classes"),
              "mean": _tuple_or_none(info.get("mean")), "std": _tuple_or_none(info.get("std"))}
    given = {"input_shape": input_shape, "num_classes": num_classes, "mean": _tuple_or_none(mean),
             "std": _tuple_or_none(std)}
    for k in stated:
        if stated[k] is not None and given[k] is not None and stated[k] != given[k]:
            raise ValueError(f"{k}: the factory {spec} states {stated[k]}, got {given[k]}")
        if given[k] is None:
            given[k] = stated[k]
    if (given["mean"] is None) != (given["std"] is None):
        raise ValueError(f"model: the factory {spec} must state mean and std together")
    if weights is not None:
        _load_weights(made, weights, spec)
    meta = _fill({"format": "factory", "weights": None if weights is None else str(weights)},
                 given["input_shape"], given["num_classes"], given["mean"], given["std"], spec)
    return _wrap(made, given["mean"], given["std"]), meta


def _strip_prefix(state: dict, prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_weights(model: nn.Module, weights, spec):
    path = Path(os.fspath(weights))
    if not path.exists():
        raise FileNotFoundError(f"weights: file not found: {path}")
    kind = sniff(path) if path.is_file() else "unknown"
    if kind == "safetensors":
        state, header = read_safetensors(path, "weights")
        if "fastcert" in header:  # a fastcert checkpoint: its model's weights
            state = {k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")}
    elif kind in ("zip", "pickle"):
        state = safe_torch_load(path, "weights")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    else:
        raise ValueError(f"weights: {path} is neither a safetensors file nor a torch.save state dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"weights: {path} is not a state dict (a dict of names to tensors)")
    state = _strip_prefix(state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"weights: {path} does not fit the model of {spec}: "
                         f"{' '.join(str(e).split())[:500]}") from None


# ----------------------------------------------------------------------------- (e) Cohen et al.
def _cohen_key(key: str) -> str | None:
    """Cohen's state-dict name -> the network's own name: drop DataParallel's ``module.`` and the
    ``1.`` of ``Sequential(NormalizeLayer, network)``; None for the NormalizeLayer's own entries."""
    parts = key.split(".")
    while parts and parts[0] == "module":
        parts = parts[1:]
    if parts and parts[0] == "0":
        return None
    if parts and parts[0] == "1":
        parts = parts[1:]
    while parts and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def cohen_cifar_to_zoo(key: str, blocks_per_stage: int) -> str:
    """Name in Cohen's CIFAR ResNet (code/archs/cifar_resnet.py: conv1, bn1, layer1..3 of BasicBlocks
    with downsample, fc) -> name in fastcert's CifarResNet (conv, bn, layers, shortcut, fc). The two
    compute the same function at 32x32 (AvgPool2d(8) there, global average pooling here)."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return ".".join(["conv", *parts[1:]])
    if parts[0] == "bn1":
        return ".".join(["bn", *parts[1:]])
    m = re.fullmatch(r"layer([123])", parts[0])
    if m and len(parts) >= 3 and parts[1].isdigit():
        index = (int(m.group(1)) - 1) * blocks_per_stage + int(parts[1])
        rest = ["shortcut" if p == "downsample" else p for p in parts[2:3]] + parts[3:]
        return ".".join(["layers", str(index), *rest])
    return key


def _from_cohen(path, payload, input_shape, mean, std):
    if mean is not None:
        raise ValueError("mean: Cohen et al.'s checkpoints come with their own normalization; pass no mean/std")
    arch = payload["arch"]
    dataset, zoo_arch, default_shape = COHEN_ARCHS[arch]
    raw = payload["state_dict"]
    if not isinstance(raw, dict):
        raise ValueError(f"model: {path}: its state_dict is not a dict")
    state = {}
    for k, v in raw.items():
        name = _cohen_key(str(k))
        if name is not None:
            state[name] = v
    if not isinstance(state.get("fc.weight"), torch.Tensor) or not isinstance(state.get("conv1.weight"), torch.Tensor):
        raise ValueError(f"model: {path} is not a {arch} state dict (no conv1.weight / fc.weight)")
    num_classes = int(state["fc.weight"].shape[0])
    shape = tuple(input_shape) if input_shape is not None else default_shape
    if zoo_arch == "resnet50":
        width = int(state["conv1.weight"].shape[0])
        body = ResNet50(shape, num_classes, width=width)
        arch_kwargs = {} if width == 64 else {"width": width}
    else:
        depth = 20 if zoo_arch == "resnet20" else 110
        body = CifarResNet(depth, shape, num_classes)
        state = {cohen_cifar_to_zoo(k, (depth - 2) // 6): v for k, v in state.items()}
        arch_kwargs = {}
    # BatchNorm's num_batches_tracked (unused in eval) is missing from checkpoints of old torch versions
    own = body.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    try:
        body.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"model: {path} does not fit Cohen et al.'s {arch}: {' '.join(str(e).split())[:500]}") \
            from None
    m, s = COHEN_NORMALIZATION[dataset]
    model = nn.Sequential(Normalize(m, s), body)
    meta = {"format": "cohen", "cohen_arch": arch, "arch": zoo_arch, "arch_kwargs": arch_kwargs,
            "dataset": dataset, "input_shape": shape, "num_classes": num_classes, "mean": m, "std": s}
    return model, meta


# ----------------------------------------------------------------------------- the check at load
def _finish(model, meta, source, sample, device):
    shape = meta.get("input_shape")
    if sample is None and shape is None:
        raise ValueError(f"input_shape: {source} does not record its input shape; pass input_shape=(C, H, W) "
                         "(on the command line: --dataset)")
    model = model.to(device).eval()
    x = sample if sample is not None else torch.rand((1, *shape), generator=torch.Generator().manual_seed(0))
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"sample: {source} takes inputs of shape {tuple(shape)}, the sample is {tuple(x.shape[1:])}")
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as e:  # noqa: BLE001 - the user's network: report what did not fit
        msg = " ".join(str(e).split())[:300]
        raise ValueError(f"model: {source} does not run on an input of shape {tuple(x.shape)} "
                         f"({type(e).__name__}: {msg})") from None
    want = meta.get("num_classes")
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: {source} gives {got} on an input of shape {tuple(x.shape)}; expected "
                         f"(1, {want if want else 'num_classes'}) logits")
    if want is not None and out.shape[1] != int(want):
        raise ValueError(f"num_classes: {source} gives {out.shape[1]} logits, expected {want}")
    meta = dict(meta)
    meta["num_classes"] = int(out.shape[1])
    meta["input_shape"] = tuple(int(s) for s in x.shape[1:])
    return model, meta


__all__ = ["load_model", "ExportedModel", "COHEN_ARCHS", "COHEN_NORMALIZATION", "FORMAT"]
