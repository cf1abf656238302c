"""Training: noise augmentation for randomized smoothing (Gaussian as in Cohen et al. 2019; Laplace,
uniform and discrete the same way), and dispatch to certified training (IBP / ACERT) in
fastcert.training.certified.

Deterministic: epoch e shuffles and draws noise from a generator seeded by (seed, e), so a run that
was interrupted and resumed from its last epoch checkpoint ends with the same weights as one that
never stopped. Checkpoints are written atomically after every epoch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastcert.data import Dataset
from fastcert.rng import torch_generator
from fastcert.training.certified import train_certified
from fastcert.models.zoo import build_model
from fastcert.validate import check_device
from fastcert.models.checkpoint import save_checkpoint

NOISE_METHODS = ("gaussian", "laplace", "uniform", "discrete", "none")
CERTIFIED_METHODS = ("ibp", "acert")
METHODS = NOISE_METHODS + CERTIFIED_METHODS


def add_noise(x: torch.Tensor, method: str, g: torch.Generator, sigma: float = 0.0, alpha_keep: float = 0.0,
              K: int = 255) -> torch.Tensor:
    """A noisy copy of the batch x for noise-augmentation training (same noise families as Smooth)."""
    if method == "none":
        return x
    if method == "gaussian":
        return x + sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    if method == "laplace":
        u = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype).clamp_(1e-7, 1 - 1e-7) - 0.5
        return x - sigma * torch.sign(u) * torch.log1p(-2 * u.abs())
    if method == "uniform":
        return x + sigma * (2 * torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) - 1)
    if method == "discrete":
        lvl = torch.round(x * K).long()
        keep = torch.rand(x.shape, generator=g, device=x.device) < float(alpha_keep)
        off = torch.randint(0, K, x.shape, generator=g, device=x.device)
        new = (lvl + 1 + off) % (K + 1)
        return torch.where(keep, lvl, new).to(x.dtype) / K
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1000, device="cpu") -> float:
    """Clean accuracy."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            xb = data.x[i:i + batch_size].to(device)
            correct += int((model(xb).argmax(1).cpu() == data.y[i:i + batch_size]).sum())
    return correct / max(len(data), 1)


def train(model, dataset: Dataset, method: str = "gaussian", *, sigma: float = 0.25, alpha_keep: float = 0.8,
          K: int = 255, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
          seed: int = 0, device="cpu", out=None, arch: str | None = None, arch_kwargs: dict | None = None,
          progress: bool = True, log=print, **kwargs):
    """Train ``model`` on ``dataset`` and return it (in eval mode).

    model: an nn.Module (e.g. from fastcert.build_model) or an architecture name of the zoo (built
    with the dataset's input shape and normalization). method: "gaussian" | "laplace" | "uniform"
    (``sigma`` is the noise scale: sigma, Laplace scale, uniform half-width) | "discrete"
    (``alpha_keep``, ``K``) | "none" | "ibp" | "acert" (fastcert.training.certified; extra kwargs go
    there). With ``out`` a checkpoint is written after every epoch, and an unfinished checkpoint at
    ``out`` with the same configuration is resumed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(dataset, Dataset):
        raise TypeError("dataset must be a fastcert.data.Dataset (see fastcert.load_dataset)")
    if isinstance(model, str):
        arch = model
        torch.manual_seed(int(seed))  # the initial weights depend on the seed only, not on earlier RNG use
        model = build_model(arch, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std,
                            **(arch_kwargs or {}))
    if not isinstance(model, nn.Module):
        raise TypeError("model must be an nn.Module or an architecture name")
    device = check_device(device)
    if method in CERTIFIED_METHODS:

        return train_certified(model, dataset, method=method, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, device=device, out=out, arch=arch, arch_kwargs=arch_kwargs,
                               progress=progress, log=log, **kwargs)
    if kwargs:
        raise TypeError(f"unexpected arguments for method {method!r}: {sorted(kwargs)}")
    sigma, alpha_keep, lr, weight_decay = (_real(n, v) for n, v in (("sigma", sigma), ("alpha_keep", alpha_keep),
                                                                      ("lr", lr), ("weight_decay", weight_decay)))
    epochs, batch_size, K = (_integer(n, v) for n, v in (("epochs", epochs), ("batch_size", batch_size), ("K", K)))
    if method in ("gaussian", "laplace", "uniform") and not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if method == "discrete" and not (0 < alpha_keep < 1):
        raise ValueError(f"alpha_keep must be in (0, 1), got {alpha_keep}")
    if method == "discrete" and K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if epochs < 1 or batch_size < 1 or not (math.isfinite(lr) and lr > 0):
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    config = {"method": method, "sigma": float(sigma), "alpha_keep": float(alpha_keep), "K": int(K),
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
              "weight_decay": float(weight_decay), "seed": int(seed), "dataset": dataset.name}
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.25)
    start_epoch = 0
    if out is not None and Path(out).exists():
        start_epoch = _try_resume(out, model, opt, sched, config, log)
    from tqdm.auto import tqdm

    x_all, y_all = dataset.x, dataset.y
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        model.train()
        g_cpu = torch_generator(seed, epoch, "cpu")
        g_dev = torch_generator(seed, epoch + 10_000, device)
        perm = torch.randperm(len(dataset), generator=g_cpu)
        total, correct, loss_sum = 0, 0, 0.0
        it = range(0, len(dataset), batch_size)
        bar = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for i in bar:
            idx = perm[i:i + batch_size]
            xb, yb = x_all[idx].to(device), y_all[idx].to(device)
            xn = add_noise(xb, method, g_dev, sigma=sigma, alpha_keep=alpha_keep, K=K)
            logits = model(xn)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            loss_sum += float(loss.detach()) * len(yb)
        kind = "train acc" if method == "none" else "noisy train acc"
        log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f}, {kind} {correct / total:.4f} "
            f"({time.time() - t0:.1f}s)")
        if out is not None:
            _save(out, model, opt, sched, config, epoch + 1, arch, arch_kwargs, dataset)
    model.eval()
    return model


def _save(out, model, opt, sched, config, epochs_done, arch, arch_kwargs, dataset):
    if arch is None:
        raise ValueError("out: saving a checkpoint needs the architecture name (pass the model as an arch name)")
    cfg = dict(config, epochs_done=int(epochs_done))
    save_checkpoint(out, model, arch=arch, arch_kwargs=arch_kwargs, input_shape=dataset.input_shape,
                    num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std, config=cfg,
                    extra={"train_state": {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}})


def _real(name, value) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def _integer(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _try_resume(out, model, opt, sched, config, log) -> int:
    try:
        payload = torch.load(out, map_location="cpu", weights_only=False)
    except Exception as e:  # checkpoints are written atomically: an unreadable file is not ours
        raise ValueError(f"out: {out} exists but is not a readable checkpoint ({type(e).__name__}); "
                         "choose another --out or delete it") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"out: {out} exists but is not a fastcert checkpoint; choose another --out or delete it")
    old = dict(payload.get("config", {}))
    done = int(old.pop("epochs_done", 0))
    if old != config:
        raise ValueError(f"out: {out} exists and was trained with a different configuration; "
                         "choose another --out or delete it")
    model.load_state_dict(payload["state_dict"])
    state = payload.get("train_state") or {}
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    if done:
        log(f"resuming {out} after epoch {done}")
    return done


