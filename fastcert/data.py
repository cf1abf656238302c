"""Datasets: the embedded default (scikit-learn digits), IDX (Fashion-MNIST, MNIST), CIFAR-10 binary
batches and torchvision-style image folders. Nothing is ever downloaded.

Every loader returns a :class:`Dataset` with images as float32 in [0, 1], shape (N, C, H, W), and
int64 labels. Normalization is not applied here: models carry their own normalization layer, so
noise and perturbation budgets are always in [0, 1] pixel units.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DIGITS_SPLIT_SEED = 0  # fixed: the 80/20 split of the embedded digits is part of the contract
DATASETS_HELP = "digits | fashion-mnist[:PATH] | mnist:PATH | cifar10:PATH | folder:PATH"


@dataclass
class Dataset:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    num_classes: int
    name: str
    mean: tuple = field(default=(0.0,))
    std: tuple = field(default=(1.0,))
    classes: tuple = field(default=())

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def subset(self, idx) -> "Dataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Dataset(self.x[idx], self.y[idx], self.num_classes, self.name, self.mean, self.std, self.classes)


def _stats(x: torch.Tensor) -> tuple[tuple, tuple]:
    mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in x.std(dim=(0, 2, 3)))
    return mean, std


def _digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    n_train = int(round(0.8 * len(y)))
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    idx = np.sort(idx)
    mean, std = _stats(x[np.sort(perm[:n_train])])
    return Dataset(x[idx], y[idx], 10, "digits", mean, std, tuple(str(i) for i in range(10)))


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 <dtype 0x08> <ndim>, big-endian dims."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    with _open_maybe_gz(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0:
            raise ValueError(f"{path}: not an IDX file (bad magic)")
        dtype_code, ndim = head[2], head[3]
        if dtype_code != 0x08:
            raise ValueError(f"{path}: only unsigned-byte IDX files are supported (type 0x{dtype_code:02x})")
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = f.read()
    n = int(np.prod(dims)) if dims else 0
    if len(data) < n:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} of {n} bytes)")
    return np.frombuffer(data[:n], dtype=np.uint8).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = directory / cand
        if p.exists():
            return p
    raise FileNotFoundError(f"no {stem}[.gz] in {directory}")


def _idx_dataset(directory, split: str, name: str, classes) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {directory}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    train_images = images if split == "train" else read_idx(_find(directory, "train-images-idx3-ubyte"))
    m = float(train_images.mean() / 255.0)
    s = float(train_images.std() / 255.0)
    return Dataset(x, y, 10, name, (m,), (s,), classes)


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def _cifar10(directory, split: str) -> Dataset:
    directory = Path(directory)
    if (directory / "cifar-10-batches-bin").is_dir():
        directory = directory / "cifar-10-batches-bin"
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory not found: {directory}")
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    xs, ys = [], []
    for n in names:
        p = directory / n
        if not p.exists():
            raise FileNotFoundError(f"CIFAR-10 binary batch not found: {p}")
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size % 3073 != 0:
            raise ValueError(f"{p}: size {raw.size} is not a multiple of 3073 (label + 3x32x32)")
        raw = raw.reshape(-1, 3073)
        ys.append(raw[:, 0].astype(np.int64))
        xs.append(raw[:, 1:].reshape(-1, 3, 32, 32))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate(ys))
    if int(y.max()) > 9:
        raise ValueError(f"{directory}: CIFAR-10 labels must be 0..9")
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the usual training-set statistics
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return Dataset(x, y, 10, "cifar10", mean, std, classes)


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def _folder(directory, split: str) -> Dataset:
    """torchvision ImageFolder layout: DIR/<split>/<class>/<image> (or DIR/<class>/<image>)."""
    from PIL import Image

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder not found: {directory}")
    root = directory / split if (directory / split).is_dir() else directory
    if split == "test" and not (directory / "test").is_dir() and (directory / "val").is_dir():
        root = directory / "val"
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class subfolders")
    xs, ys, shape = [], [], None
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() not in IMAGE_EXTS:
                continue
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"), dtype=np.float32) / 255.0
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise ValueError(f"{f}: image shape {arr.shape} differs from {shape}; resize the folder first")
            xs.append(arr)
            ys.append(ci)
    if not xs:
        raise ValueError(f"{root}: no images")
    x = torch.from_numpy(np.stack(xs))
    mean, std = _stats(x)
    return Dataset(x, torch.tensor(ys, dtype=torch.long), len(classes), f"folder:{directory}", mean, std,
                   tuple(classes))


def load_dataset(spec: str = "digits", split: str = "test") -> Dataset:
    """Load a dataset by spec: ``digits``, ``fashion-mnist`` (Debian path or ``fashion-mnist:PATH``),
    ``mnist:PATH``, ``cifar10:PATH``, ``folder:PATH``; split is ``train`` or ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset must be one of {DATASETS_HELP}, got {spec!r}")
    kind, _, path = spec.partition(":")
    kind = kind.lower()
    if kind == "digits":
        return _digits(split)
    if kind in ("fashion-mnist", "fashion_mnist", "fmnist"):
        d = path or os.environ.get("FASTCERT_FASHION_MNIST", FASHION_MNIST_DIR)
        if not Path(d).is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST not found at {d}: install Debian's dataset-fashion-mnist or pass fashion-mnist:PATH")
        return _idx_dataset(d, split, "fashion-mnist", FASHION_CLASSES)
    if kind == "mnist":
        if not path:
            raise ValueError("dataset mnist needs a path: mnist:PATH (IDX files; nothing is downloaded)")
        return _idx_dataset(path, split, "mnist", tuple(str(i) for i in range(10)))
    if kind == "cifar10":
        if not path:
            raise ValueError("dataset cifar10 needs a path: cifar10:PATH (binary batches)")
        return _cifar10(path, split)
    if kind == "folder":
        if not path:
            raise ValueError("dataset folder needs a path: folder:PATH")
        return _folder(path, split)
    raise ValueError(f"dataset must be one of {DATASETS_HELP}, got {spec!r}")
