"""`curve`: robustness curves (minimal adversarial perturbations per norm) of one or several models."""
from __future__ import annotations

from pathlib import Path

from ..cli import CliError, add_common


def add_arguments(p):
    add_common(p)
    p.add_argument("--models", nargs="+", default=None, help="several checkpoints: one figure comparing them")
    p.add_argument("--norms", default="l1,l2,linf", help="comma-separated subset of l1,l2,linf")
    p.add_argument("--method", default="auto", help="auto | attack | exact | linear")
    p.add_argument("--restarts", type=int, default=2, help="random restarts of the attack")
    p.add_argument("--steps", type=int, default=100, help="attack steps per run")
    p.add_argument("--max", type=int, default=1000, help="use the first N test points")
    p.add_argument("--split", default="test", help="dataset split (test or train)")
    p.add_argument("--certified", default=None, help="'ibp': add IBP-certified lower bounds (band in the plot)")
    p.add_argument("--load", nargs="+", default=None, help="re-plot curve file(s) written by --out (no computing)")
    p.add_argument("--plot", default=None, help="write the figure (one panel per norm) to this path")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..curves import _parse_norms, curve, load_curve

    norms = _parse_norms(args.norms)
    curves = []
    if args.load:
        curves = [load_curve(path) for path in args.load]
    else:
        import torch

        from ..data import load_dataset
        from ..models import load_checkpoint

        paths = list(args.models or []) + ([args.model] if args.model else [])
        if not paths:
            raise CliError("--model (or --models, or --load) is required")
        if args.max < 1:
            raise CliError("--max must be >= 1")
        if args.batch < 1:
            raise CliError("--batch must be >= 1")
        if args.split not in ("test", "train"):
            raise CliError("--split must be test or train")
        if args.certified not in (None, "ibp"):
            raise CliError("--certified must be 'ibp' (or omitted)")
        if args.out and len(paths) > 1 and "{name}" not in args.out:
            raise CliError("--out needs a {name} placeholder when several models are given")
        ds = load_dataset(args.dataset, args.split)
        n = min(args.max, len(ds))
        torch.manual_seed(args.seed)
        for path in paths:
            model, meta = load_checkpoint(path, device=args.device)
            if tuple(meta["input_shape"]) != tuple(ds.input_shape):
                raise CliError(f"--model {path}: input shape {meta['input_shape']} does not match the dataset {ds.input_shape}")
            c = curve(model, ds.x[:n], ds.y[:n], norms, method=args.method, restarts=args.restarts, steps=args.steps,
                      batch_size=args.batch, seed=args.seed, certified=args.certified, label=Path(path).stem,
                      progress=not args.quiet, device=args.device)
            if args.out:
                out = args.out.replace("{name}", Path(path).stem)
                c.save(out)
            curves.append(c)
    for c in curves:
        parts = []
        for nm in c.norms:
            d = c.distances[nm]
            fin = d[(d > 0) & (d < float("inf"))]
            med = f"{float(sorted(fin)[len(fin) // 2]):.4g}" if len(fin) else "-"
            parts.append(f"{nm}: median d {med}, failed {int((d == float('inf')).sum())}")
        print(f"{c.label}: {len(c)} points, clean accuracy {c.accuracy():.4f}; " + "; ".join(parts))
    if args.plot:
        shown = [n for n in norms if all(n in c.distances for c in curves)]
        if not shown:
            raise CliError("--norms: none of the requested norms is in every curve")
        first = curves[0]
        first.norms = tuple(shown)
        first.plot(args.plot, others=curves[1:])
        print(f"figure written to {args.plot}")
    return 0
