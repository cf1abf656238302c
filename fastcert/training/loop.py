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

import torch
from torch import nn

from fastcert.data import Dataset
from fastcert.rng import torch_generator
from fastcert.training.certified import train_certified
from fastcert.training.schedule import one_cycle
from fastcert.models.zoo import build_model
from fastcert.smoothing.noise import Noise, make_noise
from fastcert.validate import check_choice, check_device, check_float, check_int, check_nonnegative, check_positive
from fastcert.models.checkpoint import read_checkpoint, save_checkpoint

NOISE_METHODS = ("gaussian", "laplace", "uniform", "discrete", "none")
CERTIFIED_METHODS = ("ibp", "acert")
METHODS = NOISE_METHODS + CERTIFIED_METHODS


def augmentation_noise(method: str, sigma: float = 0.25, keep: float = 0.8, K: int = 255) -> Noise | None:
    """The noise of noise-augmentation training (None for ``method="none"``): the same families as
    Smooth, and each batch is perturbed by its one torch sampler, ``Noise.sample_torch``. ``sigma`` is
    the scale of the continuous noises, ``keep`` and ``K`` those of discrete noise."""
    check_choice("method", method, NOISE_METHODS)
    if method == "none":
        return None
    return make_noise(method, sigma=sigma, keep=keep, K=K)


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1000, device="cpu") -> float:
    """Clean accuracy."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            xb = data.x[i:i + batch_size].to(device)
            correct += int((model(xb).argmax(1).cpu() == data.y[i:i + batch_size]).sum())
    return correct / max(len(data), 1)


def train(model, dataset: Dataset, method: str = "gaussian", *, sigma: float = 0.25, keep: float = 0.8,
          K: int = 255, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
          seed: int = 0, device="cpu", out=None, arch: str | None = None, arch_kwargs: dict | None = None,
          progress: bool = True, log=print, **kwargs):
    """Train ``model`` on ``dataset`` and return it (in eval mode).

    model: an nn.Module (e.g. from fastcert.build_model) or an architecture name of the zoo (built
    with the dataset's input shape and normalization). method: "gaussian" | "laplace" | "uniform"
    (``sigma`` is the noise scale: sigma, Laplace scale, uniform half-width) | "discrete"
    (``keep``: keep probability, ``K``) | "none" | "ibp" | "acert" (fastcert.training.certified; extra kwargs go
    there). With ``out`` a checkpoint is written after every epoch, and an unfinished checkpoint at
    ``out`` with the same configuration is resumed. ``alpha_keep`` is the deprecated name of ``keep``.
    """
    if "alpha_keep" in kwargs:
        import warnings

        warnings.warn("train(alpha_keep=...) is deprecated: the keep probability is named keep",
                      DeprecationWarning, stacklevel=2)
        keep = kwargs.pop("alpha_keep")
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
    # every parameter is checked (and recorded in the checkpoint's config); the noise checks its own
    # range of the ones it uses (sigma > 0; keep in (0, 1), K >= 1)
    sigma, keep = check_float("sigma", sigma), check_float("keep", keep)
    K = check_int("K", K, None)
    noise = augmentation_noise(method, sigma=sigma, keep=keep, K=K)
    lr, weight_decay = check_positive("lr", lr), check_nonnegative("weight_decay", weight_decay)
    epochs, batch_size = check_int("epochs", epochs), check_int("batch_size", batch_size)
    config = {"method": method, "sigma": float(sigma), "keep": float(keep), "K": int(K),
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
              "weight_decay": float(weight_decay), "seed": int(seed), "dataset": dataset.name}
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    sched = one_cycle(opt, lr, epochs * steps_per_epoch, pct_start=0.25)  # constant lr for runs of <= 4 steps
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
            xn = xb if noise is None else noise.sample_torch(xb, g_dev)
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


def _try_resume(out, model, opt, sched, config, log) -> int:
    try:  # never unpickles arbitrary objects (see fastcert.models.checkpoint)
        state_dict, payload = read_checkpoint(out, "out")
    except ValueError as e:  # checkpoints are written atomically: an unreadable file is not ours
        raise ValueError(f"{e}; choose another --out or delete it") from None
    old = dict(payload.get("config", {}))
    if "alpha_keep" in old and "keep" not in old:  # written before the keep probability was named keep
        old["keep"] = old.pop("alpha_keep")
    done = int(old.pop("epochs_done", 0))
    if old != config:
        raise ValueError(f"out: {out} exists and was trained with a different configuration; "
                         "choose another --out or delete it")
    model.load_state_dict(state_dict)
    state = payload.get("train_state") or {}
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    if done:
        log(f"resuming {out} after epoch {done}")
    return done


