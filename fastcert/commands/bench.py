"""`bench`: a short benchmark table, each compiled kernel against the reference path it replaces."""
from __future__ import annotations

from ..cli import add_common


def add_arguments(p):
    add_common(p, dataset=False, model=False)
    p.add_argument("--full", action="store_true", help="longer, more stable measurements")


def run(args) -> int:
    import torch

    from ..bench import run_table

    torch.manual_seed(args.seed)
    if args.device != "cpu":
        print("note: the bench table measures the CPU paths; GPU figures are in benchmarks/RESULTS.md")
    rows = run_table(quick=not args.full)
    if args.out:
        import json

        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.out}")
    return 0 if rows else 1
