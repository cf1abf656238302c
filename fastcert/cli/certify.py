"""`certify`: certify test points of a dataset with a smoothed classifier; writes a resumable
Cohen-style log (``idx label predict radius correct time`` + extra columns)."""
from __future__ import annotations

import time


from fastcert.cli.common import CliError, add_common, selected_indices
from fastcert.rng import derive_seed


def add_arguments(p):
    add_common(p)
    p.add_argument("--method", default="smoothing", help="smoothing (default) | ibp | crown-ibp")
    p.add_argument("--noise", default="gaussian", help="gaussian | laplace | uniform | discrete")
    p.add_argument("--sigma", type=float, default=None,
                   help="noise scale: Gaussian sigma, Laplace scale, uniform half-width (default: the model's)")
    p.add_argument("--alpha-keep", type=float, default=None, help="discrete noise: keep probability")
    p.add_argument("--K", type=int, default=None, help="discrete noise: levels - 1 (inputs on {0,1/K,...,1})")
    # --N0/--N (Cohen et al.'s names) and --max-points also work under torchrun, whose own parser
    # rejects --n and --max as ambiguous prefixes of its options
    p.add_argument("--n0", "--N0", dest="n0", type=int, default=100, help="selection samples")
    p.add_argument("--n", "--N", dest="n", type=int, default=100_000, help="estimation samples")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument("--skip", type=int, default=1, help="certify every skip-th test point")
    p.add_argument("--max", "--max-points", dest="max", type=int, default=-1,
                   help="stop after this many points (-1: all)")
    p.add_argument("--split", default="test", help="train | test")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--autocast", default=None,
                   help="float16 | bfloat16: run the base model under torch.autocast (CUDA or CPU); this changes "
                        "the base classifier and is recorded in the log's settings")
    p.add_argument("--cuda-graph", action="store_true",
                   help="CUDA only: capture one sample-forward-count batch as a CUDA graph and replay it "
                        "(small models; checked once against the eager path)")
    p.add_argument("--top-k", type=int, default=None, help="certify the top-k prediction set (Jia et al. 2020)")
    p.add_argument("--confidence-measure", default=None,
                   help="score | margin: certify the expected confidence (Kumar et al. 2020) at --radii")
    p.add_argument("--radii", default=None, help="comma-separated target radii (sequential / confidence)")
    p.add_argument("--sequential", action="store_true",
                   help="decide each --radii target with an anytime-valid sequential test (at most --n samples)")
    p.add_argument("--adaptive", action="store_true",
                   help="input-adaptive sample size for the usual radius (at most --n samples)")
    p.add_argument("--eps", default="0.1", help="ibp/crown-ibp: comma-separated linf budgets")
    p.set_defaults(batch=1000)


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
        from fastcert.cli import certify_ibp

        return certify_ibp.run(args)
    if args.method != "smoothing":
        raise CliError(f"--method must be smoothing, ibp or crown-ibp, got {args.method!r}")
    import torch
    from tqdm.auto import tqdm

    from fastcert.data import load_dataset
    from fastcert.io.logs import LogWriter, format_time
    from fastcert.models.checkpoint import load_checkpoint
    from fastcert.smoothing.noise import make_noise
    from fastcert.smoothing.smooth import Smooth

    model, meta = load_checkpoint(args.model, device=args.device)
    sigma = args.sigma if args.sigma is not None else meta.get("config", {}).get("sigma")
    alpha_keep = args.alpha_keep if args.alpha_keep is not None else meta.get("config", {}).get("alpha_keep")
    K = args.K if args.K is not None else meta.get("config", {}).get("K")
    noise = make_noise(args.noise, sigma=sigma, alpha_keep=alpha_keep, K=K)
    autocast = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.autocast, "bad")
    if autocast == "bad":
        raise CliError("--autocast must be float16 or bfloat16")
    if args.cuda_graph and torch.device(args.device).type != "cuda":
        raise CliError("--cuda-graph needs --device cuda")
    smooth = Smooth(model, meta["num_classes"], noise, device=args.device, autocast=autocast,
                    cuda_graph=args.cuda_graph)
    data = load_dataset(args.dataset, args.split)
    if tuple(data.input_shape) != tuple(meta["input_shape"]):
        raise CliError(f"--dataset {args.dataset} has inputs {data.input_shape} but the model expects "
                       f"{tuple(meta['input_shape'])}")
    radii = _parse_radii(args.radii)
    mode = _mode(args, radii)
    settings = {"command": "certify", "mode": mode, "model": str(args.model), "dataset": args.dataset,
                "split": args.split, "noise": repr(noise), "n0": args.n0, "n": args.n, "alpha": args.alpha,
                "seed": args.seed, "autocast": args.autocast, "cuda_graph": args.cuda_graph, "device_type": torch.device(args.device).type,
                "top_k": args.top_k, "radii": radii, "confidence_measure": args.confidence_measure}
    columns, certify_one = _mode_handlers(mode, args, smooth, radii)
    indices = selected_indices(len(data), args.skip, args.max)
    rank, world = _dist_rank_world()
    out = args.out if world == 1 else part_path(args.out, rank, world)
    mine = indices[rank::world]
    with LogWriter(out, columns, settings) as log:
        todo = [i for i in mine if i not in log.done]
        for i in tqdm(todo, desc=f"certify[{rank}/{world}]" if world > 1 else "certify", disable=args.quiet,
                      initial=len(mine) - len(todo), total=len(mine)):
            x, label = data.x[i], int(data.y[i])
            t0 = time.time()
            row = certify_one(x, label, derive_seed(args.seed, i))
            row.update(idx=i, label=label, time=format_time(time.time() - t0))
            log.write(row)
    if world > 1:
        _finish_distributed(args.out, rank, world, columns, settings)
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

        def one(x, label, seed):
            cert = smooth.certify(x, args.n0, args.n, args.alpha, args.batch, seed=seed, sequential=True,
                                  max_n=args.n, radii=radii if mode == "sequential" else None,
                                  mode="radii" if mode == "sequential" else "adaptive")
            row = standard_fields(cert, label)
            for r, tag in zip(radii or [], tags):
                row[tag] = int(bool(cert.certified and cert.certified.get(float(r))) and cert.prediction == label)
            return row
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


