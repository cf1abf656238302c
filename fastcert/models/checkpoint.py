"""fastcert checkpoints: weights plus everything needed to rebuild the model (architecture name and
kwargs, input shape, classes, normalization, training configuration)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastcert.io.files import atomic_write
from fastcert.models.zoo import build_model
from fastcert.validate import check_device


def save_checkpoint(path, model: nn.Module, *, arch: str, input_shape, num_classes: int, mean, std,
                    arch_kwargs: dict | None = None, config: dict | None = None, extra: dict | None = None) -> None:
    """Save weights with everything needed to rebuild the model (atomically)."""
    payload = {
        "format": "fastcert-checkpoint-1",
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "input_shape": tuple(int(s) for s in input_shape),
        "num_classes": int(num_classes),
        "mean": tuple(float(v) for v in mean),
        "std": tuple(float(v) for v in std),
        "config": dict(config or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if extra:
        payload.update(extra)

    def write(tmp):
        # through a file object: torch.save names the zip records after a file path, and the temporary
        # path is random, so saving by path would make identical checkpoints differ byte for byte
        with open(tmp, "wb") as f:
            torch.save(payload, f)
    atomic_write(path, write)


def load_checkpoint(path, device="cpu"):
    """Load a checkpoint written by :func:`save_checkpoint` -> (model in eval mode, metadata dict)."""
    device = check_device(device)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn or foreign file
        raise ValueError(f"model: {path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != "fastcert-checkpoint-1":
        raise ValueError(f"model: {path} is not a fastcert checkpoint")
    model = build_model(payload["arch"], payload["input_shape"], payload["num_classes"], payload["mean"],
                        payload["std"], **payload.get("arch_kwargs", {}))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
