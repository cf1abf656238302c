"""fastcert against the libraries people use, side by side on the same models and points (issue 20).

Run (the peers live in a scratch environment next to the project, never as fastcert dependencies):

    python -m venv --system-site-packages ../peers-venv
    ../peers-venv/bin/pip install --no-deps adv-lib && ../peers-venv/bin/pip install foolbox
    # auto_LiRPA from its repository (PyPI's 0.3 does not run with numpy 2): pip install --no-deps -e <clone>,
    # plus appdirs and graphviz
    ../peers-venv/bin/python benchmarks/bench_peers.py [--points 200] [--parts curves,crown,ibp]

Every comparison runs with torch.set_num_threads(2); the repeats of the tools are interleaved
(tool A, tool B, tool A, ...) and medians are reported, so a background load hits every tool alike.

1. Robustness curves: a Fashion-MNIST MLP 784-256-256-10 (trained once, cached under build/), the first
   ``--points`` correctly classified test points; ``fastcert.curve`` at its defaults against adv_lib's FAB
   (defaults) and FMN (1,000 steps) in l1, l2 and linf. Strength: per point, the share within 1% of the
   best distance of all tools, a stronger fastcert run (many restarts and targeted runs) included.
2. CROWN-IBP: a small CNN (3x32x32, eps = 2/255, batch 128, CPU) against auto_LiRPA's "CROWN-IBP", with
   the specification (rows e_y - e_j), without it, and at batch 1; the bounds must agree to float32
   rounding.
3. Plain IBP against two plain forward passes on the center and on the radius (the floor; two passes on
   the same input, which the second pass finds in cache, are reported too) and auto_LiRPA's "IBP", on
   the small CNN and on a CNN whose 16384x256 linear layer dominates.

``pytest benchmarks/bench_peers.py --benchmark-enable`` runs short versions (skipped with a reason where
the peers are not importable). Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's fastcert, also from the peers' scratch environment
    sys.path.insert(0, str(ROOT))

import fastcert  # noqa: E402
from fastcert.models.zoo import Normalize, build_model  # noqa: E402

CACHE = ROOT / "build" / "bench_peers"
EPS = 2 / 255
NORM_P = {"l1": 1.0, "l2": 2.0, "linf": float("inf")}


# ---------------------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------------------
def import_peers() -> tuple[dict, str]:
    """-> ({"adv_lib": module, "auto_LiRPA": module, "foolbox": module} for those importable, why not).

    adv_lib imports torchvision (for its LPIPS distance) and visdom (for its loggers) at import time,
    neither of which the attacks used here touch: where they are missing, empty stand-in modules are
    registered so that adv_lib.attacks imports."""
    peers, missing = {}, []
    for name in ("torchvision", "visdom") if importlib.util.find_spec("adv_lib") else ():
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            sys.modules[name] = stub
            if name == "torchvision":
                stub.models = sys.modules["torchvision.models"] = types.ModuleType("torchvision.models")
    for name in ("adv_lib", "auto_LiRPA", "foolbox"):
        try:
            peers[name] = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a peer that does not import is reported, not fatal
            missing.append(f"{name} ({type(e).__name__}: {e})")
    if "adv_lib" in peers:
        importlib.import_module("adv_lib.attacks")
    return peers, "; ".join(missing)


def versions(peers: dict) -> dict:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    for name, dist in (("adv_lib", "adv-lib"), ("foolbox", "foolbox"), ("auto_LiRPA", "auto_LiRPA")):
        if name in peers:
            try:
                out[name] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[name] = getattr(peers[name], "__version__", "?")
    return out


# ---------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------
CPU_TIMES: dict = {}  # name -> median process CPU seconds of the last interleaved() call


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall seconds of each zero-argument callable, repeats interleaved across callables (the
    median process CPU seconds go to CPU_TIMES: steadier than wall time on a loaded machine)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    CPU_TIMES.clear()
    CPU_TIMES.update({k: statistics.median(v) for k, v in cpu.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def _cpu_line(t: dict, ref: str) -> str:
    return "  (process CPU: " + ", ".join(f"{k} {CPU_TIMES[k]:.3g}s" for k in t) + "; " + ", ".join(
        f"{ref}/{k} {CPU_TIMES[ref] / CPU_TIMES[k]:.2f}x" for k in t if k != ref) + ")"


# ---------------------------------------------------------------------------------------------------
# 1. robustness curves
# ---------------------------------------------------------------------------------------------------
def fmnist_mlp(epochs: int = 3):
    """The Fashion-MNIST MLP 784-256-256-10 (fastcert's zoo "mlp"), trained once without noise and cached."""
    from fastcert.data import load_dataset
    from fastcert.models.checkpoint import load_checkpoint

    path = CACHE / "fmnist_mlp.pt"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        train = load_dataset("fashion-mnist", "train")
        fastcert.train("mlp", train, method="none", epochs=epochs, batch_size=128, lr=1e-3, seed=0,
                       out=str(path), progress=False, log=lambda *a, **k: None)
    model, _ = load_checkpoint(path)
    return model.eval()


def correct_points(model, n: int):
    from fastcert.data import load_dataset

    test = load_dataset("fashion-mnist", "test")
    with torch.no_grad():
        ok = model(test.x[:4 * n + 100]).argmax(1) == test.y[:4 * n + 100]
    idx = torch.nonzero(ok)[:n, 0]
    return test.x[idx], test.y[idx]


def _peer_distance(model, x, adv, y, norm):
    """Distances of a peer's output points, +inf where the point is not misclassified."""
    with torch.no_grad():
        wrong = model(adv).argmax(1) != y
    d = torch.linalg.vector_norm((adv - x).flatten(1).double(), ord=NORM_P[norm], dim=1)
    return torch.where(wrong, d, torch.full_like(d, float("inf"))).numpy()


def curve_tools(peers: dict, model, x, y, norm: str, full: bool = False) -> dict:
    """name -> zero-argument callable returning (N,) distances (inf where nothing was found). ``full``: also
    fastcert's default attack with every point running every step (no patience), the previous default."""
    tools = {"fastcert": lambda: fastcert.curve(model, x, y, norms=(norm,)).distances[norm]}
    if full:
        tools["fastcert, every step"] = lambda: fastcert.curve(model, x, y, norms=(norm,), patience=None).distances[norm]
    if "adv_lib" in peers:
        from adv_lib.attacks import fab, fmn

        p = NORM_P[norm]
        tools["adv_lib FAB"] = lambda: _peer_distance(model, x, fab(model, x, y, norm=p), y, norm)
        tools["adv_lib FMN"] = lambda: _peer_distance(model, x, fmn(model, x, y, norm=p, steps=1000), y, norm)
    return tools


def strength(results: dict, names) -> dict:
    """name -> (share within 1% of the best of all, share more than 5% worse than the best, share within 1%
    of fastcert's own best: the default run and the strong run)."""
    best = np.min(np.stack([results[n] for n in results]), 0)
    own = np.min(np.stack([results[n] for n in results if n.startswith("fastcert")]), 0)
    out = {}
    for n in names:
        r = results[n] / best
        out[n] = (float(np.mean(r <= 1.01)), float(np.mean(r > 1.05)), float(np.mean(results[n] / own <= 1.01)))
    return out


def bench_curves(peers, points: int, repeats: int, norms, strong: dict, strong_seeds: int = 4,
                 log=print, full: bool = False) -> dict:
    model = fmnist_mlp()
    x, y = correct_points(model, points)
    log(f"\n## curves: Fashion-MNIST MLP 784-256-256-10, {x.shape[0]} correctly classified test points")
    rows = {}
    for norm in norms:
        tools = curve_tools(peers, model, x, y, norm, full)
        dists = {k: f() for k, f in tools.items()}  # one untimed run per tool also serves as warm-up
        t = interleaved(tools, repeats, warmup=0)
        cpu = dict(CPU_TIMES)
        # the reference: the smallest distance over several seeds of a run with more restarts and targets
        dists["fastcert strong"] = np.min(np.stack([
            fastcert.curve(model, x, y, norms=(norm,), seed=1000 + s, **strong).distances[norm]
            for s in range(strong_seeds)]), 0)
        s = strength(dists, list(dists))
        rows[norm] = {"time": t, "cpu": cpu, "strength": s}
        log(f"{norm}: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
        log(_cpu_line(t, "fastcert"))
        for k, f in t.items():
            if k != "fastcert":
                log(f"  fastcert / {k}: {t['fastcert'] / f:.2f}x")
        for k, (w1, w5, own) in s.items():
            log(f"  {k}: within 1% of best {100 * w1:.1f}%, >5% worse {100 * w5:.1f}%, "
                f"within 1% of fastcert's best {100 * own:.1f}%")
    return rows


# ---------------------------------------------------------------------------------------------------
# 2./3. CROWN-IBP and IBP
# ---------------------------------------------------------------------------------------------------
def small_cnn():
    """The small CNN (zoo "cnn_ibp": conv 16 4x4/2, conv 32 4x4/2, linear 2048->100, linear 100->10)."""
    torch.manual_seed(0)
    return build_model("cnn_ibp", (3, 32, 32), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval()


def wide_linear_cnn():
    """conv-BN-ReLU, conv-BN-ReLU, linear 16384->256, ReLU, linear 256->10 on 3x32x32."""
    torch.manual_seed(0)
    m = nn.Sequential(Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
                      nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Flatten(), nn.Linear(16384, 256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():  # non-trivial running statistics
        for bn in (m[2], m[5]):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def spec(y: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """(B, classes - 1, classes): rows e_y - e_j for every j != y."""
    eye = torch.eye(classes)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)
    keep = torch.ones(y.shape[0], classes, dtype=torch.bool)
    keep[torch.arange(y.shape[0]), y] = False
    return C[keep].view(y.shape[0], classes - 1, classes)


def lirpa_fn(peers, model, x, eps, method: str, C=None):
    """auto_LiRPA's bounds on the clipped linf box [max(x - eps, 0), min(x + eps, 1)] (fastcert's input set)."""
    al = peers["auto_LiRPA"]
    bm = al.BoundedModule(model, torch.zeros_like(x[:1]), device="cpu", verbose=0)
    ptb = al.PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(x - eps).clamp(min=0), x_U=(x + eps).clamp(max=1))
    bx = al.BoundedTensor(x, ptb)

    def run():
        with torch.no_grad():
            return bm.compute_bounds(x=(bx,), C=C, method=method)

    return run


def fastcert_fn(model, x, eps, method: str, C=None):
    def run():
        with torch.no_grad():
            return fastcert.ibp_bounds(model, x, eps, C=C, method=method)

    return run


def _close(a, b) -> float:
    """Largest difference of two bound pairs relative to their largest magnitude."""
    scale = max(float(a[0].abs().max()), float(a[1].abs().max()), 1e-12)
    return max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max())) / scale


def bench_crown(peers, repeats: int, batch: int = 128, log=print) -> dict:
    model = small_cnn()
    torch.manual_seed(1)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    C = spec(y)
    log(f"\n## CROWN-IBP: small CNN (cnn_ibp 3x32x32), eps = 2/255, batch {batch}, CPU")
    rows = {}
    for label, xb, Cb in (("with the specification", x, C), ("without the specification", x, None),
                          ("batch 1, with the specification", x[:1], C[:1])):
        fns = {"fastcert": fastcert_fn(model, xb, EPS, "crown-ibp", Cb)}
        if "auto_LiRPA" in peers:
            fns["auto_LiRPA"] = lirpa_fn(peers, model, xb, EPS, "CROWN-IBP", Cb)
        reps = repeats if xb.shape[0] > 1 else 20 * repeats
        t = interleaved(fns, reps)
        row = {"time": t}
        if "auto_LiRPA" in fns:
            row["ratio"] = t["auto_LiRPA"] / t["fastcert"]
            row["rel_diff"] = _close(fns["fastcert"](), fns["auto_LiRPA"]())
        rows[label] = row
        row["cpu"] = dict(CPU_TIMES)
        log(f"{label}: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in t.items())
            + (f"; fastcert {row['ratio']:.2f}x faster; bounds differ by {row['rel_diff']:.1e} of the largest"
               if "ratio" in row else ""))
        log(_cpu_line(t, "fastcert"))
    return rows


def bench_ibp(peers, repeats: int, batch: int = 128, log=print) -> dict:
    rows = {}
    for name, model in (("small CNN (cnn_ibp)", small_cnn()), ("CNN with a 16384x256 linear layer", wide_linear_cnn())):
        torch.manual_seed(1)
        x = torch.rand(batch, 3, 32, 32)

        r = torch.full_like(x, EPS)

        def floor(model=model, x=x, r=r):  # the center and the radius: two different inputs
            with torch.no_grad():
                return model(x), model(r)

        def floor_same(model=model, x=x):  # the same input twice (the second pass finds it in cache)
            with torch.no_grad():
                return model(x), model(x)

        fns = {"two forward passes": floor, "two passes, same input": floor_same,
               "fastcert": fastcert_fn(model, x, EPS, "ibp")}
        if "auto_LiRPA" in peers:
            fns["auto_LiRPA"] = lirpa_fn(peers, model, x, EPS, "IBP")
        t = interleaved(fns, repeats)
        row = {"time": t, "vs_floor": t["fastcert"] / t["two forward passes"],
               "vs_floor_same_input": t["fastcert"] / t["two passes, same input"]}
        if "auto_LiRPA" in fns:
            row["ratio"] = t["auto_LiRPA"] / t["fastcert"]
            row["rel_diff"] = _close(fns["fastcert"](), fns["auto_LiRPA"]())
        rows[name] = row
        row["cpu"] = dict(CPU_TIMES)
        log(f"\n## IBP: {name}, eps = 2/255, batch {batch}, CPU\n"
            + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in t.items())
            + f"; fastcert at {row['vs_floor']:.2f}x the floor ({row['vs_floor_same_input']:.2f}x two passes on the "
            "same input)"
            + (f", {row['ratio']:.2f}x faster than auto_LiRPA (bounds differ by {row['rel_diff']:.1e})"
               if "ratio" in row else ""))
        log(_cpu_line(t, "fastcert"))
    return rows


# ---------------------------------------------------------------------------------------------------
# profiles
# ---------------------------------------------------------------------------------------------------
def profile(points: int, log=print):
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    model = small_cnn()
    x = torch.rand(128, 3, 32, 32)
    C = spec(torch.randint(0, 10, (128,)))
    run = fastcert_fn(model, x, EPS, "crown-ibp", C)
    run()
    with tprofile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(3):
            run()
    log("\n## profile: fastcert CROWN-IBP, small CNN, batch 128 (3 calls)")
    log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    mlp = fmnist_mlp()
    xs, ys = correct_points(mlp, points)
    for norm in ("l2",):
        pr = cProfile.Profile()
        pr.enable()
        fastcert.curve(mlp, xs, ys, norms=(norm,))
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(25)
        log(f"\n## profile: fastcert.curve defaults, {norm}, {xs.shape[0]} points\n" + s.getvalue())


# ---------------------------------------------------------------------------------------------------
# pytest-benchmark entry points (short versions)
# ---------------------------------------------------------------------------------------------------
_PEERS, _WHY = None, ""


def _peers_or_skip(name: str):
    global _PEERS, _WHY
    if _PEERS is None:
        _PEERS, _WHY = import_peers()
    if name not in _PEERS:
        pytest.skip(f"{name} is not importable here ({_WHY}); see this file's docstring to install the peers")
    return _PEERS


@pytest.mark.parametrize("tool", ["fastcert", "auto_LiRPA"])
def test_crown_ibp_batch128(benchmark, tool):
    benchmark.group = "CROWN-IBP small CNN batch 128 with spec (CPU)"
    peers = _peers_or_skip("auto_LiRPA")
    torch.set_num_threads(2)
    model, x = small_cnn(), torch.rand(128, 3, 32, 32)
    C = spec(torch.randint(0, 10, (128,)))
    fn = fastcert_fn(model, x, EPS, "crown-ibp", C) if tool == "fastcert" else lirpa_fn(peers, model, x, EPS, "CROWN-IBP", C)
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    assert _close(fastcert_fn(model, x, EPS, "crown-ibp", C)(), lirpa_fn(peers, model, x, EPS, "CROWN-IBP", C)()) < 1e-4


@pytest.mark.parametrize("tool", ["floor", "fastcert", "auto_LiRPA"])
def test_ibp_wide_linear(benchmark, tool):
    benchmark.group = "IBP CNN with a 16384x256 linear layer batch 128 (CPU)"
    peers = _peers_or_skip("auto_LiRPA")
    torch.set_num_threads(2)
    model, x = wide_linear_cnn(), torch.rand(128, 3, 32, 32)
    r = torch.full_like(x, EPS)
    fns = {"floor": lambda: (model(x), model(r)), "fastcert": fastcert_fn(model, x, EPS, "ibp"),
           "auto_LiRPA": lirpa_fn(peers, model, x, EPS, "IBP")}
    with torch.no_grad():
        benchmark.pedantic(fns[tool], rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("tool", ["fastcert", "adv_lib FAB", "adv_lib FMN"])
def test_curve_l2_20_points(benchmark, tool):
    benchmark.group = "curve l2, Fashion-MNIST MLP, 20 points (CPU)"
    peers = _peers_or_skip("adv_lib")
    torch.set_num_threads(2)
    model = fmnist_mlp()
    x, y = correct_points(model, 20)
    d = benchmark.pedantic(curve_tools(peers, model, x, y, "l2")[tool], rounds=1, iterations=1)
    assert np.all(d > 0)


# ---------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=200, help="curve points (correctly classified test points)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats for CROWN-IBP / IBP")
    ap.add_argument("--curve-repeats", type=int, default=1, help="interleaved timed repeats of the curve tools")
    ap.add_argument("--parts", default="curves,crown,ibp", help="comma-separated: curves, crown, ibp, profile")
    ap.add_argument("--norms", default="l1,l2,linf")
    ap.add_argument("--strong-restarts", type=int, default=5, help="restarts of each reference run")
    ap.add_argument("--strong-targets", type=int, default=9, help="targeted runs of each reference run")
    ap.add_argument("--strong-seeds", type=int, default=4, help="reference runs (seeds); the minimum is kept")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--with-full", action="store_true",
                    help="curves: also time fastcert's attack with every point running every step (no patience)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    peers, why = import_peers()
    print("versions:", versions(peers))
    if why:
        print("not importable:", why)
    parts = a.parts.split(",")
    if "curves" in parts:
        strong = {"restarts": a.strong_restarts, "targets": a.strong_targets, "patience": None}
        print(f"(stronger fastcert reference: the minimum over {a.strong_seeds} seeds of restarts={a.strong_restarts}, "
              f"targets={a.strong_targets}, every point running every step)")
        bench_curves(peers, a.points, a.curve_repeats, a.norms.split(","), strong, a.strong_seeds, full=a.with_full)
    if "crown" in parts:
        bench_crown(peers, a.repeats)
    if "ibp" in parts:
        bench_ibp(peers, a.repeats)
    if "profile" in parts:
        profile(min(a.points, 50))


if __name__ == "__main__":
    main()