# ---------------------------------------------------------------- distributed certification
def _dist_rank_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (RANK / WORLD_SIZE), else (0, 1)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise CliError(f"bad RANK={rank} / WORLD_SIZE={world}")
    return rank, world


def part_path(out, rank: int, world: int) -> str:
    return f"{out}.part{rank}of{world}"


def _finish_distributed(out, rank, world, columns, settings):
    """All ranks wait (gloo barrier when torch.distributed can initialize); rank 0 merges the parts."""
    import torch.distributed as dist

    started = False
    if dist.is_available() and not dist.is_initialized():
        import os

        if "MASTER_ADDR" in os.environ:
            dist.init_process_group("gloo")
            started = True
    if not (dist.is_available() and dist.is_initialized()):
        # no process group (ranks started by hand): nobody knows when the others finish
        print(f"rank {rank}: wrote {part_path(out, rank, world)}; merge the parts with "
              f"`analyze {out} --merge {world}` when all ranks are done")
        return
    dist.barrier()
    if rank == 0:
        merge_parts(out, world, columns, settings)
    if started:
        dist.barrier()
        dist.destroy_process_group()


def merge_parts(out, world: int, columns=None, settings=None) -> int:
    """Merge ``out.part<r>of<world>`` logs into ``out`` (rows sorted by idx, each idx once), keeping rows
    already in ``out``. Returns the number of rows written."""
    import json
    from pathlib import Path

    from fastcert.io.logs import LogWriter

    parts = [Path(part_path(out, r, world)) for r in range(world)]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise FileNotFoundError(f"missing log parts: {', '.join(missing)}")
    header, rows = None, {}
    for p in parts:
        lines = p.read_text().splitlines()
        if not lines:
            continue
        h = lines[0].split("\t")
        if header is None:
            header = h
        elif h != header:
            raise ValueError(f"{p}: columns differ from the other parts")
        for ln in lines[1:]:
            if ln.strip():
                rows.setdefault(int(ln.split("\t", 1)[0]), ln)
    if header is None:
        raise ValueError("no rows in the log parts")
    if settings is None:
        meta = Path(str(parts[0]) + ".json")
        settings = json.loads(meta.read_text()) if meta.exists() else None
    written = 0
    with LogWriter(out, header, settings) as log:
        for idx in sorted(rows):
            if idx not in log.done:
                log.f.write(rows[idx] + "\n")
                log.done.add(idx)
                written += 1
        log.f.flush()
    return written
