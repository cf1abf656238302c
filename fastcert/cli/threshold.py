"""``threshold --keep A --K K``: exact thresholds rho_r^{-1}(p) of stratified discrete (l0) smoothing (Lee et al. 2019).

Writes a TSV ``radius<TAB>threshold`` (header included) for r = 0..--max-radius; each value is the
exact rational threshold rounded UP to 20 decimals, so ``p_lower > value`` certifies radius r.
``--exact`` adds a ``fraction`` column with the exact value ``numerator/denominator``. Without
``--out`` the table goes to stdout.
"""
from __future__ import annotations

import sys

from fastcert.cli.common import CliError, Deprecated
from fastcert.smoothing import stratified
from fastcert.validate import check_int


def add_arguments(p) -> None:
    p.add_argument("--keep", default=None,
                   help="keep probability in (0, 1), read exactly: a decimal (0.8) or a fraction (4/5) (required)")
    p.add_argument("--alpha", dest="keep", action=Deprecated, new="--keep",
                   help="deprecated spelling of --keep (removed in the next release)")
    p.add_argument("--K", type=int, required=True,
                   help="number of other levels: inputs on {0, 1/K, ..., 1} (1 = binary, 255 = 8-bit)")
    p.add_argument("--max-radius", type=int, default=100, help="largest l0 radius in the table (default 100)")
    p.add_argument("--p", default="0.5", help="target probability in (0, 1) (default 0.5, certification)")
    p.add_argument("--exact", action="store_true", help="add a column with the exact fraction")
    p.add_argument("--out", default=None, help="write the table to this TSV (default: stdout)")


def _open_unit(text, flag):
    """An exact number in (0, 1) from a decimal or fraction string."""
    v = stratified.parse_fraction(text, flag)
    if not 0 < v < 1:
        raise CliError(f"{flag} must be in (0, 1), got {text!r}")
    return v


def run(args) -> int:
    flag = getattr(args, "_keep_flag", None) or "--keep"
    if args.keep is None:
        raise CliError("--keep is required (the keep probability of the discrete noise)")
    keep = _open_unit(args.keep, flag)
    K = check_int("--K", args.K, 1)
    R = check_int("--max-radius", args.max_radius, 0, stratified.MAX_RADIUS)
    p = _open_unit(args.p, "--p")
    if args.out:
        stratified.write_threshold_file(args.out, keep, K, R, p, exact=args.exact)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(stratified.format_threshold_table(keep, K, R, p, exact=args.exact))
    return 0
