"""`certify`: certify test points of a dataset with a smoothed classifier; writes a resumable
Cohen-style log (``idx label predict radius correct time`` + extra columns)."""
from __future__ import annotations

import time


from fastcert.cli.common import (CliError, add_common, add_noise_flags, add_sampling, add_selection, add_split,
                                 model_settings, selected_indices)
from fastcert.rng import derive_seed


def add_arguments(p):
    add_common(p, out="log path (required); a rerun with the same --out resumes it")
    p.add_argument("--method", default=None, choices=("smoothing", "ibp", "crown-ibp"),
                   help="how to certify: randomized smoothing, or the interval bounds IBP / CROWN-IBP at --eps "
                        "(default: ibp for a checkpoint trained with --method ibp or acert, else smoothing)")
    add_noise_flags(p)
    add_sampling(p)
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    add_selection(p)
    add_split(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--autocast", default=None, choices=("float16", "bfloat16"),
                   help="run the base model under torch.autocast (CUDA or CPU); this changes "
                        "the base classifier and is recorded in the log's settings")
    p.add_argument("--cuda-graph", action="store_true",
                   help="CUDA only: capture one sample-forward-count batch as a CUDA graph and replay it "
                        "(small models; checked once against the eager path)")
    p.add_argument("--sound", action="store_true",
                   help="sound in floating point (Gaussian noise, inputs on a grid of --levels values): lattice "
                        "sampling and an outward-rounded radius (fastcert.smoothing.sound)")
    p.add_argument("--levels", type=int, default=None,
                   help="--sound: values per coordinate of the input grid (default 17 for digits, else 256)")
    p.add_argument("--top-k", type=int, default=None, help="certify the top-k prediction set (Jia et al. 2020)")
    p.add_argument("--confidence-measure", default=None, choices=("score", "margin"),
                   help="certify the expected confidence (Kumar et al. 2020) at --radii")
    p.add_argument("--radii", default=None, help="comma-separated target radii (sequential / confidence)")
    p.add_argument("--sequential", action="store_true",
                   help="decide each --radii target with an anytime-valid sequential test (at most --n samples)")
    p.add_argument("--adaptive", action="store_true",
                   help="input-adaptive sample size for the usual radius (at most --n samples)")
    p.add_argument("--eps", default="0.1",
                   help="--method ibp / crown-ibp: comma-separated linf budgets in [0, 1] pixel units (default 0.1)")
    p.add_argument("--unsound-ibp", action="store_true",
                   help="--method ibp: plain float32 interval bounds, not rounded outward (faster, but a bound may "
                        "miss the network's own float outputs by rounding error); default: sound bounds "
                        "(ibp_bounds(..., sound=True)), recorded as \"sound\" in the log settings")
    p.set_defaults(batch=1000)


def _validate(args):
    for name in ("n0", "n", "batch", "skip"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.alpha < 1:
        raise CliError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.out is None:
        raise CliError("--out is required (the log path)")


def run(args) -> int:
    from fastcert.cli.common import default_method, load_model_and_data

    _validate(args)
    from fastcert.cli.distributed import finish_distributed, part_path, rank_device, rank_world

    rank, world = rank_world()
    args.device = rank_device(args.device)  # under torchrun: cuda -> cuda:LOCAL_RANK, one GPU per rank
    model, meta, dataset, data = load_model_and_data(args, args.split)
    args.method = default_method(args, meta)
    if args.method in ("ibp", "crown-ibp"):
        from fastcert.cli import certify_ibp

        return certify_ibp.run(args, model, meta, dataset, data)
    import torch
    from tqdm.auto import tqdm

    from fastcert.cli.common import resolve_noise
    from fastcert.io.logs import LogWriter, format_time
    from fastcert.smoothing.smooth import Smooth

    noise, noise_settings = resolve_noise(args, meta)
    autocast = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.autocast]
    if args.cuda_graph and torch.device(args.device).type != "cuda":
        raise CliError("--cuda-graph needs --device cuda")
    levels = args.levels if args.levels is not None else (17 if str(dataset).startswith("digits") else 256)
    if args.sound and noise.name != "gaussian":
        raise CliError(f"--sound supports Gaussian noise only, got {noise!r}")
    smooth = Smooth(model, meta["num_classes"], noise, device=args.device, autocast=autocast,
                    cuda_graph=args.cuda_graph, sound=args.sound, levels=levels)
    radii = _parse_radii(args.radii)
    mode = _mode(args, radii)
    settings = {"command": "certify", "mode": mode, "model": str(args.model), **model_settings(args, meta),
                "dataset": dataset,
                "split": args.split, **noise_settings, "n0": args.n0, "n": args.n, "alpha": args.alpha,
                "seed": args.seed, "autocast": args.autocast, "cuda_graph": args.cuda_graph, "device_type": torch.device(args.device).type,
                "top_k": args.top_k, "radii": radii, "confidence_measure": args.confidence_measure,
                **({"sound": True, "levels": levels} if args.sound else {})}
    columns, certify_one = _mode_handlers(mode, args, smooth, radii)
    indices = selected_indices(len(data), args.skip, args.max)
    out = args.out if world == 1 else part_path(args.out, rank, world)
    mine = indices[rank::world]
    with LogWriter(out, columns, settings) as log:
        todo = [i for i in mine if i not in log.done]
        if hasattr(certify_one, "many"):  # --sequential / --adaptive: many points per forward batch
            with tqdm(desc=f"certify[{rank}/{world}]" if world > 1 else "certify", disable=args.quiet,
                      initial=len(mine) - len(todo), total=len(mine)) as bar:
                for _, row in certify_one.many(data, todo, args.seed):
                    log.write(row)
                    bar.update()
            todo = []
        for i in tqdm(todo, desc=f"certify[{rank}/{world}]" if world > 1 else "certify", disable=args.quiet,
                      initial=len(mine) - len(todo), total=len(mine)):
            x, label = data.x[i], int(data.y[i])
            t0 = time.time()
            row = certify_one(x, label, derive_seed(args.seed, i))
            row.update(idx=i, label=label, time=format_time(time.time() - t0))
            log.write(row)
    if world > 1:
        finish_distributed(args.out, rank, world, columns, settings)
        if rank != 0:
            return 0
    print(f"wrote {args.out}")
    return 0


