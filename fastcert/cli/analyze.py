"""`analyze`: certified accuracy at radii and average certified radius from logs (ours, Cohen et al.'s,
Kumar et al.'s); plots with --plot / --compare."""
from __future__ import annotations

from fastcert.cli.common import CliError


def _floats(text, name):
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise CliError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None


DEFAULT_RADII = "0,0.25,0.5,0.75,1.0"
DEFAULT_L0_RADII = "0,1,2,3,4,5"


def add_arguments(p):
    p.add_argument("logs", nargs="*", help="log files")
    p.add_argument("--radii", default=None,
                   help=f"comma-separated radii (default {DEFAULT_RADII}; with --thresholds, l0 radii: integers, "
                        f"default {DEFAULT_L0_RADII})")
    p.add_argument("--column", default="radius", help="radius column (radius, radius_l1, radius_l2, ...)")
    p.add_argument("--labels", default=None, help="comma-separated curve labels")
    p.add_argument("--plot", default=None, help="write the certified-accuracy curve to this PNG")
    p.add_argument("--compare", default=None, metavar="PREFIX",
                   help="one figure per norm (PREFIX_l1.png, ...) comparing the logs' radius_<norm> columns")
    p.add_argument("--thresholds", default=None, metavar="FILE",
                   help="l0 thresholds file (ours or Lee et al.'s): report ACC@r of the logs' p_lower at --radii")
    p.add_argument("--topk-counts", default=None, metavar="FILE",
                   help="per-class counts file (Jia et al.): certified top-k accuracy at --radii")
    p.add_argument("--k", type=int, default=1, help="with --topk-counts: k")
    p.add_argument("--sigma", type=float, default=0.25, help="with --topk-counts: Gaussian sigma")
    p.add_argument("--alpha", type=float, default=0.001, help="with --topk-counts: failure probability")
    p.add_argument("--confidence-measure", default=None, choices=("score", "margin"),
                   help="confidence logs: the measure they certify (default: the one recorded in the log's "
                        "settings; required for the original authors' logs unless --confidence-threshold is given)")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="confidence logs: certified accuracy at this bound (default 0.5 for score, 0 for margin)")
    p.add_argument("--tradeoff", default=None, metavar="PNG",
                   help="plot clean accuracy against average certified radius, one point per log (e.g. one run "
                        "per kappa)")
    p.add_argument("--merge", type=int, default=None, metavar="WORLD",
                   help="first merge LOG.part<r>of<WORLD> (a distributed certify run) into LOG")


def run(args) -> int:
    from fastcert.analysis.tables import analyze, forward_passes, plot_compare

    radii = _floats(args.radii if args.radii is not None else
                    DEFAULT_L0_RADII if args.thresholds else DEFAULT_RADII, "--radii")
    if args.topk_counts:
        from fastcert.io.readers import read_counts_file
        from fastcert.smoothing.topk import topk_certified_accuracy

        counts, labels = read_counts_file(args.topk_counts)
        acc = topk_certified_accuracy(counts, labels, args.k, args.sigma, args.alpha, radii)
        print(f"{args.topk_counts}: certified top-{args.k} accuracy (sigma={args.sigma}, alpha={args.alpha})")
        print("  ".join(f"r={r:g}: {a:.4f}" for r, a in zip(radii, acc)))
        if not args.logs:
            return 0
    if not args.logs:
        raise CliError("give at least one log file")
    if args.merge is not None:
        from fastcert.cli.distributed import merge_parts

        if args.merge < 1:
            raise CliError("--merge must be >= 1")
        for log in args.logs:
            n = merge_parts(log, args.merge)
            print(f"merged {n} rows into {log}")
    if args.thresholds:
        from fastcert.io.readers import read_threshold_file
        from fastcert.smoothing.stratified import acc_at_r

        table = read_threshold_file(args.thresholds)
        if not radii or not all(float(r).is_integer() and r >= 0 for r in radii):
            raise CliError(f"--radii: l0 radii (with --thresholds) must be integers >= 0, got {args.radii!r}")
        rs = [int(r) for r in radii]
        for log in args.logs:
            acc = acc_at_r(log, table, radii=rs)
            print(f"{log}: ACC@r (l0, thresholds {args.thresholds})")
            print("  ".join(f"r={r}: {acc[r]:.4f}" for r in rs))
        return 0
    if args.tradeoff:
        from fastcert.analysis.tables import plot_tradeoff

        print(plot_tradeoff(args.logs, args.tradeoff, labels=args.labels.split(",") if args.labels else None,
                            column=args.column))
        print(f"wrote {args.tradeoff}")
    conf = _confidence_report(args)
    if conf:
        return 0
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.logs):
        raise CliError("--labels must have one label per log")
    print(analyze(args.logs, radii, column=args.column, plot=args.plot, labels=labels))
    passes = forward_passes(args.logs)
    if passes:
        print(passes)
    if args.plot:
        print(f"wrote {args.plot}")
    if args.compare:
        for path in plot_compare(args.logs, args.compare, labels=labels):
            print(f"wrote {path}")
    return 0


def _confidence_report(args) -> bool:
    """Kumar et al.-style logs: certified accuracy at a confidence threshold, both bounds."""
    from fastcert.analysis.tables import is_confidence_log
    from fastcert.io.readers import read_log

    logs = [p for p in args.logs if is_confidence_log(read_log(p))]
    if not logs:
        return False
    if len(logs) != len(args.logs):
        raise CliError("analyze confidence logs separately from radius logs")
    from fastcert.io.readers import read_kumar_log
    from fastcert.smoothing.confidence import certified_accuracy_at_confidence

    for p in logs:
        lg = read_kumar_log(p)
        thr = args.confidence_threshold
        if thr is None:
            measure = args.confidence_measure or _recorded_measure(p)
            if measure is None:
                raise CliError(f"{p}: give --confidence-measure score|margin (or --confidence-threshold): the log "
                               "does not record which measure it certifies")
            thr = 0.0 if measure == "margin" else 0.5
        print(f"{p}: certified accuracy at confidence > {thr:g} ({len(lg)} points)")
        print("radius   " + "  ".join(f"{r:6g}" for r in lg.radii))
        for method in ("cdf", "exp"):
            accs = [certified_accuracy_at_confidence(lg, float(r), thr, method=method) for r in lg.radii]
            print(f"{method:<8} " + "  ".join(f"{a:6.3f}" for a in accs))
    if args.plot:
        from fastcert.analysis.plots import plot_confidence

        logs_read = [read_kumar_log(p) for p in logs]
        plot_confidence(logs_read, args.plot, args.labels.split(",") if args.labels else None)
        print(f"wrote {args.plot}")
    return True


def _recorded_measure(path):
    """The confidence measure in the settings certify wrote next to the log (``<log>.json``), or None."""
    import json
    from pathlib import Path

    meta = Path(str(path) + ".json")
    try:
        measure = json.loads(meta.read_text()).get("confidence_measure") if meta.exists() else None
    except (OSError, ValueError, AttributeError):
        return None
    return measure if measure in ("score", "margin") else None
