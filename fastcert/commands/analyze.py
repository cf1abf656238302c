"""`analyze`: certified accuracy at radii and average certified radius from logs (ours, Cohen et al.'s,
Kumar et al.'s); plots with --plot / --compare."""
from __future__ import annotations

from ..cli import CliError, add_common


def _floats(text, name):
    try:
        return [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise CliError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None


def add_arguments(p):
    add_common(p, dataset=False, model=False)
    p.add_argument("logs", nargs="*", help="log files")
    p.add_argument("--radii", default="0,0.25,0.5,0.75,1.0", help="comma-separated radii")
    p.add_argument("--column", default="radius", help="radius column (radius, radius_l1, radius_l2, ...)")
    p.add_argument("--labels", default=None, help="comma-separated curve labels")
    p.add_argument("--plot", default=None, help="write the certified-accuracy curve to this PNG")
    p.add_argument("--compare", default=None, metavar="PREFIX",
                   help="one figure per norm (PREFIX_l1.png, ...) comparing the logs' radius_<norm> columns")


def run(args) -> int:
    from ..analyze import analyze, plot_compare

    if not args.logs:
        raise CliError("give at least one log file")
    radii = _floats(args.radii, "--radii")
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.logs):
        raise CliError("--labels must have one label per log")
    print(analyze(args.logs, radii, column=args.column, plot=args.plot, labels=labels))
    if args.plot:
        print(f"wrote {args.plot}")
    if args.compare:
        for path in plot_compare(args.logs, args.compare, labels=labels):
            print(f"wrote {path}")
    return 0
