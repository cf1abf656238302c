"""`predict`: the smoothed classifier's prediction (Cohen et al.'s PREDICT, abstains at level alpha)."""
from __future__ import annotations

import time

from fastcert.cli.common import CliError, add_common, selected_indices
from fastcert.rng import derive_seed


def add_arguments(p):
    add_common(p)
    p.add_argument("--noise", default="gaussian", help="gaussian | laplace | uniform | discrete")
    p.add_argument("--sigma", type=float, default=None, help="noise scale (default: the model's)")
    p.add_argument("--alpha-keep", type=float, default=None)
    p.add_argument("--K", type=int, default=None)
    p.add_argument("--n", type=int, default=100_000, help="samples")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument("--skip", type=int, default=1)
    p.add_argument("--max", type=int, default=-1)
    p.add_argument("--split", default="test")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(batch=1000)


def run(args) -> int:
    if args.model is None:
        raise CliError("--model is required")
    if args.out is None:
        raise CliError("--out is required")
    for name in ("n", "batch", "skip"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be >= 1")
    if not 0 < args.alpha < 1:
        raise CliError(f"--alpha must be in (0, 1), got {args.alpha}")
    import torch
    from tqdm.auto import tqdm

    from fastcert.data import load_dataset
    from fastcert.io.logs import LogWriter, format_time
    from fastcert.models.checkpoint import load_checkpoint
    from fastcert.smoothing.noise import make_noise
    from fastcert.smoothing.smooth import Smooth

    model, meta = load_checkpoint(args.model, device=args.device)
    cfg = meta.get("config", {})
    noise = make_noise(args.noise, sigma=args.sigma if args.sigma is not None else cfg.get("sigma"),
                       alpha_keep=args.alpha_keep if args.alpha_keep is not None else cfg.get("alpha_keep"),
                       K=args.K if args.K is not None else cfg.get("K"))
    smooth = Smooth(model, meta["num_classes"], noise, device=args.device)
    data = load_dataset(args.dataset, args.split)
    settings = {"command": "predict", "model": str(args.model), "dataset": args.dataset, "split": args.split,
                "noise": repr(noise), "n": args.n, "alpha": args.alpha, "seed": args.seed,
                "device_type": torch.device(args.device).type}
    indices = selected_indices(len(data), args.skip, args.max)
    with LogWriter(args.out, ["idx", "label", "predict", "correct", "time"], settings) as log:
        todo = [i for i in indices if i not in log.done]
        for i in tqdm(todo, desc="predict", disable=args.quiet):
            t0 = time.time()
            pred = smooth.predict(data.x[i], args.n, args.alpha, args.batch, seed=derive_seed(args.seed, i))
            label = int(data.y[i])
            log.write({"idx": i, "label": label, "predict": pred, "correct": int(pred == label),
                       "time": format_time(time.time() - t0)})
    print(f"wrote {args.out}")
    return 0
