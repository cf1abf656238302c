"""class_distances against brute force (numpy float64), on the exact grid path and the float64 path."""
import numpy as np
import pytest
import torch

import fastcert
from fastcert.robustness.distances import class_distances, class_distances_torch


def brute(xq, yq, xr, yr, norm, self_ref):
    diff = xq[:, None, :] - xr[None, :, :]
    if norm == "l1":
        d = np.abs(diff).sum(-1)
    elif norm == "l2":
        d = np.sqrt((diff ** 2).sum(-1))
    else:
        d = np.abs(diff).max(-1)
    same = yq[:, None] == yr[None, :]
    if self_ref:
        np.fill_diagonal(d, np.inf)  # the point itself is excluded (from both searches)
    inter = np.where(same, np.inf, d).min(1)
    intra = np.where(same, d, np.inf).min(1)
    return inter, intra


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_grid_path_equals_brute_force_on_2000_points(norm):
    ds = fastcert.load_dataset("digits", "train")
    # digits are on the 1/16 grid, which is not the 1/255 grid: build 8-bit images from them
    x = np.rint(ds.x.reshape(len(ds), -1).numpy() * 255) / 255
    x = np.concatenate([x, 1 - x])[:2000]  # 2,000 points
    y = np.concatenate([ds.y.numpy(), ds.y.numpy()])[:2000]
    out = class_distances(x, y, norms=(norm,), return_index=True)[norm]
    levels = np.rint(x * 255).astype(np.int64)
    for s in range(0, 2000, 500):  # brute force in integer levels: exact
        q = levels[s:s + 500]
        diff = np.abs(q[:, None, :] - levels[None, :, :])
        d = {"l1": diff.sum(-1), "l2": (diff ** 2).sum(-1), "linf": diff.max(-1)}[norm].astype(np.float64)
        d[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        same = y[s:s + 500, None] == y[None, :]
        di, da = np.where(same, np.inf, d), np.where(same, d, np.inf)
        ref_inter = np.sqrt(di.min(1)) / 255 if norm == "l2" else di.min(1) / 255
        ref_intra = np.sqrt(da.min(1)) / 255 if norm == "l2" else da.min(1) / 255
        np.testing.assert_array_equal(out["inter"][s:s + 500], ref_inter)
        np.testing.assert_array_equal(out["intra"][s:s + 500], ref_intra)
        np.testing.assert_array_equal(out["inter_index"][s:s + 500], di.argmin(1))  # ties: smallest index
        np.testing.assert_array_equal(out["intra_index"][s:s + 500], da.argmin(1))


@pytest.mark.parametrize("self_ref", [True, False])
def test_float_path_matches_brute_force(self_ref):
    rng = np.random.default_rng(1)
    xq = rng.random((150, 37))
    yq = rng.integers(0, 4, 150)
    if self_ref:
        xr, yr, ref = xq, yq, None
    else:
        xr, yr = rng.random((230, 37)), rng.integers(0, 4, 230)
        ref = (torch.from_numpy(xr), torch.from_numpy(yr))
    out = class_distances(xq, yq, reference=ref, grid="auto")  # not on the grid -> float64 path
    tor = class_distances_torch(xq, yq, reference=ref)
    for norm in ("l1", "l2", "linf"):
        inter, intra = brute(xq, yq, xr, yr, norm, self_ref)
        np.testing.assert_allclose(out[norm]["inter"], inter, rtol=1e-12)
        np.testing.assert_allclose(out[norm]["intra"], intra, rtol=1e-12)
        np.testing.assert_allclose(tor[norm]["inter"], inter, rtol=1e-9)
        np.testing.assert_allclose(tor[norm]["intra"], intra, rtol=1e-9)


def test_grid_detection_and_fashion_like_input():
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    out = class_distances(x, y, norms="l1,linf")
    np.testing.assert_array_equal(out["l1"]["inter"], [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(out["l1"]["intra"], [1.0, np.inf, 1.0])
    np.testing.assert_array_equal(out["linf"]["inter"], [1.0, 1.0, 1.0])
    f = class_distances(x, y, norms=("l2",), grid=False)
    np.testing.assert_allclose(f["l2"]["inter"], [1.0, 1.0, np.sqrt(2)])


def test_bad_input():
    x = np.zeros((4, 3))
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="norms"):
        class_distances(x, y, norms=("l3",))
    with pytest.raises(ValueError, match="y must have shape"):
        class_distances(x, y[:3])
    with pytest.raises(TypeError, match="integer labels"):
        class_distances(x, y.astype(float))
    with pytest.raises(ValueError, match="NaN"):
        class_distances(np.full((4, 3), np.nan), y)
    with pytest.raises(ValueError, match="features"):
        class_distances(x, y, reference=(np.zeros((2, 5)), np.array([0, 1])))
    with pytest.raises(ValueError, match="grid"):
        class_distances(x + 0.001, y, grid=True)
    with pytest.raises(TypeError, match="reference"):
        class_distances(x, y, reference="train")
    with pytest.raises(ValueError, match="2 dimensions"):
        class_distances(np.zeros(4), y)
    from fastcert import _core
    q = np.zeros((2, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="exclude"):
        _core.nearest_by_label(q, q, np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([0, 5]), 0)
    with pytest.raises(ValueError, match="norm"):
        _core.nearest_by_label(q, q, np.zeros(2, np.int64), np.zeros(2, np.int64), None, 3)
    with pytest.raises(ValueError, match="rlab"):
        _core.nearest_by_label(q, q, np.zeros(2, np.int64), np.zeros(3, np.int64), None, 0)
