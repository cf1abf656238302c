"""Certified training with interval bound propagation: IBP (Gowal et al. 2018, "On the
Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models") with the short
warm-up of Shi et al. 2021 ("Fast Certified Robust Training with Short Warmup", NeurIPS), and ACERT
(Nurlanov, Schmidt & Bernard, ECML 2024, "Adaptive Certified Training: Towards Better
Accuracy-Robustness Tradeoffs"); evaluation (certified accuracy at eps, average certified radius).

Threat model: linf balls of radius eps in [0, 1] pixel space, clipped to the [0, 1] box (the bounds
come from :func:`fastcert.ibp_bounds`, which clips before the model's normalization layer).

Losses. With the specification matrix C_y (rows e_y - e_j, j != y) the IBP lower bounds lb_j of the
margins z_y - z_j give the robust loss log(1 + sum_j exp(-lb_j)) (cross-entropy of the logit vector
(0, -lb_j ...) with target 0, an upper bound on the worst-case cross-entropy). IBP training minimizes
kappa * CE(clean) + (1 - kappa) * robust(eps_t). ACERT replaces eps_t by a per-sample budget eps_i:
0 for misclassified samples, the cap for samples already certified at the cap, otherwise the largest
radius at which the margin lower bound is still >= 0 (batched bisection, see
:func:`certified_radius`), and minimizes (1 - kappa) * robust(eps_i) + kappa * CE(clean).

Schedule (Shi et al.): ``warmup_epochs`` clean epochs, then eps grows smoothly over ``ramp_epochs``
(exponential for the first quarter, then linear: Shi et al.'s SmoothedScheduler shape), then stays at
eps. IBP initialization: every weight but the last layer's ~ N(0, 2 pi / fan_in^2). During the ramp
the regularizers of Shi et al. (bound tightness and ReLU balance, weight lambda (1 - eps_t / eps))
are added to the IBP loss (:func:`warmup_regularizer`). Adam, one-cycle learning rate, gradient
norm clipping. Distributed data parallel via torch.distributed (gloo on the CPU).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastcert import _native
from fastcert.data import Dataset
from fastcert.rng import torch_generator
from fastcert.ibp.radius import certified_radius, margin_lower_bounds
from fastcert.models.checkpoint import save_checkpoint
from fastcert.training.schedule import one_cycle
from fastcert.validate import (check_choice, check_device, check_float, check_int, check_nonnegative, check_positive,
                               check_radii)


# ----------------------------------------------------------------------------- losses
def robust_loss(margin_lb: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of log(1 + sum_j exp(-lb_j))."""
    z = torch.cat([torch.zeros_like(margin_lb[:, :1]), -margin_lb], dim=1)
    return F.cross_entropy(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))


def warmup_regularizer(model, x, eps, tol: float = 0.5) -> torch.Tensor:
    """The two warm-up regularizers of Shi et al. 2021, averaged over the ReLU layers.

    Tightness: with t_0 the mean radius of the input box and t the mean radius of a ReLU's
    pre-activation box, penalize relu(tol - t_0 / t) / tol (bounds that grow much faster than the
    input box). ReLU balance: with c the box centers, compare the mean center of the active
    (l > 0) and inactive (u < 0) neurons, and their summed squared deviations from the mean center;
    each ratio r is symmetrized to min(r, 1/r) and penalized by relu(tol - r) / tol.
    """
    from fastcert.ibp.graph import clean_forward, needs_clean_pass, trace
    from fastcert.ibp.torch_path import propagate

    ops = trace(model)
    stats: dict = {}
    if needs_clean_pass(ops):
        clean_forward(ops, x, stats)
    e = eps.to(x).view(-1, *([1] * (x.dim() - 1))) if isinstance(eps, torch.Tensor) else eps
    lo0, hi0 = (x - e).clamp(0.0, 1.0), (x + e).clamp(0.0, 1.0)
    c, r = (hi0 + lo0) / 2, (hi0 - lo0) / 2
    record: dict = {}
    propagate(ops, c, r, stats, record)
    bounds = {k: v for k, v in record.items() if not (isinstance(k, tuple) and k and k[0] == "shape")}
    if not bounds:
        return x.new_zeros(())
    t0 = r.mean()
    tight = x.new_zeros(())
    balance = x.new_zeros(())
    for lo, hi in bounds.values():
        center, rad = (hi + lo) / 2, (hi - lo) / 2
        tight = tight + F.relu(tol - t0 / rad.mean().clamp(min=1e-12)) / tol
        act, inact = (lo > 0).to(center), (hi < 0).to(center)
        dev = (center - center.mean()) ** 2
        mean_ratio = (center * act).mean() / (-(center * inact).mean())
        var_ratio = (dev * act).sum() / (dev * inact).sum()
        term = x.new_zeros(())
        for ratio in (mean_ratio, var_ratio):
            ratio = torch.minimum(ratio, 1 / ratio.clamp(min=1e-12))
            term = term + F.relu(tol - ratio) / tol
        if torch.isfinite(term):
            balance = balance + term
    return (tight + balance) / len(bounds)


