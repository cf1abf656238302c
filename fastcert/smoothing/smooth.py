"""Randomized smoothing: PREDICT and CERTIFY of Cohen, Rosenfeld & Kolter 2019 ("Certified
Adversarial Robustness via Randomized Smoothing", ICML), on the fused sample-and-count kernels.

The smoothed classifier is g(x) = argmax_c P(f(x + noise) = c). ``certify`` draws n0 selection
samples to guess the top class cA, then n fresh samples to lower-bound pA = P(f(x + noise) = cA)
with a one-sided Clopper-Pearson bound at level alpha; with probability at least 1 - alpha over the
sampling, a returned (non-abstaining) certificate is correct.

Sampling is deterministic given ``seed``: sample number i of stream s uses Philox counter
(coordinate group, i, s), so results do not depend on batch size, device placement or sharding
within one device type. Streams: 0 = selection, 1 = estimation, 2 = predict, >= 3 sequential rounds.
"""
from __future__ import annotations


import numpy as np
import torch

from fastcert import _native
from fastcert.smoothing.noise import Discrete, Noise
from fastcert.rng import resolve_seed
from fastcert.smoothing.certificate import (ABSTAIN, STREAM_ESTIMATE, STREAM_PREDICT, STREAM_SELECT,
                                             Certificate)
from fastcert.smoothing.sequential import certify_sequential
from fastcert.smoothing.sound import LatticeSmoothing
from fastcert.smoothing.topk import certify_topk
from fastcert.stats import binom_pvalue, clopper_pearson_lower
from fastcert.validate import check_alpha, check_device, check_int, check_radii

# Captured CUDA graphs kept per Smooth (each holds its own static buffers and memory pool)
_GRAPH_CACHE_SIZE = 8


