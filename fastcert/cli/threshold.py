"""``threshold``: exact thresholds rho_r^{-1}(p) of stratified discrete (l0) smoothing (Lee et al. 2019).

Writes a TSV ``radius<TAB>threshold`` (header included) for r = 0..--max-radius; each value is the
exact rational threshold rounded UP to 20 decimals, so ``p_lower > value`` certifies radius r.
``--exact`` adds a ``fraction`` column with the exact value ``numerator/denominator``. Without
``--out`` the table goes to stdout.
"""
from __future__ import annotations

import sys

from fastcert.smoothing import stratified
from fastcert.cli.common import add_common


def add_arguments(p) -> None:
    p.add_argument("--alpha", required=True,
                   help="keep probability in (0, 1), read exactly: a decimal (0.8) or a fraction (4/5)")
    p.add_argument("--K", type=int, required=True,
                   help="number of other levels: inputs on {0, 1/K, ..., 1} (1 = binary, 255 = 8-bit)")
    p.add_argument("--max-radius", type=int, default=100, help="largest l0 radius in the table (default 100)")
    p.add_argument("--p", default="0.5", help="target probability in (0, 1) (default 0.5, certification)")
    p.add_argument("--exact", action="store_true", help="add a column with the exact fraction")
    add_common(p, dataset=False, model=False)


def run(args) -> int:
    alpha = stratified._check_open_unit(args.alpha, "--alpha")
    K = stratified._check_K(args.K, "--K")
    R = stratified._check_radius(args.max_radius, "--max-radius")
    p = stratified._check_open_unit(args.p, "--p")
    if args.out:
        stratified.write_threshold_file(args.out, alpha, K, R, p, exact=args.exact)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(stratified.format_threshold_table(alpha, K, R, p, exact=args.exact))
    return 0
