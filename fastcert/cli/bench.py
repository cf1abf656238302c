"""`bench`: a short benchmark table, each compiled kernel against the reference path it replaces."""
from __future__ import annotations

from fastcert.cli.common import add_common


def add_arguments(p):
    add_common(p, dataset=False, model=False, batch=False, out="also write the rows as JSON to this path")
    p.add_argument("--full", action="store_true", help="longer, more stable measurements")
    p.epilog = ("Rows: noise generation, end-to-end certification, l0 thresholds, IBP, class distances (CPU); "
                "with --device cuda also end-to-end GPU certification (eager and CUDA graph) and IBP Triton.")


def run(args) -> int:
    import torch

    from fastcert.bench.workloads import run_table

    from fastcert.cli.common import CliError

    torch.manual_seed(args.seed)
    gpu = torch.device(args.device).type == "cuda"
    if gpu and not torch.cuda.is_available():
        raise CliError("--device cuda: torch sees no CUDA device")
    rows = run_table(quick=not args.full, gpu=gpu)
    if args.out:
        import json

        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.out}")
    return 0 if rows else 1