# ----------------------------------------------------------------------------- schedule and init
def eps_schedule(step: int, steps_per_epoch: int, eps: float, warmup_epochs: float, ramp_epochs: float) -> float:
    """eps at a training step: 0 during warm-up, a smooth ramp (exponential growth over the first
    quarter, then linear) over ramp_epochs, then eps."""
    t = step / max(steps_per_epoch, 1) - warmup_epochs
    if t < 0:
        return 0.0
    if ramp_epochs <= 0 or t >= ramp_epochs:
        return float(eps)
    u = t / ramp_epochs  # in [0, 1)
    knee, base = 0.25, 1e-3  # exponential from 0.1% of the knee value up to the knee, then linear
    if u < knee:
        return float(eps * knee * base ** (1 - u / knee))
    return float(eps * u)


def ibp_init(model: nn.Module) -> None:
    """Shi et al.'s IBP initialization: weights of every Linear/Conv2d but the last ~ N(0, 2 pi / fan_in^2)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m in layers[:-1]:
        fan_in = m.weight[0].numel()
        with torch.no_grad():
            m.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)
            if m.bias is not None:
                m.bias.zero_()


# ----------------------------------------------------------------------------- training
def train_certified(model: nn.Module, dataset: Dataset, method: str = "ibp", *, eps: float = 0.1,
                    kappa: float = 0.5, epochs: int = 10, batch_size: int = 128, lr: float = 5e-4, seed: int = 0,
                    device="cpu", out=None, arch=None, arch_kwargs=None, progress: bool = True, log=print,
                    warmup_epochs: float = 1.0, ramp_epochs: float | None = None, grad_clip: float = 10.0,
                    init: str = "ibp", cap: float | None = None, root_tol: float = 1e-3, reg_lambda: float = 0.5,
                    distributed: bool | None = None):
    """Certified training (method "ibp" or "acert"); returns the model in eval mode.

    eps: target linf radius; kappa: weight of the clean loss; ramp_epochs: default half the epochs
    after warm-up; cap: ACERT's budget cap (default eps); root_tol: ACERT bisection tolerance.
    With torch.distributed initialized (e.g. under torchrun), each rank takes its slice of every global
    batch of ``batch_size`` and gradients are averaged (DistributedDataParallel semantics): the result
    equals single-process training with the same global batch for models without batch norm and with
    ``reg_lambda=0`` (batch-norm statistics and the warm-up regularizers are batch-level statistics,
    computed per rank).
    """

    check_choice("method", method, ("ibp", "acert"))
    eps = check_positive("eps", eps)
    kappa = check_float("kappa", kappa, 0.0, 1.0, lo_open=False, hi_open=False)
    epochs, batch_size = check_int("epochs", epochs), check_int("batch_size", batch_size)
    lr = check_positive("lr", lr)
    check_choice("init", init, ("ibp", "default"))
    device = check_device(device)
    dist = torch.distributed
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if distributed:  # under torchrun: cuda -> cuda:LOCAL_RANK, one GPU per rank (NCCL needs it)
        device = _native.torchrun_device(device)
    if ramp_epochs is None:
        ramp_epochs = max((epochs - warmup_epochs) / 2, 0.0)
    cap = float(eps if cap is None else cap)
    C = dataset.num_classes
    torch.manual_seed(seed)
    if init == "ibp":
        ibp_init(model)
    model.to(device)
    if distributed:  # same initial weights everywhere
        for p in model.state_dict().values():
            dist.broadcast(p, 0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    total_steps = epochs * steps_per_epoch
    # one cycle with a fifth of the steps warming up; a constant rate for runs of <= 5 steps, too short for
    # a warm-up (torch's OneCycleLR divided by zero at exactly 5)
    sched = one_cycle(opt, lr, total_steps, pct_start=0.2)
    config = {"method": method, "eps": float(eps), "kappa": float(kappa), "epochs": int(epochs),
              "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed), "warmup_epochs": float(warmup_epochs),
              "ramp_epochs": float(ramp_epochs), "grad_clip": float(grad_clip), "init": init, "cap": cap,
              "root_tol": float(root_tol), "reg_lambda": float(reg_lambda), "dataset": dataset.name}
    settings = dict(eps=eps, kappa=kappa, cap=cap, root_tol=root_tol, reg_lambda=reg_lambda, num_classes=C)
    from tqdm.auto import tqdm

    step = 0
    for epoch in range(epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(dataset), generator=torch_generator(seed, epoch, "cpu"))
        stats = {"loss": 0.0, "robust": 0.0, "clean_ok": 0, "n": 0, "eps_mean": 0.0}
        bar = tqdm(range(0, len(dataset), batch_size), desc=f"{method} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not progress or rank != 0)
        for i in bar:
            gidx = perm[i:i + batch_size]
            eps_t = eps_schedule(step, steps_per_epoch, eps, warmup_epochs, ramp_epochs)
            _train_step(model, opt, dataset, gidx[rank::world], len(gidx), method, eps_t, settings, stats,
                        device, grad_clip, distributed)
            sched.step()
            step += 1
        if rank == 0:
            log(_epoch_line(epoch, epochs, stats, world, time.time() - t0))
        if out is not None and rank == 0:
            if arch is None:
                raise ValueError("out: saving needs the architecture name (pass the model as an arch name)")
            save_checkpoint(out, model, arch=arch, arch_kwargs=arch_kwargs, input_shape=dataset.input_shape,
                            num_classes=C, mean=dataset.mean, std=dataset.std,
                            config=dict(config, epochs_done=epoch + 1))
    model.eval()
    return model



def _train_step(model, opt, dataset, idx, nglob: int, method: str, eps_t: float, settings: dict, stats: dict,
                device, grad_clip: float, distributed: bool) -> None:
    """One optimizer step on this rank's rows ``idx`` of a global batch of ``nglob`` rows; adds the
    batch's loss, robust loss, clean hits and mean budget to ``stats``."""
    xb, yb = dataset.x[idx].to(device), dataset.y[idx].to(device)
    logits = model(xb)
    clean = F.cross_entropy(logits, yb, reduction="sum") / nglob
    loss, rob, eps_i_mean = _batch_loss(model, method, xb, yb, clean, eps_t, len(idx) / nglob, settings)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if distributed:
        _all_reduce_grads(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    stats["loss"] += float(loss.detach()) * nglob
    stats["robust"] += float(rob.detach()) * nglob
    stats["clean_ok"] += int((logits.argmax(1) == yb).sum())
    stats["n"] += nglob
    stats["eps_mean"] += eps_i_mean * nglob

def _batch_loss(model, method: str, xb, yb, clean, eps_t: float, share: float, s: dict):
    """(loss, robust loss, mean budget) of one batch: IBP mixes kappa * clean with the robust loss at
    eps_t (plus Shi et al.'s warm-up regularizers while eps ramps up); ACERT uses per-sample budgets, the
    largest certified radius of each point capped at min(eps_t, cap). ``share``: this rank's share of the
    global batch."""
    eps, kappa, C = s["eps"], s["kappa"], s["num_classes"]
    zero = torch.zeros((), device=xb.device)
    if method == "ibp":
        if eps_t <= 0:
            return clean, zero, eps_t
        rob = robust_loss(margin_lower_bounds(model, xb, yb, eps_t, C)) * share
        loss = kappa * clean + (1 - kappa) * rob
        if s["reg_lambda"] > 0 and eps_t < eps:  # Shi et al.: regularize while eps ramps up
            reg = warmup_regularizer(model, xb, eps_t) * share
            loss = loss + s["reg_lambda"] * (1 - eps_t / eps) * reg
        return loss, rob, eps_t
    budget = min(eps_t, s["cap"]) if eps_t > 0 else 0.0
    if budget <= 0:
        return clean, zero, 0.0
    model.eval()
    eps_i = certified_radius(model, xb, yb, C, cap=budget, tol=s["root_tol"])
    model.train()
    rob = robust_loss(margin_lower_bounds(model, xb, yb, eps_i, C)) * share
    return (1 - kappa) * rob + kappa * clean, rob, float(eps_i.mean())


def _all_reduce_grads(model) -> None:
    """Sum the gradients over the ranks (each rank's loss is its share of the global mean)."""
    for p in model.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)


