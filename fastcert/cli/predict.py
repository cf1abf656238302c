"""`predict`: the smoothed classifier's prediction (Cohen et al.'s PREDICT, abstains at level alpha)."""
from __future__ import annotations

import time

from fastcert.cli.common import (CliError, add_common, add_noise_flags, add_sampling, add_selection, add_split,
                                 selected_indices)
from fastcert.rng import derive_seed


def add_arguments(p):
    add_common(p, out="log path (required); a rerun with the same --out resumes it")
    add_noise_flags(p)
    add_sampling(p, n0=False)
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability: abstain unless the top "
                                                             "class wins at this level (default 0.001)")
    add_selection(p)
    add_split(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(batch=1000)


def run(args) -> int:
    from fastcert.cli.common import load_model_and_data, model_settings, resolve_noise

    if args.out is None:
        raise CliError("--out is required")
    for name in ("n", "batch", "skip"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be >= 1")
    if not 0 < args.alpha < 1:
        raise CliError(f"--alpha must be in (0, 1), got {args.alpha}")
    import torch
    from tqdm.auto import tqdm

    from fastcert.io.logs import LogWriter, format_time
    from fastcert.smoothing.smooth import Smooth

    model, meta, dataset, data = load_model_and_data(args, args.split)
    noise, noise_settings = resolve_noise(args, meta)
    smooth = Smooth(model, meta["num_classes"], noise, device=args.device)
    settings = {"command": "predict", "model": str(args.model), **model_settings(args, meta), "dataset": dataset,
                "split": args.split,
                **noise_settings, "n": args.n, "alpha": args.alpha, "seed": args.seed,
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
