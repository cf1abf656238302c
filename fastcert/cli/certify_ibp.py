"""``certify --method ibp|crown-ibp``: per-point log with Cohen et al.'s six columns (radius = the
largest certified linf eps, :func:`fastcert.ibp.radius.certified_radius`) and a certified_<eps> flag
per budget."""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from fastcert.cli.common import (CliError, load_model_and_data, model_settings, parse_eps, selected_indices,
                                 training_config)
from fastcert.ibp.radius import certified_radius, margin_lower_bounds
from fastcert.io.logs import LogWriter, floor_str, format_time


def run(args, model=None, meta=None, dataset=None, data=None) -> int:
    """``certify --method ibp|crown-ibp --eps e1,e2,...``: per-sample log with Cohen's six columns
    (radius = largest certified linf eps by bisection, capped at max(eps)) and certified_<eps> flags."""
    from fastcert.ibp.graph import UnsupportedLayerError, trace

    eps_list = parse_eps(args.eps)
    if model is None:
        model, meta, dataset, data = load_model_and_data(args, args.split)
    try:
        trace(model)
    except UnsupportedLayerError as e:
        raise CliError(f"--method {args.method} cannot bound the model {args.model}: {e} (interval bounds need a "
                       "network of the layers fastcert.ibp supports, e.g. a factory's nn.Sequential; TorchScript and "
                       "torch.export programs cannot be bounded)") from None
    cap = max(eps_list)
    cols = ["idx", "label", "predict", "radius", "correct", "time"] + [f"certified_{e:g}" for e in eps_list]
    settings = {"command": "certify", "method": args.method, "model": str(args.model), **model_settings(args, meta),
                "dataset": dataset,
                "split": args.split, "eps": eps_list, "training_method": training_config(meta).get("method")}
    indices = selected_indices(len(data), args.skip, args.max)
    method = "crown-ibp" if args.method == "crown-ibp" else "ibp"
    # sound in floating point by default for IBP (CROWN-IBP has no sound mode); --unsound-ibp opts out
    sound = method == "ibp" and not getattr(args, "unsound_ibp", False)
    settings["sound"] = sound
    with LogWriter(args.out, cols, settings) as log:
        todo = [i for i in indices if i not in log.done]
        for start in tqdm(range(0, len(todo), args.batch), desc=f"certify {method}", disable=args.quiet):
            chunk = todo[start:start + args.batch]
            t0 = time.time()
            xb = data.x[chunk].to(args.device)
            yb = data.y[chunk].to(args.device)
            with torch.no_grad():
                pred = model(xb).argmax(1)
                flags = [(pred == yb) & (margin_lower_bounds(model, xb, yb, e, data.num_classes, method, sound).min(1).values
                                         > 0) for e in eps_list]
                radius = certified_radius(model, xb, yb, data.num_classes, cap, method=method, sound=sound)
            per = (time.time() - t0) / len(chunk)
            for j, i in enumerate(chunk):
                log.write({"idx": i, "label": int(yb[j]), "predict": int(pred[j]), "radius": floor_str(float(radius[j])),
                           "correct": int(pred[j] == yb[j]), "time": format_time(per),
                           **{f"certified_{e:g}": int(f[j]) for e, f in zip(eps_list, flags)}})
    print(f"wrote {args.out}")
    return 0
