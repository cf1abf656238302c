"""fastcert checkpoints: weights plus everything needed to rebuild the model (architecture name and
kwargs, input shape, classes, normalization, training configuration).

Format ``fastcert-checkpoint-2`` (written since issue 16) is one safetensors file: the model's state
dict under ``model/<name>``, tensors of the extra entries (optimizer state for resuming training)
under ``extra/<i>``, and one JSON document in the safetensors header's ``__metadata__["fastcert"]``:
``{"format", "arch", "arch_kwargs", "input_shape", "num_classes", "mean", "std", "config", "extra"}``.
Reading it never unpickles anything.

The older ``fastcert-checkpoint-1`` (a ``torch.save`` dict) is still read, with ``weights_only=True``:
a pickle that asks for anything beyond tensors, dicts, lists, tuples, strings and numbers is refused
before any of it runs. Files are told apart by their first bytes, never by their name, so any
extension (``--out runs/digits.pt``) works.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import torch
from torch import nn

from fastcert.io.files import atomic_write
from fastcert.models.zoo import build_model
from fastcert.validate import check_device

FORMAT = "fastcert-checkpoint-2"
FORMAT_V1 = "fastcert-checkpoint-1"
_META_KEY = "fastcert"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


# ----------------------------------------------------------------------------- file kinds
def sniff(path) -> str:
    """The kind of file at ``path`` from its first bytes: "safetensors", "zip" (torch.save, TorchScript,
    torch.export), "pickle" (torch.save's legacy format) or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(9)
        size = f.seek(0, 2)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 2 <= n <= min(size - 8, _MAX_HEADER):
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2: torch.save's legacy (pre-zip) format
        return "pickle"
    return "unknown"


def _check_file(path, name: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name}: checkpoint not found: {path}")
    if not path.is_file():
        raise ValueError(f"{name}: {path} is not a file")
    return path


def safe_torch_load(path, name: str = "model"):
    """``torch.load(path, weights_only=True)`` with errors that name the argument and the file.

    A pickle that asks for a global outside the weights-only allow-list (``os.system`` and the like) is
    refused with a ValueError before anything it asks for is run."""
    path = _check_file(path, name)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = re.search(r"(?:Unsupported global|Unsupported operand|Unsupported class)[^\n.]*", str(e))
        detail = f" ({what.group(0).strip()})" if what else ""
        raise ValueError(f"{name}: refusing to load {path}: it is a pickle that asks to run code or build "
                         f"objects a checkpoint never contains{detail}; nothing in it was run") from None
    except Exception as e:  # a torn or foreign file
        raise ValueError(f"{name}: {path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def read_safetensors(path, name: str = "model") -> tuple[dict, dict]:
    """(tensors on the CPU, the header's ``__metadata__`` dict of strings) of a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = _check_file(path, name)
    data = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        tensors = st_load(data)
    except (SafetensorError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"{name}: {path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    return tensors, meta


# ----------------------------------------------------------------------------- JSON with tensors
# JSON keeps lists, string-keyed dicts, strings, numbers, booleans and None as they are; the tags below
# bring back what JSON alone would lose, so a resumed optimizer gets exactly the state it saved.
def _encode(obj, tensors: dict, where: str):
    if isinstance(obj, torch.Tensor):
        key = f"extra/{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, where) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, where) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, where) for k, v in obj.items()}
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in obj):
            raise TypeError(f"{where}: checkpoint dict keys must be str or int, got {list(obj)!r}")
        return {"__items__": [[k, _encode(v, tensors, where)] for k, v in obj.items()]}
    raise TypeError(f"{where}: cannot store a {type(obj).__name__} in a checkpoint (tensors, dicts, lists, "
                    "tuples, str, int, float, bool and None can be stored)")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1:
            (tag, value), = obj.items()
            if tag == "__tensor__":
                return tensors[value]
            if tag == "__tuple__":
                return tuple(_decode(v, tensors) for v in value)
            if tag == "__items__":
                return {k: _decode(v, tensors) for k, v in value}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- save / read / load
def save_checkpoint(path, model: nn.Module, *, arch: str, input_shape, num_classes: int, mean, std,
                    arch_kwargs: dict | None = None, config: dict | None = None, extra: dict | None = None) -> None:
    """Save weights with everything needed to rebuild the model (atomically), as safetensors + JSON.

    ``extra`` entries (for example ``{"train_state": {"optimizer": ..., "scheduler": ...}}``) may hold
    tensors, dicts (str or int keys), lists, tuples and scalars; they come back from
    :func:`read_checkpoint` and in :func:`load_checkpoint`'s metadata. The same inputs give the same
    bytes."""
    from safetensors.torch import save as st_save

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        # a private contiguous copy: safetensors refuses tensors that share memory (views, tied weights)
        tensors[f"model/{k}"] = v.detach().cpu().contiguous().clone()
    meta = {
        "format": FORMAT,
        "arch": str(arch),
        "arch_kwargs": _encode(dict(arch_kwargs or {}), tensors, "arch_kwargs"),
        "input_shape": [int(s) for s in input_shape],
        "num_classes": int(num_classes),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "config": _encode(dict(config or {}), tensors, "config"),
        "extra": _encode(dict(extra or {}), tensors, "extra"),
    }
    header = json.dumps(meta, separators=(",", ":"))
    # one metadata key: the safetensors header then has a fixed order, so equal inputs give equal bytes
    data = st_save(tensors, metadata={_META_KEY: header})

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def read_checkpoint(path, name: str = "model") -> tuple[dict, dict]:
    """(state dict, metadata) of a fastcert checkpoint of either format, without building the model.

    The metadata has ``format``, ``arch``, ``arch_kwargs``, ``input_shape``, ``num_classes``, ``mean``,
    ``std``, ``config`` and the extra entries given to :func:`save_checkpoint` (``train_state``...).
    Raises ValueError naming ``name`` and the file for anything else."""
    path = _check_file(path, name)
    kind = sniff(path)
    if kind == "safetensors":
        tensors, header = read_safetensors(path, name)
        try:
            meta = json.loads(header[_META_KEY])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{name}: {path} is a safetensors file but not a fastcert checkpoint "
                             "(a plain state dict goes with a 'package.module:factory' model spec)") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{name}: {path} is not a fastcert checkpoint")
        state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            out = {"format": FORMAT, "arch": meta["arch"], "arch_kwargs": _decode(meta["arch_kwargs"], tensors),
                   "input_shape": tuple(meta["input_shape"]), "num_classes": meta["num_classes"],
                   "mean": tuple(meta["mean"]), "std": tuple(meta["std"]), "config": _decode(meta["config"], tensors)}
            extra = _decode(meta.get("extra", {}), tensors)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{name}: {path} is a damaged fastcert checkpoint (its metadata is incomplete)") from None
        out.update({k: v for k, v in extra.items() if k not in out})
        return state, out
    if kind not in ("zip", "pickle"):
        raise ValueError(f"{name}: {path} is not a readable checkpoint (neither safetensors nor torch.save)")
    payload = safe_torch_load(path, name)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_V1 or "state_dict" not in payload:
        raise ValueError(f"{name}: {path} is not a fastcert checkpoint")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return payload["state_dict"], meta


def load_checkpoint(path, device="cpu"):
    """Load a checkpoint written by :func:`save_checkpoint` (or an older ``.pt`` one) -> (model in eval
    mode, metadata dict). Never unpickles arbitrary objects."""
    device = check_device(device)
    state, meta = read_checkpoint(path, "model")
    try:
        model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"], meta["mean"], meta["std"],
                            **meta.get("arch_kwargs", {}))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"model: {path} does not rebuild its model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    model.to(device).eval()
    return model, meta
