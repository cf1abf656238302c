"""Re-estimate the simulated failure rates that size the sequential and top-k cases (their
SOUND_RATE_SIM / CTRL_RATE_SIM constants; the other cases' rates are exact and computed in the tests).

Runs the real procedure through the public API, sound and with the case's control monkeypatched in
exactly as the test does, on seeds 1,000,000 + i (disjoint from the tests' seeds 0, 1, 2, ...), and
prints rate and standard error per case. Not collected by pytest. Usage, from the repository root:

    python python_tests/soundness/simulate_rates.py [runs]     (default 3000; minutes on a CPU)

Re-run it and update the constants when the procedure under test changes (SOUNDNESS.md records the
values in use).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import pytest  # noqa: E402

import fastcert  # noqa: E402
import fastcert.smoothing.topk as topk  # noqa: E402
import test_sound_sequential as seq  # noqa: E402
import test_sound_topk as tk  # noqa: E402
from fastcert.smoothing import sequential  # noqa: E402
from testing import FirstCoordinate  # noqa: E402

SEED0 = 1_000_000


def _rate(run, runs):
    wrong = sum(bool(run(SEED0 + i)) for i in range(runs))
    rate = wrong / runs
    return rate, (rate * (1 - rate) / runs) ** 0.5


def sequential_cases(runs):
    for name, noise in sorted(seq.NOISES.items()):
        sm = fastcert.Smooth(FirstCoordinate(), 2, noise)
        r = 0.1
        g = r * (1 - 1e-6)
        xr = torch.tensor([g, 0.5])
        xa = torch.tensor([seq.G_ADAPTIVE, 0.5])

        def radii(s):
            c = sm.certify(xr, n=seq.MAX_N, alpha=seq.ALPHA, seed=s, radii=[r], sequential=True, max_n=seq.MAX_N,
                           **seq.SEQ)
            return c.prediction == 0 or c.certified[r] or (c.prediction == 1 and c.radius > g)

        def adaptive(s):
            c = sm.certify(xa, n=seq.MAX_N, alpha=seq.ALPHA, seed=s, sequential=True, max_n=seq.MAX_N,
                           mode="adaptive", **seq.SEQ)
            return c.prediction == 0 or (c.prediction == 1 and c.radius > seq.G_ADAPTIVE)

        for mode, run in (("radii", radii), ("adaptive", adaptive)):
            for variant in ("sound", "control"):
                with pytest.MonkeyPatch.context() as mp:
                    if variant == "control":
                        seq._per_look_alpha(mp)
                    yield f"sequential {mode} {name} {variant}", _rate(run, runs)


def topk_cases(runs):
    for case, (noise, cuts, k, cdf) in sorted(tk.CASES.items()):
        setup = tk.SETUP[case]
        C = len(cuts) + 1
        truth = {c: tk.true_topk_radius(cdf, cuts, 0.0, c, k) for c in range(C)}
        sm = fastcert.Smooth(tk.Slabs(cuts), C, noise)
        x = torch.tensor([0.0, 0.5])

        def run(s):
            cert = sm.certify_topk(x, k, tk.N0, tk.N, setup["alpha"], 512, seed=s)
            return any(r > truth[c] * (1 + 1e-9) for c, r in cert.extra["class_radii"].items())

        for variant in ("sound", "control"):
            with pytest.MonkeyPatch.context() as mp:
                if variant == "control":
                    lower, upper, f = topk.clopper_pearson_lower, topk.clopper_pearson_upper, setup["ctrl"]
                    mp.setattr(topk, "clopper_pearson_lower", lambda kk, n, a: lower(kk, n, f * a))
                    mp.setattr(topk, "clopper_pearson_upper", lambda kk, n, a: upper(kk, n, f * a))
                yield f"certify_topk {case} {variant}", _rate(run, runs)


def main(argv):
    runs = int(argv[1]) if len(argv) > 1 else 3000
    which = argv[2] if len(argv) > 2 else "all"
    gens = {"sequential": [sequential_cases], "topk": [topk_cases], "all": [sequential_cases, topk_cases]}[which]
    for gen in gens:
        for name, (rate, se) in gen(runs):
            print(f"{name:<44} rate {rate:.4f}  (standard error {se:.4f}, {runs} runs)", flush=True)


if __name__ == "__main__":
    main(sys.argv)
