"""Fully connected ReLU networks released as MATLAB ``.mat`` weights (Croce et al., AISTATS 2019), as
``nn.Sequential`` models the rest of fastcert (curves, IBP, the exact MIP) takes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["croce_mat_model"]


def croce_mat_model(path, input_shape=None, num_classes=None):
    """Load a fully connected ReLU network stored as MATLAB ``.mat`` weights (as released with Croce et
    al., "Provable robustness of ReLU networks via maximization of linear regions", AISTATS 2019).

    The file holds weight matrices and bias vectors per layer. Recognized key pairs, per layer k
    (1-based, in order): ``U{k}``/``bU{k}``, ``W{k}``/``b{k}`` or ``weights``/``biases`` cell arrays. A
    weight of shape (in, out) is transposed to torch's (out, in) when its first dimension matches the
    previous layer's width. Returns ``nn.Sequential(Flatten, Linear, ReLU, ..., Linear)`` in float32.
    Inputs are taken as in the original (images in [0, 1], no normalization).
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f".mat model not found: {path}")
    try:
        m = loadmat(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable .mat file ({type(e).__name__})") from None
    Ws, bs = [], []
    if "weights" in m and "biases" in m:
        Ws = [np.asarray(w, dtype=np.float64) for w in np.ravel(m["weights"])]
        bs = [np.asarray(b, dtype=np.float64).ravel() for b in np.ravel(m["biases"])]
    else:
        for wk, bk in (("U", "bU"), ("W", "b")):
            k = 1
            while f"{wk}{k}" in m and f"{bk}{k}" in m:
                Ws.append(np.asarray(m[f"{wk}{k}"], dtype=np.float64))
                bs.append(np.asarray(m[f"{bk}{k}"], dtype=np.float64).ravel())
                k += 1
            if Ws:
                break
    if not Ws:
        raise ValueError(f"{path}: no layer weights found (expected U1/bU1..., W1/b1... or weights/biases)")
    d_in = int(np.prod(input_shape)) if input_shape is not None else None
    layers: list = [nn.Flatten()]
    for i, (W, b) in enumerate(zip(Ws, bs)):
        if W.ndim != 2:
            raise ValueError(f"{path}: layer {i + 1} weight is not a matrix")
        if d_in is None:
            d_in = W.shape[0] if W.shape[1] == b.size else W.shape[1]
        if W.shape == (b.size, d_in):
            pass
        elif W.shape == (d_in, b.size):
            W = W.T
        else:
            raise ValueError(f"{path}: layer {i + 1} weight {W.shape} does not fit input width {d_in} and bias {b.size}")
        lin = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(Ws) - 1:
            layers.append(nn.ReLU())
        d_in = W.shape[0]
    if num_classes is not None and d_in != int(num_classes):
        raise ValueError(f"{path}: the last layer has {d_in} outputs, expected {num_classes}")
    return nn.Sequential(*layers).float().eval()
