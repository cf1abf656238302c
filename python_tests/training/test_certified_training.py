"""Certified training (IBP, ACERT): schedule, initialization, losses, the radius root finder, a real
training run that beats normal training on certified accuracy, and 2-process gloo DDP equivalence."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from fastcert.training.certified import eps_schedule, evaluate_certified, ibp_init, robust_loss, train_certified
from fastcert.ibp.radius import certified_radius, margin_lower_bounds, spec_matrix
from fastcert.data import load_dataset  # noqa: E402
from fastcert.models.zoo import build_model  # noqa: E402


def test_spec_matrix_rows():
    y = torch.tensor([0, 2])
    C = spec_matrix(y, 3)
    assert C.shape == (2, 2, 3)
    assert C[0].tolist() == [[1, -1, 0], [1, 0, -1]]
    assert C[1].tolist() == [[-1, 0, 1], [0, -1, 1]]


def test_robust_loss_formula():
    lb = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    want = torch.log1p(torch.exp(-lb).sum(1)).mean()
    assert torch.allclose(robust_loss(lb), want)


def test_eps_schedule_shape():
    spe, eps = 10, 0.3
    vals = [eps_schedule(s, spe, eps, warmup_epochs=1, ramp_epochs=4) for s in range(80)]
    assert all(v == 0 for v in vals[:10])
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert vals[-1] == eps and max(vals) == eps
    assert 0 < vals[11] < 0.01 * eps  # the ramp starts smoothly


def test_ibp_init_std():
    torch.manual_seed(0)
    m = build_model("cnn_ibp", (1, 28, 28), 10)
    ibp_init(m)
    layers = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))]
    for mod in layers[:-1]:
        fan_in = mod.weight[0].numel()
        assert mod.weight.std().item() == pytest.approx(math.sqrt(2 * math.pi) / fan_in, rel=0.15)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def ibp_model(digits):
    train, _ = digits
    m = build_model("cnn_ibp", train.input_shape, 10, train.mean, train.std)
    return train_certified(m, train, "ibp", eps=0.1, kappa=0.5, epochs=20, batch_size=64, lr=3e-3, seed=0,
                           warmup_epochs=2, progress=False, log=lambda *_: None)


def test_root_finder_is_tight(ibp_model, digits):
    _, test = digits
    x, y = test.x[:64], test.y[:64]
    tol, cap = 1e-3, 0.5
    r = certified_radius(ibp_model, x, y, 10, cap=cap, tol=tol)
    pred_ok = ibp_model(x).argmax(1) == y
    assert torch.all(r[~pred_ok] == 0)
    inner = (r > 0) & (r < cap)
    assert inner.sum() > 5
    lb_at = margin_lower_bounds(ibp_model, x[inner], y[inner], r[inner], 10).min(1).values
    lb_above = margin_lower_bounds(ibp_model, x[inner], y[inner], r[inner] + tol, 10).min(1).values
    assert torch.all(lb_at > 0)  # certified at the returned eps
    assert torch.all(lb_above <= 0)  # not certified at eps + tol


def test_ibp_training_beats_normal_training(ibp_model, digits):
    train, test = digits
    normal = build_model("cnn_ibp", train.input_shape, 10, train.mean, train.std)
    from fastcert.training.loop import train as plain_train

    plain_train(normal, train, method="none", epochs=20, batch_size=64, lr=3e-3, seed=0, progress=False,
                log=lambda *_: None)
    ev_ibp = evaluate_certified(ibp_model, test, [0.1])
    ev_norm = evaluate_certified(normal, test, [0.1])
    assert ev_norm["clean"] > 0.8
    assert ev_ibp["certified"][0.1] > ev_norm["certified"][0.1] + 0.3
    assert ev_ibp["acr"] > ev_norm["acr"]


def test_acert_runs_and_certifies(digits):
    train, test = digits
    m = build_model("cnn_ibp", train.input_shape, 10, train.mean, train.std)
    train_certified(m, train, "acert", eps=0.1, kappa=0.3, epochs=12, batch_size=64, lr=3e-3, seed=0,
                    warmup_epochs=2, progress=False, log=lambda *_: None)
    ev = evaluate_certified(m, test, [0.05, 0.1])
    assert ev["clean"] > 0.5 and ev["certified"][0.05] > 0.2 and ev["acr"] > 0.01


@pytest.mark.parametrize("n_points", [100, 300])
def test_five_training_steps(digits, n_points):
    """1 epoch of 5 batches: torch's OneCycleLR with pct_start 0.2 divided by zero there (its warm-up phase
    ended at step 0), so `train --method ibp --epochs 1 --max-train 300 --batch 64` crashed."""
    train = digits[0].subset(range(n_points))
    m = build_model("mlp", train.input_shape, 10, train.mean, train.std)
    train_certified(m, train, "ibp", eps=0.05, epochs=1 if n_points == 300 else 5, batch_size=64 if n_points == 300
                    else 100, seed=0, progress=False, log=lambda *_: None)
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_bad_arguments(digits):
    train, _ = digits
    m = build_model("cnn_ibp", train.input_shape, 10)
    with pytest.raises(ValueError, match="eps"):
        train_certified(m, train, "ibp", eps=-1)
    with pytest.raises(ValueError, match="kappa"):
        train_certified(m, train, "ibp", eps=0.1, kappa=2)
    with pytest.raises(ValueError, match="method"):
        train_certified(m, train, "pgd", eps=0.1)


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    train = load_dataset("digits", "train").subset(range(256))
    torch.manual_seed(0)
    m = build_model("cnn_ibp", train.input_shape, 10, train.mean, train.std)
    train_certified(m, train, "ibp", eps=0.1, epochs=2, batch_size=64, lr=1e-3, seed=0, warmup_epochs=0.5,
                    reg_lambda=0.0, progress=False, log=lambda *_: None)
    if rank == 0:
        torch.save(m.state_dict(), os.path.join(out_dir, "ddp.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    train = load_dataset("digits", "train").subset(range(256))
    torch.manual_seed(0)
    m = build_model("cnn_ibp", train.input_shape, 10, train.mean, train.std)
    train_certified(m, train, "ibp", eps=0.1, epochs=2, batch_size=64, lr=1e-3, seed=0, warmup_epochs=0.5,
                    reg_lambda=0.0, progress=False, log=lambda *_: None, distributed=False)
    ddp = torch.load(tmp_path / "ddp.pt")
    for k, v in m.state_dict().items():
        assert torch.allclose(v, ddp[k], atol=1e-5, rtol=1e-4), k
    assert np.isfinite(sum(float(v.abs().sum()) for v in ddp.values()))


def test_warmup_regularizer_penalizes_exploding_bounds():
    from fastcert.training.certified import warmup_regularizer

    torch.manual_seed(0)
    m = build_model("cnn_ibp", (1, 8, 8), 10)
    x = torch.rand(32, 1, 8, 8)
    ibp_init(m)
    small = warmup_regularizer(m, x, 0.05)
    with torch.no_grad():  # blow the weights up: bounds grow much faster than the input box
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                mod.weight.mul_(20)
    big = warmup_regularizer(m, x, 0.05)
    assert torch.isfinite(small) and torch.isfinite(big) and big > small
    big.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
