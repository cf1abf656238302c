"""`distances`: inter- and intra-class nearest-neighbour distances of a dataset, per norm."""
from __future__ import annotations

from fastcert.cli.common import CliError, add_common, add_selection, add_split, selected_indices


def add_arguments(p):
    add_common(p, model=False, seed=False, device=False, batch=False,
               out="write the distances per norm to this .npz")
    p.add_argument("--norms", default="l1,l2,linf", help="comma-separated subset of l1,l2,linf")
    add_split(p, "split whose points are measured")
    p.add_argument("--reference", default="train", choices=("train", "test", "self"),
                   help="points searched for neighbours: the train or test split, or the measured points "
                        "themselves (default train)")
    add_selection(p)
    p.add_argument("--max-reference", type=int, default=None, help="use only the first N reference points")
    p.add_argument("--plot", default=None, help="histograms per norm (inter vs intra, half the inter distance)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import numpy as np

    from fastcert.robustness.distances import class_distances, parse_norms
    from fastcert.data import load_dataset
    from fastcert.io.files import save_npz

    norms = parse_norms(args.norms)
    if args.max_reference is not None and args.max_reference < 1:
        raise CliError("--max-reference must be >= 1")
    q = load_dataset(args.dataset, args.split)
    chosen = selected_indices(len(q), args.skip, args.max)
    if len(chosen) < len(q):
        q = q.subset(chosen)
    ref = None
    # the measured points against themselves (each point excluded from its own neighbours)
    same = args.reference == "self" or (args.reference == args.split and not args.max_reference)
    if not same:
        r = load_dataset(args.dataset, args.reference)
        if args.max_reference:
            r = r.subset(range(min(args.max_reference, len(r))))
        ref = (r.x, r.y)
    out = class_distances(q.x, q.y, norms, reference=ref, progress=not args.quiet)
    for n in norms:
        inter, intra = out[n]["inter"], out[n]["intra"]
        print(f"{n}: inter-class min {inter.min():.4g} median {np.median(inter):.4g}; "
              f"intra-class median {np.median(intra):.4g}; half the min inter distance {inter.min() / 2:.4g}")
    if args.out:
        arrays = {f"{k}_{n}": out[n][k] for n in norms for k in ("inter", "intra")}
        arrays["labels"] = q.y.numpy()

        save_npz(args.out, arrays)
    if args.plot:
        from fastcert.analysis.plots import plot_class_distances

        plot_class_distances(out, norms, args.plot, q.name, args.reference)
        print(f"figure written to {args.plot}")
    return 0