STANDARD_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time", "p_lower", "n_used",
                    "radius_l0", "radius_l1", "radius_l2", "radius_linf", "count_top"]


def _parse_radii(text):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"--radii must be comma-separated numbers, got {text!r}") from None
    if not vals or any(not (v >= 0) or v == float("inf") for v in vals):
        raise CliError(f"--radii must be finite numbers >= 0, got {text!r}")
    return vals


def _mode(args, radii) -> str:
    chosen = [m for m, on in (("topk", args.top_k is not None), ("confidence", args.confidence_measure is not None),
                              ("sequential", args.sequential), ("adaptive", args.adaptive)) if on]
    if len(chosen) > 1:
        raise CliError(f"choose one of --top-k, --confidence-measure, --sequential, --adaptive (got {chosen})")
    mode = chosen[0] if chosen else "standard"
    if mode == "sequential" and not radii:
        raise CliError("--sequential needs --radii")
    if mode == "topk" and args.top_k < 1:
        raise CliError("--top-k must be >= 1")
    if mode == "confidence" and args.confidence_measure not in ("score", "margin"):
        raise CliError("--confidence-measure must be score or margin")
    return mode


def _radius_tag(r: float) -> str:
    return f"{r:g}"


def _mode_handlers(mode, args, smooth, radii):
    """(log columns, function (x, label, seed) -> row dict without idx/label/time) for one mode."""
    from fastcert.io.logs import floor_str
    from fastcert.smoothing.smooth import ABSTAIN

    def standard_fields(cert, label):
        pred = cert.prediction
        return {"predict": pred, "radius": floor_str(cert.radius), "correct": int(pred == label),
                "p_lower": floor_str(cert.p_lower, 8), "n_used": cert.n_used,
                **{f"radius_{k}": floor_str(cert.radii[k]) for k in ("l0", "l1", "l2", "linf")},
                "count_top": int(cert.counts[pred]) if pred != ABSTAIN else int(cert.counts.max())}

    if mode == "standard":
        def one(x, label, seed):
            return standard_fields(smooth.certify(x, args.n0, args.n, args.alpha, args.batch, seed=seed), label)
        return STANDARD_COLUMNS, one
    if mode in ("sequential", "adaptive"):
        tags = [f"certified_{_radius_tag(r)}" for r in (radii or [])] if mode == "sequential" else []

        def fields(cert, label):
            row = standard_fields(cert, label)
            for r, tag in zip(radii or [], tags):
                row[tag] = int(bool(cert.certified and cert.certified.get(float(r))) and cert.prediction == label)
            return row

        def one(x, label, seed):
            cert = smooth.certify(x, args.n0, args.n, args.alpha, args.batch, seed=seed, sequential=True,
                                  max_n=args.n, radii=radii if mode == "sequential" else None,
                                  mode="radii" if mode == "sequential" else "adaptive")
            return fields(cert, label)

        def many(data, todo, base_seed):
            """(idx, row) as each point finishes; the points share forward batches (each row is identical
            to certifying that point alone; time = its share of the batches' wall time)."""
            from fastcert.io.logs import format_time
            from fastcert.smoothing.sequential import iter_certify_sequential

            certs = iter_certify_sequential(smooth, (data.x[i] for i in todo), (derive_seed(base_seed, i) for i in todo),
                                            args.n0, args.alpha, args.batch, max_n=args.n,
                                            radii=radii if mode == "sequential" else None,
                                            mode="radii" if mode == "sequential" else "adaptive")
            for pos, cert in certs:
                i = todo[pos]
                row = fields(cert, int(data.y[i]))
                row.update(idx=i, label=int(data.y[i]), time=format_time(cert.extra["seconds"]))
                yield i, row
        one.many = many
        return STANDARD_COLUMNS + tags, one
    if mode == "topk":
        cols = ["idx", "label", "predict", "radius", "correct", "time", "p_lower", "n_used", "k"]

        def one(x, label, seed):
            cert = smooth.certify_topk(x, args.top_k, args.n0, args.n, args.alpha, args.batch, seed=seed)
            pred = cert.prediction
            class_radii = cert.extra.get("class_radii", {}) if pred != ABSTAIN else {}
            r = float(class_radii.get(label, 0.0))
            return {"predict": ",".join(map(str, pred)) if pred != ABSTAIN else -1, "radius": floor_str(r),
                    "correct": int(label in class_radii and r > 0), "p_lower": floor_str(cert.p_lower, 8),
                    "n_used": cert.n_used, "k": args.top_k}
        return cols, one
    if mode == "confidence":
        from fastcert.smoothing.confidence import DEFAULT_RADII, certify_confidence, confidence_values, kumar_log_columns

        rr = radii if radii else list(DEFAULT_RADII)
        cols = kumar_log_columns(rr) + ["n_used"]

        def one(x, label, seed):
            cert = certify_confidence(smooth, x, args.n0, args.n, args.alpha, args.batch, seed=seed, radii=rr,
                                      measure=args.confidence_measure)
            return {"predict": cert.prediction, **confidence_values(cert), "correct": int(cert.prediction == label),
                    "n_used": cert.n_used}
        return cols, one
    raise CliError(f"unknown mode {mode}")