class Smooth:
    """A smoothed classifier around ``model`` (an nn.Module mapping (B, *x.shape) -> (B, num_classes)).

    ``noise`` is fastcert.Gaussian(sigma) | Laplace(scale) | Uniform(width) | Discrete(alpha, K).
    The model is put in eval mode. ``device`` defaults to the device of the model's parameters.
    ``autocast`` (None, torch.float16 or torch.bfloat16) runs the base model under torch.autocast (CUDA
    or CPU); it changes the base classifier, so record it with the results (the CLI logs it).
    ``cuda_graph=True`` (CUDA only) captures one sample-forward-count step of ``batch_size`` samples as a
    CUDA graph and replays it for every full batch (the sample offset advances on the device), which
    removes the per-launch CPU overhead that dominates small models. The model must be capturable (static
    shapes, no host synchronization). Each capture is checked once against the eager path (same noisy
    batch, same counts) before its replays are used; counts need no per-batch host synchronization either
    way. Not used for per-sample scores/margins (confidence measures), which take the eager path.
    """

    def __init__(self, model: torch.nn.Module, num_classes: int, noise: Noise, device=None, autocast=None,
                 cuda_graph: bool = False, sound: bool = False, levels: int = 256):
        if not callable(model):
            raise TypeError("model must be a callable torch module")
        self.num_classes = check_int("num_classes", num_classes, 1)
        if not isinstance(noise, Noise):
            raise TypeError(f"noise must be fastcert.Gaussian/Laplace/Uniform/Discrete, got {noise!r}")
        self.noise = noise
        self.model = model
        if isinstance(model, torch.nn.Module):
            model.eval()
        if device is None:
            try:
                device = next(model.parameters()).device
            except (AttributeError, StopIteration):
                device = torch.device("cpu")
        self.device = check_device(device)
        if self.device.type == "cuda" and not _native.HAVE_CUDA:
            raise RuntimeError("device is CUDA but fastcert._core_cuda was not built (see fastcert.build_info())")
        if autocast not in (None, torch.float16, torch.bfloat16):
            raise ValueError("autocast must be None, torch.float16 or torch.bfloat16")
        self.autocast = autocast
        if not isinstance(cuda_graph, bool):
            raise TypeError(f"cuda_graph must be a bool, got {cuda_graph!r}")
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        self.cuda_graph = cuda_graph
        if not isinstance(sound, bool):
            raise TypeError(f"sound must be a bool, got {sound!r}")
        # sound=True: lattice sampling for inputs on the grid of ``levels`` values (fastcert.smoothing.sound)
        self.sound = sound
        self.levels = levels
        self._lattice = LatticeSmoothing(noise, levels) if sound else None
        self._checked_shapes: set = set()
        self._graphs: dict = {}  # _graph_key(...) -> _Graph, see _graph_for

    # ------------------------------------------------------------------ validation
    def _prepare_x(self, x) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
        if not (x.dtype.is_floating_point):
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        if x.numel() == 0:
            raise ValueError("x must not be empty")
        if x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"x must be on the cpu or a cuda device, got {x.device}")
        xf = x.detach().to(device=self.device, dtype=torch.float32).contiguous()
        if not bool(torch.isfinite(xf).all()):
            raise ValueError("x contains NaN or inf")
        self.noise.check_input(xf.cpu().numpy())
        return xf

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        key = tuple(batch.shape[1:])
        first = key not in self._checked_shapes
        try:
            if self.autocast is not None:
                # no weight-cast cache under CUDA graphs: cached casts would be captured as stale tensors
                with torch.autocast(batch.device.type, dtype=self.autocast, cache_enabled=not self.cuda_graph):
                    logits = self.model(batch)
            else:
                logits = self.model(batch)
        except RuntimeError as e:
            if first:
                raise ValueError(f"x: shape {key} does not fit the model ({str(e).splitlines()[0]})") from None
            raise
        if first:
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch.shape[0]:
                raise ValueError(f"x: the model must map (B, *x.shape) to (B, num_classes); got output "
                                 f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)}")
            if logits.shape[1] != self.num_classes:
                raise ValueError(f"num_classes={self.num_classes} but the model outputs {logits.shape[1]} logits")
            self._checked_shapes.add(key)
        return logits

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def sample_counts(self, x, num: int, batch_size: int, seed: int, stream: int = STREAM_ESTIMATE,
                      start: int = 0, cls: int = -1, measure: str | None = None):
        """Draw ``num`` noisy copies of x (samples start .. start+num-1 of ``stream``), classify them
        and return (counts (C,) int64 numpy, values) where ``values`` is None, or with ``measure`` in
        {"score", "margin"} and ``cls`` >= 0 a float32 numpy array (num,) of the per-sample softmax
        score of ``cls`` or margin p_cls - max_{j != cls} p_j (Kumar et al. 2020)."""
        num = check_int("num", num, 0)
        batch_size = check_int("batch_size", batch_size, 1)
        stream = check_int("stream", stream, 0)
        start = check_int("start", start, 0)
        if stream >= 2**32 or start + num > 2**64:
            raise ValueError("stream must be < 2^32 and start + num <= 2^64")
        seed = resolve_seed(seed)
        x = self._prepare_x(x) if not (isinstance(x, torch.Tensor) and x.dtype == torch.float32
                                       and x.device == self.device and x.is_contiguous()) else x
        if measure not in (None, "score", "margin"):
            raise ValueError(f"measure must be 'score' or 'margin', got {measure!r}")
        if measure is not None and not (0 <= cls < self.num_classes):
            raise ValueError(f"cls must be a class index when measure is given, got {cls}")
        if self._lattice is not None:
            return self._lattice.sample_counts(self, x, num, batch_size, seed, stream, start, cls, measure)
        ntype, scale, keep, K = self.noise.kernel_params()
        D = x.numel()
        C = self.num_classes
        bs = min(batch_size, max(num, 1))
        buf = torch.empty((bs, D), dtype=torch.float32, device=self.device)
        values = np.empty(num, dtype=np.float32) if measure is not None else None
        if self.device.type == "cpu":
            counts = np.zeros(C, dtype=np.int64)
            xv, bv = x.view(-1).numpy(), buf.numpy()
        else:
            counts_t = torch.zeros(C, dtype=torch.int64, device=self.device)
            nan_t = torch.zeros(1, dtype=torch.int64, device=self.device)
            vals_t = torch.empty(num, dtype=torch.float32, device=self.device) if measure is not None else None
        nan_rows = 0
        done = 0
        if self.device.type == "cuda" and self.cuda_graph and measure is None and num // bs >= 2:
            done = self._graph_sample_count(x, bs, num // bs, seed, stream, start, (ntype, scale, keep, K),
                                            counts_t, nan_t)
        while done < num:
            b = min(bs, num - done)
            if self.device.type == "cpu":
                _native.sample_cpu(xv, bv[:b], seed, stream, start + done, ntype, scale, keep, K)
                logits = self._forward(buf[:b].view(b, *x.shape))
                lg = logits.detach()
                if lg.dtype not in (torch.float32, torch.float64):
                    lg = lg.float()
                lg = lg.contiguous().numpy()
                if measure is None:
                    nan_rows += _native.count_cpu(lg, counts)
                else:
                    sc = np.empty(b, dtype=np.float32)
                    mg = np.empty(b, dtype=np.float32)
                    nan_rows += _native.count_cpu(lg, counts, cls, sc, mg)
                    values[done:done + b] = sc if measure == "score" else mg
            else:
                _native.sample_cuda(x, buf[:b], seed, stream, start + done, ntype, scale, keep, K)
                logits = _cuda_logits(self._forward(buf[:b].view(b, *x.shape)))
                vt = vals_t[done:done + b] if vals_t is not None else None
                _native.count_cuda(logits, counts_t, nan_t, cls if measure else -1,
                                   vt if measure == "score" else None, vt if measure == "margin" else None)
            done += b
        if self.device.type != "cpu":
            counts = counts_t.cpu().numpy()
            nan_rows = int(nan_t.item())
            if vals_t is not None:
                values = vals_t.cpu().numpy()
        if nan_rows:
            raise ValueError(f"model: produced NaN logits on {nan_rows} of {num} noisy samples")
        return counts, values

    def _graph_key(self, x: torch.Tensor, bs: int, params: tuple) -> tuple:
        """What a captured graph depends on: input shape and dtype, batch size, the model (identity), autocast,
        device and the noise's kernel parameters. Seed, stream, start and the input values are not part of it:
        they are written into the graph's device-side inputs before its replays."""
        return (tuple(x.shape), x.dtype, int(bs), id(self.model), self.autocast, self.device, tuple(params))

    def _graph_for(self, x: torch.Tensor, bs: int, params: tuple) -> "_Graph":
        """The cached graph for this key, captured on first use (at most _GRAPH_CACHE_SIZE kept, oldest dropped)."""
        key = self._graph_key(x, bs, params)
        g = self._graphs.get(key)
        if g is None:
            while len(self._graphs) >= _GRAPH_CACHE_SIZE:
                self._graphs.pop(next(iter(self._graphs)))
            g = self._capture_graph(x, bs, params)
            self._graphs[key] = g
        return g

    def _capture_graph(self, x: torch.Tensor, bs: int, params: tuple) -> "_Graph":
        """Capture one sample-forward-count step of bs samples as a CUDA graph on static buffers. The noise
        counter reads the seed and stream from ``g.key`` and the sample offset from ``g.ctr`` (advanced by bs
        on the device at every replay), so the graph serves every point and every start."""
        dev = self.device
        shape = tuple(x.shape)
        D = x.numel()
        g = _Graph()
        g.x = x.detach().reshape(-1).clone()
        g.buf = torch.empty((bs, D), dtype=torch.float32, device=dev)
        g.ctr = torch.zeros(1, dtype=torch.int64, device=dev)
        g.key = torch.zeros(2, dtype=torch.int64, device=dev)
        g.counts = torch.zeros(self.num_classes, dtype=torch.int64, device=dev)
        g.nan = torch.zeros(1, dtype=torch.int64, device=dev)
        g.bs, g.shape, g.params = bs, shape, params
        cur = torch.cuda.current_stream(dev)
        # warm-up outside the capture (cuBLAS/cuDNN handles, autotuning), on a side stream as torch asks
        _native.sample_cuda(g.x, g.buf, 0, 0, 0, *params)
        side = torch.cuda.Stream(dev)
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            self._forward(g.buf.view(bs, *shape))
        cur.wait_stream(side)
        g.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.device(dev), torch.cuda.graph(g.graph):
                _native.sample_cuda(g.x, g.buf, 0, 0, 0, *params, start_dev=g.ctr, key_dev=g.key)
                g.logits = _cuda_logits(self._forward(g.buf.view(bs, *shape)))
                _native.count_cuda(g.logits, g.counts, g.nan)
                _native.advance_cuda(g.ctr, bs)
        except RuntimeError as e:
            raise RuntimeError(f"cuda_graph=True: the model could not be captured as a CUDA graph "
                               f"({str(e).splitlines()[0]}); use cuda_graph=False") from None
        return g

    def _graph_sample_count(self, x, bs, k, seed, stream, start, params, counts_t, nan_t) -> int:
        """Samples start .. start + k*bs - 1 through the cached CUDA graph for (shape, bs, model, ...); their
        counts are added to counts_t / nan_t on the device. Returns k * bs."""
        g = self._graph_for(x, bs, params)
        g.x.copy_(x.reshape(-1))
        g.ctr.fill_(_as_int64(start))
        g.key.copy_(torch.tensor([_as_int64(seed), int(stream)], dtype=torch.int64))
        g.counts.zero_()
        g.nan.zero_()
        replays = k
        if not g.checked:
            # check each capture once against the eager path: its first replay must draw exactly samples
            # start .. start+bs-1 and count exactly the argmaxes of the logits it produced
            g.graph.replay()
            replays -= 1
            ref = torch.empty_like(g.buf)
            _native.sample_cuda(x, ref, seed, stream, start, *params)
            ref_counts = torch.zeros_like(g.counts)
            ref_nan = torch.zeros_like(g.nan)
            _native.count_cuda(g.logits, ref_counts, ref_nan)
            if not (torch.equal(ref, g.buf) and torch.equal(ref_counts, g.counts) and torch.equal(ref_nan, g.nan)
                    and int(g.ctr.item()) == _as_int64(start + bs)):
                raise RuntimeError("cuda_graph=True: the captured graph disagrees with the eager path; "
                                   "use cuda_graph=False (and please report this)")
            g.checked = True
        for _ in range(replays):
            g.graph.replay()
        counts_t += g.counts
        nan_t += g.nan
        return k * bs

    # ------------------------------------------------------------------ Cohen et al.
    def predict(self, x, n: int, alpha: float, batch_size: int, seed=None) -> int:
        """PREDICT: the top class of n samples, or -1 (abstain) unless the two-sided binomial test
        of the top two counts rejects equality at level alpha. Wrong (non-abstaining) answers occur
        with probability at most alpha."""
        n = check_int("n", n, 1)
        alpha = check_alpha(alpha)
        check_int("batch_size", batch_size, 1)
        seed = resolve_seed(seed)
        x = self._prepare_x(x)
        counts, _ = self.sample_counts(x, n, batch_size, seed, STREAM_PREDICT)
        order = np.argsort(-counts, kind="stable")
        top = int(order[0])
        n_a = int(counts[top])
        n_b = int(counts[order[1]]) if len(order) > 1 else 0
        if n_a + n_b == 0 or binom_pvalue(n_a, n_a + n_b, 0.5) > alpha:
            return ABSTAIN
        return top

    def certify(self, x, n0: int, n: int, alpha: float, batch_size: int, seed=None, radii=None,
                sequential: bool = False, max_n: int | None = None, **kwargs) -> Certificate:
        """CERTIFY: n0 selection samples pick cA; n estimation samples give the one-sided
        Clopper-Pearson lower bound pA at level alpha; abstain (-1) when pA < 1/2, else the radius of
        ``self.noise`` at pA (sigma * Phi^{-1}(pA) for Gaussian noise).

        With ``radii=[...]`` the certificate also reports ``certified[r]`` (radius >= r). With
        ``sequential=True`` (and radii) the decision uses the anytime-valid sequential procedure of
        fastcert.smoothing.sequential, drawing at most ``max_n`` (default n) estimation samples.
        """
        n0 = check_int("n0", n0, 1)
        n = check_int("n", n, 1)
        alpha = check_alpha(alpha)
        check_int("batch_size", batch_size, 1)
        seed = resolve_seed(seed)
        if self.sound and sequential:
            raise ValueError("sequential: sound=True supports the plain certify (and predict) only")
        if sequential:
            return certify_sequential(self, x, n0=n0, alpha=alpha, batch_size=batch_size, seed=seed, radii=radii,
                                      max_n=max_n if max_n is not None else n, **kwargs)
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        x = self._prepare_x(x)
        counts0, _ = self.sample_counts(x, n0, batch_size, seed, STREAM_SELECT)
        c_a = int(np.argmax(counts0))  # first maximum: ties go to the lower class index
        counts, _ = self.sample_counts(x, n, batch_size, seed, STREAM_ESTIMATE)
        return self.certificate_from_counts(c_a, counts, alpha, x.numel(), n_used=n0 + n, seed=seed, radii=radii)

    def certificate_from_counts(self, c_a: int, counts: np.ndarray, alpha: float, d: int, n_used: int,
                                seed=None, radii=None) -> Certificate:
        """Build the certificate for selected class ``c_a`` from the estimation counts."""
        if self._lattice is not None:
            return self._lattice.certificate(c_a, counts, alpha, d, n_used, seed=seed, radii=radii)
        n = int(np.sum(counts))
        p_lower = clopper_pearson_lower(int(counts[c_a]), n, alpha)
        if p_lower < 0.5 or (isinstance(self.noise, Discrete) and not p_lower > 0.5):
            pred, radius = ABSTAIN, (0 if isinstance(self.noise, Discrete) else 0.0)
            all_radii = {k: (0 if k == "l0" else 0.0) for k in ("l0", "l1", "l2", "linf")}
        else:
            pred = c_a
            all_radii = self.noise.radii(p_lower, d)
            radius = all_radii[self.noise.norm]
        cert = Certificate(pred, radius, all_radii, np.asarray(counts, dtype=np.int64), float(p_lower), int(n_used),
                           seed=seed)
        if radii is not None:
            cert.certified = {float(r): bool(pred != ABSTAIN and radius >= float(r)) for r in check_radii(radii)}
        return cert

    def certify_topk(self, x, k: int, n0: int, n: int, alpha: float, batch_size: int, seed=None) -> Certificate:
        """Top-k certificate (Jia, Cao, Wang & Gong 2020): see fastcert.smoothing.topk.certify_topk."""
        if self.sound:
            raise ValueError("k: certify_topk is not supported with sound=True")
        return certify_topk(self, x, k=k, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed)


class _Graph:
    """A captured sample-forward-count step and its static buffers (see Smooth._capture_graph)."""

    checked = False  # compared once against the eager path (Smooth._graph_sample_count)


def _as_int64(v: int) -> int:
    """An unsigned 64-bit counter value as the int64 with the same bits (what the kernels read back)."""
    v = int(v)
    return v - 2**64 if v >= 2**63 else v


def _cuda_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits as the counting kernel takes them: detached, a dtype it reads (else float32), contiguous."""
    logits = logits.detach()
    if logits.dtype not in _native.cuda_logit_dtypes():
        logits = logits.float()
    return logits.contiguous()
