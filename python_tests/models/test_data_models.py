"""Dataset loaders (on small files written here) and checkpoints."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from fastcert.data import load_dataset, read_idx
from fastcert.models.zoo import ARCHS, build_model
from fastcert.models.checkpoint import load_checkpoint, save_checkpoint


def _write_idx(path, arr, gz=True):
    head = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def test_digits_split_is_fixed_and_disjoint():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(tr) + len(te) == 1797 and len(te) == 359
    assert tr.input_shape == (1, 8, 8) and tr.x.min() >= 0 and tr.x.max() <= 1
    assert torch.equal(load_dataset("digits", "test").x, te.x)
    flat_tr = {tuple(v) for v in tr.x.reshape(len(tr), -1).numpy().round(4)}
    overlap = sum(tuple(v) in flat_tr for v in te.x.reshape(len(te), -1).numpy().round(4))
    assert overlap < 5  # the digits set has a handful of exact duplicates, not a shared split


def test_idx_roundtrip(tmp_path, rng):
    imgs = rng.integers(0, 256, size=(12, 28, 28))
    labels = rng.integers(0, 10, size=12)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, gz=False)
    d = load_dataset(f"mnist:{tmp_path}", "test")
    assert d.x.shape == (12, 1, 28, 28)
    assert np.allclose(d.x.numpy()[:, 0] * 255, imgs)
    assert d.y.tolist() == labels.tolist()
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), imgs)


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 100) + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    with pytest.raises(FileNotFoundError):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="path"):
        load_dataset("cifar10")


def test_cifar_binary(tmp_path, rng):
    recs = []
    for i in range(5):
        lab = i % 10
        img = rng.integers(0, 256, size=3072)
        recs.append(np.concatenate([[lab], img]).astype(np.uint8))
    (tmp_path / "test_batch.bin").write_bytes(np.stack(recs).tobytes())
    d = load_dataset(f"cifar10:{tmp_path}", "test")
    assert d.x.shape == (5, 3, 32, 32)
    assert d.y.tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(d.x[1].numpy().ravel() * 255, recs[1][1:])
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="3073"):
        load_dataset(f"cifar10:{tmp_path}", "test")


def test_image_folder(tmp_path, rng):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "test" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, size=(6, 6, 3)).astype(np.uint8)).save(tmp_path / "test" / c / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path}", "test")
    assert d.x.shape == (6, 3, 6, 6) and d.num_classes == 2 and d.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_fashion_mnist():
    import os

    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):  # .ci/run installs it: under CI, missing = failure
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST missing under CI: apt-get install -y dataset-fashion-mnist")
        pytest.skip("no Debian dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)")
    d = load_dataset("fashion-mnist", "test")
    assert d.x.shape == (10000, 1, 28, 28) and d.num_classes == 10
    assert np.bincount(d.y.numpy()).tolist() == [1000] * 10


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_checkpoint_roundtrip(tmp_path, arch):
    shape = (3, 32, 32) if arch in ("resnet20", "resnet110", "cnn7", "resnet50") else (1, 28, 28)
    kwargs = {"width": 8} if arch == "resnet50" else {}  # the same graph, 1/64 of the weights
    m = build_model(arch, shape, 10, mean=(0.5,) * shape[0], std=(0.25,) * shape[0], **kwargs).eval()
    p = tmp_path / "m.pt"
    save_checkpoint(p, m, arch=arch, input_shape=shape, num_classes=10, mean=(0.5,) * shape[0],
                    std=(0.25,) * shape[0], config={"sigma": 0.5}, arch_kwargs=kwargs)
    m2, meta = load_checkpoint(p)
    x = torch.rand(2, *shape)
    assert torch.allclose(m(x), m2(x))
    assert meta["arch"] == arch and meta["config"]["sigma"] == 0.5 and meta["input_shape"] == shape
    assert meta["arch_kwargs"] == kwargs


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg", (1, 8, 8), 10)


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """Files written via a temporary file and rename get the mode a plain open() gives (0666 & ~umask),
    not mkstemp's private 0600."""
    import os

    from fastcert.io.files import _umask, save_npz

    mask = os.umask(0o022)
    try:
        assert _umask() == 0o022
        save_npz(tmp_path / "a.npz", {"x": np.arange(3)})
        assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        save_npz(tmp_path / "b.npz", {"x": np.arange(3)})
        assert (tmp_path / "b.npz").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(mask)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["x"], np.arange(3))
