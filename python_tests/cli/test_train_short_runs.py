"""`train` runs of very few optimizer steps: torch's OneCycleLR divided by zero when its warm-up phase ended
at step 0 (4 steps with noise augmentation, 5 with IBP), and ran the first step at ~0 rate in a 1-step run.
Such runs now train at a constant rate; longer runs keep the one-cycle schedule."""
from __future__ import annotations

import pytest
import torch

from fastcert.cli import main
from fastcert.data import load_dataset
from fastcert.models.checkpoint import read_checkpoint
from fastcert.training.loop import train
from fastcert.training.schedule import one_cycle


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_train_with_few_steps(steps, tmp_path, capsys):
    """The command of the bug report (1 epoch of 200 points in batches of 64: 4 steps), and its neighbours."""
    out = tmp_path / "m.ckpt"
    assert main(["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--max-train", str(64 * steps - 56),
                 "--batch", "64", "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    state, meta = read_checkpoint(out)
    assert meta["config"]["epochs_done"] == 1 and all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("method,steps", [("ibp", 4), ("ibp", 5), ("gaussian", 8)])
def test_train_few_steps_other_methods(method, steps, tmp_path, capsys):
    flags = ["--eps", "0.05"] if method == "ibp" else []
    assert main(["train", "--dataset", "digits", "--arch", "mlp", "--method", method, *flags, "--epochs", "1",
                 "--max-train", str(64 * steps), "--batch", "64", "--quiet", "--out", str(tmp_path / "m.ckpt")]) == 0, \
        capsys.readouterr().err


@pytest.mark.parametrize("total,pct", [(t, p) for p in (0.25, 0.2) for t in range(1, 41)])
def test_schedule_is_defined_for_every_step_count(total, pct):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = one_cycle(opt, 1e-3, total, pct)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0 < lr <= 1e-3 * (1 + 1e-12) for lr in lrs)
    if pct * total <= 1:  # too short to warm up: the constant rate
        assert lrs == [1e-3] * total
    else:  # torch's one cycle, unchanged
        ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-3, total_steps=total, pct_start=pct)
        assert isinstance(sched, type(ref)) and sched.state_dict()["total_steps"] == ref.state_dict()["total_steps"]
        assert max(lrs) > 10 * lrs[0]  # it warms up


def test_short_run_resumes_exactly(tmp_path):
    """A 4-step run (2 epochs of 2 batches) stopped after its first epoch resumes to the same weights: the
    constant-rate scheduler's state is saved and restored like the one-cycle one."""
    data = load_dataset("digits", "train").subset(range(128))
    kw = dict(method="gaussian", sigma=0.25, epochs=2, batch_size=64, seed=0, progress=False)
    ref = train("mlp", data, out=tmp_path / "ref.ckpt", log=lambda *_: None, **kw)

    def stop_at_epoch_2(msg):
        if msg.startswith("epoch 2/2"):
            raise KeyboardInterrupt

    out = tmp_path / "m.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train("mlp", data, out=out, log=stop_at_epoch_2, **kw)
    assert read_checkpoint(out)[1]["config"]["epochs_done"] == 1
    got = train("mlp", data, out=out, log=lambda *_: None, **kw)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
