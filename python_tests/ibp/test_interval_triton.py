"""The Triton IBP kernels against the torch path, on the CPU under TRITON_INTERPRET=1.

The interpreter flag must be set before Triton decorates the kernels, so the comparison runs in a
fresh subprocess; the in-process tests check the dispatch rules (CPU tensors never reach a real
Triton launch)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastcert

pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch
from torch import nn
import fastcert
from fastcert.ibp.radius import spec_matrix
from fastcert.ibp import Residual

torch.manual_seed(0)
nets = {
    "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 33), nn.ReLU(), nn.Linear(33, 7)),
            (5, 50)),
    "conv": (nn.Sequential(nn.Conv2d(1, 3, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 20), nn.BatchNorm1d(20),
                           nn.ReLU(), nn.Linear(20, 7)), (6, 1, 4, 4)),
    "residual": (nn.Sequential(nn.Flatten(), nn.Linear(20, 24), nn.ReLU(),
                               Residual(nn.Sequential(nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 24))), nn.ReLU(),
                               nn.Linear(24, 7)), (4, 20)),
}
worst = 0.0
for name, (net, shape) in nets.items():
    net.eval()
    x = torch.rand(*shape)
    y = torch.randint(0, 7, (shape[0],))
    with torch.no_grad():
        for C in (None, spec_matrix(y, 7)):
            for eps in (0.0, 0.03, torch.linspace(0, 0.1, shape[0])):
                a = fastcert.ibp_bounds(net, x, eps, C=C, backend="torch")
                b = fastcert.ibp_bounds(net, x, eps, C=C, backend="triton")
                for p, q in zip(a, b):
                    worst = max(worst, float(((p - q).abs() / (1 + p.abs())).max()))
print("WORST", worst)
"""


def test_triton_interpreter_matches_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    worst = float(r.stdout.split("WORST")[1])
    assert worst < 1e-5


def test_cpu_tensors_never_go_to_a_real_triton_launch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="CUDA tensors"):
        fastcert.ibp_bounds(net, x, 0.1, backend="triton")
    lo, hi = fastcert.ibp_bounds(net, x, 0.1, backend="auto")  # auto on the CPU: the torch path
    assert torch.all(lo <= hi)
