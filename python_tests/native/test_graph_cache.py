"""The CUDA-graph cache of Smooth, without a GPU: one capture per (input shape, batch size, model, autocast,
device, noise parameters), reused for every point and every seed/stream/start, which are written into the
graph's device-side inputs (``key``, ``ctr``) before its replays. The capture itself needs a GPU (see
test_cuda_kernels.py); here it is replaced by a stand-in with CPU buffers that counts replays."""
from __future__ import annotations

import torch

import fastcert
from fastcert.smoothing import smooth as smooth_mod


class _FakeGraph:
    """What a replay of the real graph does to its device-side state: count bs samples (as class 0) and
    advance the sample offset by bs."""

    def __init__(self, g, bs):
        self.g, self.bs, self.replays = g, bs, 0

    def replay(self):
        self.replays += 1
        self.g.counts[0] += self.bs
        self.g.ctr += self.bs


def _smooth(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    s = fastcert.Smooth(model, 3, fastcert.Gaussian(0.5))
    captures = []

    def capture(x, bs, params):
        g = smooth_mod._Graph()
        g.x = torch.zeros(x.numel())
        g.ctr = torch.zeros(1, dtype=torch.int64)
        g.key = torch.zeros(2, dtype=torch.int64)
        g.counts = torch.zeros(3, dtype=torch.int64)
        g.nan = torch.zeros(1, dtype=torch.int64)
        g.graph = _FakeGraph(g, bs)
        g.checked = True  # the eager comparison needs the real kernels
        captures.append((tuple(x.shape), bs))
        return g

    monkeypatch.setattr(s, "_capture_graph", capture)
    return s, captures


def test_one_capture_per_key(monkeypatch):
    s, captures = _smooth(monkeypatch)
    params = s.noise.kernel_params()
    x = torch.rand(1, 4, 4)
    g1 = s._graph_for(x, 100, params)
    assert s._graph_for(torch.rand(1, 4, 4), 100, params) is g1  # another point: the same graph
    assert len(captures) == 1
    assert s._graph_for(x, 200, params) is not g1  # another batch size
    assert s._graph_for(torch.rand(2, 2, 4), 100, params) is not g1  # another shape
    s.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    assert s._graph_for(x, 100, params) is not g1  # another model
    s.autocast = torch.bfloat16
    s._graph_for(x, 100, params)
    s._graph_for(x, 100, fastcert.Laplace(0.5).kernel_params())  # other noise parameters
    assert len(captures) == 6
    assert s._graph_for(x, 100, fastcert.Laplace(0.5).kernel_params()) is s._graph_for(
        x, 100, fastcert.Laplace(0.5).kernel_params())
    assert len(captures) == 6


def test_cache_is_bounded(monkeypatch):
    s, captures = _smooth(monkeypatch)
    params = s.noise.kernel_params()
    x = torch.rand(1, 4, 4)
    first = s._graph_for(x, 1, params)
    for bs in range(2, smooth_mod._GRAPH_CACHE_SIZE + 3):
        s._graph_for(x, bs, params)
    assert len(s._graphs) == smooth_mod._GRAPH_CACHE_SIZE
    assert s._graph_for(x, 1, params) is not first  # the oldest was dropped, so it is captured again


def test_replays_take_each_points_seed_stream_and_start(monkeypatch):
    s, captures = _smooth(monkeypatch)
    params = s.noise.kernel_params()
    counts, nan = torch.zeros(3, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    x1, x2 = torch.rand(1, 4, 4), torch.rand(1, 4, 4)
    assert s._graph_sample_count(x1, 50, 4, 123, 1, 7, params, counts, nan) == 200
    g = s._graphs[s._graph_key(x1, 50, params)]
    assert g.graph.replays == 4 and list(counts) == [200, 0, 0]
    assert torch.equal(g.x, x1.reshape(-1)) and list(g.key) == [123, 1] and int(g.ctr) == 7 + 200
    seed = 2**64 - 5  # a seed above 2^63 reaches the kernel with the same 64 bits
    assert s._graph_sample_count(x2, 50, 3, seed, 0, 2**63 + 1, params, counts, nan) == 150
    assert len(captures) == 1 and g.graph.replays == 7
    assert torch.equal(g.x, x2.reshape(-1))
    assert int(g.key[0]) == seed - 2**64 and int(g.key[1]) == 0 and int(g.ctr) == 2**63 + 1 + 150 - 2**64
    assert list(counts) == [350, 0, 0]  # the graph's own counts restart at zero for each call
