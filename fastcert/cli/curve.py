"""`curve`: robustness curves (minimal adversarial perturbations per norm) of one or several models.

With ``--out`` the run is resumable: the points are computed in batches of ``--batch`` (the attack of
the batch starting at point s is seeded with ``--seed`` + s, as :func:`fastcert.curve` does), and each
finished batch is appended, flushed and fsynced, to ``<out>.rows.tsv`` (one row per point: its
distance and attack per norm) with the run's settings in ``<out>.rows.tsv.json`` (the
:class:`fastcert.io.logs.LogWriter` machinery). A rerun of the same command keeps those rows, computes
only the missing batches and writes the same ``--out`` as an uninterrupted run; a rerun with other
settings is refused. Both side files are removed once ``--out`` is written.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from fastcert.cli.common import CliError, Deprecated, add_common, add_selection, add_split, selected_indices

# options that do not change the rows (or enter the settings in another form); every other option does,
# and is recorded in the settings under its argparse name, so that an option added later is covered too
_NOT_SETTINGS = {"out", "plot", "quiet", "load", "models", "model", "weights", "certified", "device", "max", "norms"}
SEARCHES = ("auto", "attack", "exact", "linear")
# settings whose key is not the option's name
_OPTION = {"model_sha256": "--model / --weights (the model's contents)", "device_type": "--device"}


def _option(key: str) -> str:
    return _OPTION.get(key, "--" + key.replace("_", "-"))


def add_arguments(p):
    add_common(p, out="write the curve to this file (.npz, .json or .csv; {name} = the checkpoint's name with "
                      "--models); resumable")
    p.add_argument("--models", nargs="+", default=None, metavar="SPEC",
                   help="several models (any --model SPEC but a factory with --weights): one figure comparing them")
    p.add_argument("--norms", default="l1,l2,linf", help="comma-separated subset of l1,l2,linf")
    p.add_argument("--search", default="auto", choices=SEARCHES,
                   help="how each point's minimal perturbation is found: attack (FAB-style, an upper bound), exact "
                        "(MIP, small ReLU networks), linear (affine models), auto (exact where possible) "
                        "(default auto)")
    p.add_argument("--method", dest="search", action=Deprecated, new="--search", choices=SEARCHES,
                   help="deprecated spelling of --search (removed in the next release)")
    p.add_argument("--restarts", type=int, default=2, help="random restarts of the attack")
    p.add_argument("--steps", type=int, default=100, help="attack steps per run")
    p.add_argument("--targets", type=int, default=3,
                   help="targeted attack runs per point, towards the runner-up classes (FAB^T)")
    p.add_argument("--patience", type=int, default=5,
                   help="a point leaves an attack run after this many steps without shortening its distance "
                        "by more than 0.01%% (0: every point runs every step)")
    p.add_argument("--polish", type=int, default=100,
                   help="steps along the decision boundary from each point's best adversarial point (0: none)")
    p.set_defaults(batch=128)
    add_selection(p)
    add_split(p)
    p.add_argument("--certified", default=None, choices=("ibp",),
                   help="add IBP-certified lower bounds (a band in the plot)")
    p.add_argument("--load", nargs="+", default=None, help="re-plot curve file(s) written by --out (no computing)")
    p.add_argument("--plot", default=None, help="write the figure (one panel per norm) to this path")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.epilog = ("Resume: with --out, every finished batch of --batch points is saved to OUT.rows.tsv (settings in "
                "OUT.rows.tsv.json); rerunning the same command after an interruption computes only the missing "
                "batches and writes the same OUT as an uninterrupted run. A rerun with other settings (any option "
                "but --out, --plot, --quiet and --certified, or another checkpoint) is refused. The side files are "
                "deleted once OUT is written.")


def rows_path(out) -> Path:
    """The side file holding the finished points of an unfinished ``curve --out`` run."""
    return Path(str(out) + ".rows.tsv")


def _sha256(path, h=None) -> str:
    h = hashlib.sha256() if h is None else h
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_sha256(spec, weights) -> str:
    """The contents of a --model file; for a 'package.module:factory' spec, the spec and its --weights."""
    if Path(str(spec)).is_file():
        return _sha256(spec)
    h = hashlib.sha256(str(spec).encode())
    return _sha256(weights, h) if weights is not None else h.hexdigest()


def _read_rows(rows: Path, norms, n: int):
    import numpy as np

    lines = rows.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    dist = {nm: np.full(n, np.nan) for nm in norms}
    att = {nm: np.array([""] * n, dtype=object) for nm in norms}
    seen = np.zeros(n, dtype=bool)
    for ln in lines[1:]:
        if not ln.strip():
            continue
        row = dict(zip(header, ln.split("\t")))
        i = int(row["idx"])
        if not 0 <= i < n or seen[i]:
            raise CliError(f"--out: {rows} holds a bad or repeated point index {i}; delete it to start over")
        seen[i] = True
        for nm in norms:
            dist[nm][i] = float(row[f"d_{nm}"])
            att[nm][i] = row[f"attack_{nm}"]
    if not seen.all():
        raise CliError(f"--out: {rows} misses {int((~seen).sum())} points after the run")  # pragma: no cover
    return dist, att


def compute_curve(model, x, y, norms, args, label: str, out=None, settings=None):
    """The curve of ``model`` on (x, y), batch by batch; with ``out`` resumable through the rows file."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from fastcert.robustness.curves import RobustnessCurve, curve, ibp_certified_band
    from fastcert.io.logs import LogWriter, SettingsMismatch

    n, batch = x.shape[0], args.batch
    columns = ["idx"] + [c for nm in norms for c in (f"d_{nm}", f"attack_{nm}")]
    log = None
    if out is not None:
        rows = rows_path(out)
        try:
            log = LogWriter(rows, columns, settings)
        except SettingsMismatch as e:  # name the options that differ
            what = "; ".join(f"{_option(k)}: was {a!r}, now {b!r}" for k, a, b in e.diff)
            meta = Path(str(rows) + ".json")
            raise CliError(f"--out: the unfinished run in {rows} used other settings ({what}); rerun it with the "
                           f"same options, or delete {rows} and {meta} to start over") from None
    try:
        dist = {nm: np.zeros(n) for nm in norms}
        att = {nm: np.array([""] * n, dtype=object) for nm in norms}
        done = set(log.done) if log is not None else set()
        bar = tqdm(total=n, desc=f"curve {label}", unit="pt", disable=args.quiet,
                   initial=sum(1 for i in done if i < n))
        for s in range(0, n, batch):
            e = min(n, s + batch)
            if all(i in done for i in range(s, e)):
                continue
            # one batch exactly as curve() computes it on all points: same composition, seed + s
            c = curve(model, x[s:e], y[s:e], norms, method=args.search, restarts=args.restarts, steps=args.steps,
                      targets=args.targets, patience=args.patience or None, polish=args.polish,
                      batch_size=batch, seed=args.seed + s, label=label, device=args.device)
            for nm in norms:
                dist[nm][s:e] = c.distances[nm]
                att[nm][s:e] = c.attacks[nm]
            if log is not None:
                log.write_many({"idx": i, **{k: v for nm in norms for k, v in
                                            ((f"d_{nm}", repr(float(dist[nm][i]))), (f"attack_{nm}", att[nm][i]))}}
                               for i in range(s, e))
            bar.update(sum(1 for i in range(s, e) if i not in done))
        bar.close()
    finally:
        if log is not None:
            log.close()
    if out is not None:
        dist, att = _read_rows(rows_path(out), norms, n)
    cert = {}
    if args.certified == "ibp":  # as curve(certified="ibp"): needs every point's linf distance first
        cert = ibp_certified_band(model.eval(), x.float().to(args.device), torch.as_tensor(y).long().to(args.device),
                                  dist, norms, batch)
    return RobustnessCurve(tuple(norms), dist, att, cert, label)


