"""`certify`: certify test points of a dataset with a smoothed classifier; writes a resumable
Cohen-style log (``idx label predict radius correct time`` + extra columns)."""
from __future__ import annotations

import time

import numpy as np

from ..cli import CliError, add_common


def add_arguments(p):
    add_common(p)
    p.add_argument("--method", default="smoothing", help="smoothing (default) | ibp | crown-ibp")
    p.add_argument("--noise", default="gaussian", help="gaussian | laplace | uniform | discrete")
    p.add_argument("--sigma", type=float, default=None,
                   help="noise scale: Gaussian sigma, Laplace scale, uniform half-width (default: the model's)")
    p.add_argument("--alpha-keep", type=float, default=None, help="discrete noise: keep probability")
    p.add_argument("--K", type=int, default=None, help="discrete noise: levels - 1 (inputs on {0,1/K,...,1})")
    p.add_argument("--n0", type=int, default=100, help="selection samples")
    p.add_argument("--n", type=int, default=100_000, help="estimation samples")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument("--skip", type=int, default=1, help="certify every skip-th test point")
    p.add_argument("--max", type=int, default=-1, help="stop after this many points (-1: all)")
    p.add_argument("--split", default="test", help="train | test")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--autocast", default=None, help="CUDA only: float16 | bfloat16 base-model autocast")
    p.set_defaults(batch=1000)


def point_seed(seed: int, idx: int) -> int:
    """Seed of one test point: a function of (run seed, index) only, so skip/max/sharding/resume never
    change a row."""
    return int(np.random.SeedSequence([int(seed), int(idx)]).generate_state(1, np.uint64)[0] >> 1)


def selected_indices(n_points: int, skip: int, max_points: int) -> list[int]:
    idx = list(range(0, n_points, skip))
    return idx if max_points < 0 else idx[:max_points]


def _validate(args):
    if args.model is None:
        raise CliError("--model is required (a checkpoint written by `train`)")
    for name in ("n0", "n", "batch", "skip"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.alpha < 1:
        raise CliError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.out is None:
        raise CliError("--out is required (the log path)")


def run(args) -> int:
    _validate(args)
    if args.method in ("ibp", "crown-ibp"):
        from ..certified_training import certify_command

        return certify_command(args)
    if args.method != "smoothing":
        raise CliError(f"--method must be smoothing, ibp or crown-ibp, got {args.method!r}")
    import torch
    from tqdm.auto import tqdm

    from ..data import load_dataset
    from ..logs import LogWriter, floor_str, format_time
    from ..models import load_checkpoint
    from ..noise import make_noise
    from ..smoothing import ABSTAIN, Smooth

    model, meta = load_checkpoint(args.model, device=args.device)
    sigma = args.sigma if args.sigma is not None else meta.get("config", {}).get("sigma")
    alpha_keep = args.alpha_keep if args.alpha_keep is not None else meta.get("config", {}).get("alpha_keep")
    K = args.K if args.K is not None else meta.get("config", {}).get("K")
    noise = make_noise(args.noise, sigma=sigma, alpha_keep=alpha_keep, K=K)
    autocast = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.autocast, "bad")
    if autocast == "bad":
        raise CliError("--autocast must be float16 or bfloat16")
    smooth = Smooth(model, meta["num_classes"], noise, device=args.device, autocast=autocast)
    data = load_dataset(args.dataset, args.split)
    if tuple(data.input_shape) != tuple(meta["input_shape"]):
        raise CliError(f"--dataset {args.dataset} has inputs {data.input_shape} but the model expects "
                       f"{tuple(meta['input_shape'])}")
    columns = ["idx", "label", "predict", "radius", "correct", "time", "p_lower", "n_used",
               "radius_l0", "radius_l1", "radius_l2", "radius_linf", "count_top"]
    settings = {"command": "certify", "model": str(args.model), "dataset": args.dataset, "split": args.split,
                "noise": repr(noise), "n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed,
                "autocast": args.autocast, "device_type": torch.device(args.device).type}
    indices = selected_indices(len(data), args.skip, args.max)
    with LogWriter(args.out, columns, settings) as log:
        todo = [i for i in indices if i not in log.done]
        for i in tqdm(todo, desc="certify", disable=args.quiet, initial=len(indices) - len(todo), total=len(indices)):
            x, label = data.x[i], int(data.y[i])
            t0 = time.time()
            cert = smooth.certify(x, args.n0, args.n, args.alpha, args.batch, seed=point_seed(args.seed, i))
            elapsed = time.time() - t0
            pred = cert.prediction
            log.write({
                "idx": i, "label": label, "predict": pred, "radius": floor_str(cert.radius),
                "correct": int(pred == label), "time": format_time(elapsed), "p_lower": floor_str(cert.p_lower, 8),
                "n_used": cert.n_used,
                **{f"radius_{k}": floor_str(cert.radii[k]) for k in ("l0", "l1", "l2", "linf")},
                "count_top": int(cert.counts[pred]) if pred != ABSTAIN else int(cert.counts.max()),
            })
    print(f"wrote {args.out}")
    return 0
