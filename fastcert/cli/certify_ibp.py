"""``certify --method ibp|crown-ibp``: per-point log with Cohen et al.'s six columns (radius = the
largest certified linf eps, :func:`fastcert.ibp.radius.certified_radius`) and a certified_<eps> flag
per budget."""
from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from fastcert.cli.common import CliError, selected_indices
from fastcert.data import load_dataset
from fastcert.ibp.radius import certified_radius, margin_lower_bounds
from fastcert.io.logs import LogWriter, floor_str, format_time
from fastcert.models.checkpoint import load_checkpoint


def run(args) -> int:
    """``certify --method ibp|crown-ibp --eps e1,e2,...``: per-sample log with Cohen's six columns
    (radius = largest certified linf eps by bisection, capped at max(eps)) and certified_<eps> flags."""
    try:
        eps_list = [float(e) for e in str(args.eps).split(",") if e.strip()]
    except ValueError:
        raise CliError(f"--eps must be comma-separated numbers, got {args.eps!r}") from None
    if not eps_list or any(not (0 <= e < math.inf) for e in eps_list):
        raise CliError("--eps must be finite numbers >= 0")
    model, meta = load_checkpoint(args.model, device=args.device)
    data = load_dataset(args.dataset, args.split)
    if tuple(data.input_shape) != tuple(meta["input_shape"]):
        raise CliError(f"--dataset {args.dataset} has inputs {data.input_shape}, the model expects "
                       f"{tuple(meta['input_shape'])}")
    cap = max(eps_list)
    cols = ["idx", "label", "predict", "radius", "correct", "time"] + [f"certified_{e:g}" for e in eps_list]
    settings = {"command": "certify", "method": args.method, "model": str(args.model), "dataset": args.dataset,
                "split": args.split, "eps": eps_list}
    indices = selected_indices(len(data), args.skip, args.max)
    method = "crown-ibp" if args.method == "crown-ibp" else "ibp"
    with LogWriter(args.out, cols, settings) as log:
        todo = [i for i in indices if i not in log.done]
        for start in tqdm(range(0, len(todo), args.batch), desc=f"certify {method}", disable=args.quiet):
            chunk = todo[start:start + args.batch]
            t0 = time.time()
            xb = data.x[chunk].to(args.device)
            yb = data.y[chunk].to(args.device)
            with torch.no_grad():
                pred = model(xb).argmax(1)
                flags = [(pred == yb) & (margin_lower_bounds(model, xb, yb, e, data.num_classes, method).min(1).values
                                         > 0) for e in eps_list]
                radius = certified_radius(model, xb, yb, data.num_classes, cap, method=method)
            per = (time.time() - t0) / len(chunk)
            for j, i in enumerate(chunk):
                log.write({"idx": i, "label": int(yb[j]), "predict": int(pred[j]), "radius": floor_str(float(radius[j])),
                           "correct": int(pred[j] == yb[j]), "time": format_time(per),
                           **{f"certified_{e:g}": int(f[j]) for e, f in zip(eps_list, flags)}})
    print(f"wrote {args.out}")
    return 0