def run(args) -> int:
    from fastcert.robustness.curves import load_curve
    from fastcert.robustness.distances import parse_norms

    norms = parse_norms(args.norms)
    curves = []
    if args.load:
        curves = [load_curve(path) for path in args.load]
    else:
        import torch

        from fastcert.cli.common import check_input_shape, load_model, model_label, resolve_dataset
        from fastcert.data import load_dataset

        paths = list(args.models or []) + ([args.model] if args.model else [])
        if not paths:
            raise CliError("--model (or --models, or --load) is required")
        if args.weights is not None and len(paths) > 1:
            raise CliError("--weights goes with a single --model ('package.module:factory'), not with --models")
        if args.batch < 1:
            raise CliError("--batch must be >= 1")
        if args.out and len(paths) > 1 and "{name}" not in args.out:
            raise CliError("--out needs a {name} placeholder when several models are given")
        if args.dataset is not None:  # the dataset first: the models are fitted to it
            ds = load_dataset(args.dataset, args.split)
            loaded = [load_model(path, args.weights, args.device, ds, args.dataset) for path in paths]
        else:
            loaded = [load_model(path, args.weights, args.device) for path in paths]
            datasets = {resolve_dataset(args, meta) for _, meta in loaded}
            if len(datasets) > 1:
                raise CliError(f"--dataset is required: the models were trained on different datasets "
                               f"({', '.join(sorted(datasets))})")
            args.dataset = datasets.pop()
            ds = load_dataset(args.dataset, args.split)
        chosen = selected_indices(len(ds), args.skip, args.max)
        n = len(chosen)
        xs, ys = ds.x[chosen], ds.y[chosen]
        torch.manual_seed(args.seed)
        for path, (model, meta) in zip(paths, loaded):
            check_input_shape(ds, meta, args.dataset, path)
            out = args.out.replace("{name}", model_label(path)) if args.out else None
            settings = None
            if out:
                settings = {"command": "curve", "model": str(path), "model_sha256": _model_sha256(path, args.weights),
                            "max": n,
                            "norms": list(norms), "device_type": torch.device(args.device).type,
                            **{k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS and not k.startswith("_")}}
            c = compute_curve(model, xs, ys, norms, args, model_label(path), out, settings)
            if out:
                c.save(out)
                rows = rows_path(out)
                rows.unlink(missing_ok=True)  # rows first: settings without rows are simply rewritten
                Path(str(rows) + ".json").unlink(missing_ok=True)
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