def _epoch_line(epoch: int, epochs: int, stats: dict, world: int, seconds: float) -> str:
    n = max(stats["n"], 1)
    return (f"epoch {epoch + 1}/{epochs}: loss {stats['loss'] / n:.4f} robust {stats['robust'] / n:.4f} "
            f"eps {stats['eps_mean'] / n:.4f} clean train acc {stats['clean_ok'] * world / n:.4f} "
            f"({seconds:.1f}s)")


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_certified(model, dataset: Dataset, eps_list, method: str = "ibp", batch_size: int = 256,
                       cap: float | None = None, tol: float = 1e-4, device="cpu") -> dict:
    """Clean accuracy, certified accuracy at each eps, and the average certified radius (per-sample
    largest certified eps by bisection, capped at ``cap`` = max(eps_list))."""
    eps_list = check_radii(eps_list, "eps_list")
    batch_size = check_int("batch_size", batch_size)
    cap = max(eps_list) if cap is None else check_nonnegative("cap", cap)
    model.eval()
    n, clean, cert = 0, 0, np.zeros(len(eps_list))
    radii = []
    for i in range(0, len(dataset), batch_size):
        xb, yb = dataset.x[i:i + batch_size].to(device), dataset.y[i:i + batch_size].to(device)
        ok = model(xb).argmax(1) == yb
        clean += int(ok.sum())
        for k, e in enumerate(eps_list):
            lb = margin_lower_bounds(model, xb, yb, e, dataset.num_classes, method)
            cert[k] += int((ok & (lb.min(1).values > 0)).sum())
        radii.append(certified_radius(model, xb, yb, dataset.num_classes, cap, tol, method).cpu())
        n += len(yb)
    r = torch.cat(radii).numpy()
    return {"clean": clean / n, "certified": {e: c / n for e, c in zip(eps_list, cert)},
            "acr": float(r.mean()), "radii": r, "n": n}
