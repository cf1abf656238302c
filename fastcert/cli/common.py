"""Flags and helpers the subcommands share, so that a flag means the same in every subcommand that has it:

* ``--dataset``, ``--model``, ``--out``, ``--seed``, ``--device``, ``--batch`` (DESIGN.md's common flags;
  a subcommand offers ``--seed`` / ``--device`` / ``--batch`` only when it uses them);
* ``--skip K --max N`` (``--max-points``): visit every K-th point and stop after N of them (default: all);
* ``--n0`` / ``--n`` (``--N0`` / ``--N``): selection and estimation samples;
* ``--noise`` / ``--sigma`` / ``--keep`` / ``--K``: the smoothing noise, by default the one the checkpoint
  was trained with (:func:`resolve_noise`);
* ``--eps``: linf budgets in [0, 1] pixel units, a comma-separated list (:func:`parse_eps`);
* ``--alpha``: only ever the failure probability.

Old spellings (``--alpha-keep``, ``threshold --alpha``, ``curve --method``) still work for one release and
print a one-line notice on stderr (:class:`Deprecated`).
"""
from __future__ import annotations

import argparse
import math
import sys

from fastcert.errors import CliError

__all__ = ["CliError", "Deprecated", "Parser", "add_common", "add_dataset", "add_model", "add_noise_flags",
           "add_sampling", "add_selection", "add_split", "parse_eps", "resolve_dataset", "resolve_noise",
           "selected_indices", "training_config", "warn", "load_model", "load_model_and_data",
           "model_label", "model_settings", "check_input_shape"]

NOISES = ("gaussian", "laplace", "uniform", "discrete")
SPLITS = ("test", "train")
DATASETS = "digits | fashion-mnist[:PATH] | mnist:PATH | cifar10:PATH | folder:PATH"


class Parser(argparse.ArgumentParser):
    """argparse with DESIGN.md's error contract: a bad flag (unknown, missing value, not in ``choices``)
    prints ONE line ``error: ...`` on stderr and exits with status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def warn(text: str) -> None:
    """One line on stderr: ``warning: text``."""
    print(f"warning: {text}", file=sys.stderr)


class Deprecated(argparse.Action):
    """An old spelling of a flag: stores into the new flag's destination and prints a one-line notice on
    stderr. ``new`` is the flag to use instead. The spelling used is remembered (``_<dest>_flag``) so that
    an error about the value names the flag the user typed."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"notice: {option_string} is deprecated and will be removed in the next release; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)
        setattr(namespace, f"_{self.dest}_flag", option_string)


# ------------------------------------------------------------------------------------------ flag groups
def add_dataset(p, from_model: bool = True) -> None:
    default = "the checkpoint's dataset, else digits" if from_model else "digits"
    p.add_argument("--dataset", default=None if from_model else "digits",
                   help=f"{DATASETS} (default: {default})")


MODEL_HELP = ("the model: a checkpoint written by `train` (it also supplies the dataset, the noise and its "
              "parameters, and the training method as defaults), a TorchScript file (torch.jit.save), a torch.export "
              "program (.pt2), 'package.module:factory' with --weights, or Cohen et al.'s released checkpoint; all "
              "but fastcert checkpoints need --dataset and the noise flags (--noise, --sigma / --keep --K)")
# load_model's formats that carry no training metadata
FOREIGN_FORMATS = {"torchscript": "a TorchScript", "torch.export": "a torch.export", "factory": "a factory",
                   "cohen": "Cohen et al.'s"}


def add_model(p, extra: str = "") -> None:
    p.add_argument("--model", default=None, metavar="SPEC", help=MODEL_HELP + extra)
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="the weights of a 'package.module:factory' --model: a state dict saved by torch.save, or a "
                        "safetensors file")


def add_common(p: argparse.ArgumentParser, dataset: bool = True, model: bool = True, seed: bool = True,
               device: bool = True, batch: bool = True, out: str | None = "output path") -> None:
    """The common flags of DESIGN.md, each only where the subcommand uses it."""
    if dataset:
        add_dataset(p, from_model=model)
    if model:
        add_model(p)
    if out:
        p.add_argument("--out", default=None, help=out)
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    if device:
        p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    if batch:
        p.add_argument("--batch", type=int, default=1000, help="batch size")


def add_split(p, what: str = "dataset split whose points are used") -> None:
    p.add_argument("--split", default="test", choices=SPLITS, help=f"{what} (default test)")


def add_selection(p) -> None:
    """``--skip K --max N``: every K-th point of the split, at most N of them, the same in every subcommand."""
    p.add_argument("--skip", type=int, default=1, help="use every skip-th point of the split (default 1: all)")
    # --max-points also works under torchrun, whose own parser rejects --max as an ambiguous prefix
    p.add_argument("--max", "--max-points", dest="max", type=int, default=-1,
                   help="stop after this many points, counted after --skip (default -1: all)")


def add_sampling(p, n0: bool = True) -> None:
    """``--n0`` / ``--n`` (Cohen et al.'s ``--N0`` / ``--N`` also work, and under torchrun, whose parser
    rejects ``--n`` as an ambiguous prefix)."""
    if n0:
        p.add_argument("--n0", "--N0", dest="n0", type=int, default=100,
                       help="Monte Carlo samples to select the top class (default 100)")
    p.add_argument("--n", "--N", dest="n", type=int, default=100_000,
                   help=("Monte Carlo samples to estimate the top class's probability" if n0 else
                         "Monte Carlo samples per point") + " (default 100000)")


def add_noise_flags(p) -> None:
    p.add_argument("--noise", default=None, choices=NOISES,
                   help="smoothing noise (default: the one the checkpoint was trained with)")
    p.add_argument("--sigma", type=float, default=None,
                   help="noise scale: Gaussian sigma, Laplace scale, uniform half-width (default: the "
                        "checkpoint's, when it was trained with that noise)")
    p.add_argument("--keep", default=None,
                   help="discrete noise: keep probability in (0, 1), exact decimal or fraction (default: the "
                        "checkpoint's)")
    p.add_argument("--alpha-keep", dest="keep", action=Deprecated, new="--keep",
                   help="deprecated spelling of --keep (removed in the next release)")
    p.add_argument("--K", type=int, default=None,
                   help="discrete noise: levels - 1, inputs on {0, 1/K, ..., 1} (default: the checkpoint's)")


def parse_eps(text, flag: str = "--eps") -> list:
    """``--eps``: linf budgets in [0, 1] pixel units, comma-separated, each finite and >= 0."""
    try:
        vals = [float(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        raise CliError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if not vals or any(not (0 <= e < math.inf) for e in vals):
        raise CliError(f"{flag} must be finite numbers >= 0, got {text!r}")
    return vals


def selected_indices(n_points: int, skip: int, max_points) -> list[int]:
    """Indices of the points a run visits: every ``skip``-th, at most ``max_points`` (-1 or None: all)."""
    if skip < 1:
        raise CliError(f"--skip must be >= 1, got {skip}")
    if max_points is not None and (max_points == 0 or max_points < -1):
        raise CliError(f"--max must be >= 1 (or -1: all), got {max_points}")
    idx = list(range(0, n_points, skip))
    return idx if max_points is None or max_points < 0 else idx[:max_points]


# ------------------------------------------------------------------------------ defaults from the model
def training_config(meta) -> dict:
    """The training configuration a fastcert checkpoint records ({} for models that carry none)."""
    cfg = dict((meta or {}).get("config") or {})
    if "alpha_keep" in cfg and "keep" not in cfg:  # checkpoints written before the keep probability was named keep
        cfg["keep"] = cfg.pop("alpha_keep")
    return cfg


def _foreign(meta) -> str | None:
    """'a TorchScript' ... for a model format that carries no training metadata, else None."""
    return FOREIGN_FORMATS.get((meta or {}).get("format"))


def resolve_dataset(args, meta) -> str:
    """``--dataset``, else the dataset the checkpoint was trained on, else digits (checkpoints that record
    none). A checkpoint trained on a dataset read from a path that it does not record needs ``--dataset``,
    and so does every model format without training metadata (TorchScript, torch.export, factories,
    Cohen et al.'s checkpoints)."""
    if args.dataset is not None:
        return args.dataset
    foreign = _foreign(meta)
    if foreign is not None:
        hint = (f" (Cohen et al.'s {meta.get('cohen_arch')} was trained on {meta.get('dataset')}: e.g. "
                f"--dataset {meta.get('dataset')}:PATH)" if meta.get("format") == "cohen" else "")
        raise CliError(f"--dataset is required: {foreign} model records no dataset{hint}")
    name = training_config(meta).get("dataset")
    if name is None:
        return "digits"
    if name in ("digits", "fashion-mnist"):
        return name
    raise CliError(f"--dataset is required: the model was trained on {name}, whose path the checkpoint does "
                   f"not record (e.g. --dataset {name}:PATH)")


def _training_noise(cfg):
    """The noise a checkpoint was trained with, as (name, params dict), or None."""
    method = cfg.get("method")
    if method in ("gaussian", "laplace", "uniform") and cfg.get("sigma") is not None:
        return method, {"sigma": float(cfg["sigma"])}
    if method == "discrete" and cfg.get("keep") is not None and cfg.get("K") is not None:
        return method, {"keep": cfg["keep"], "K": int(cfg["K"])}
    return None


def resolve_noise(args, meta):
    """The smoothing noise of a run -> (noise, settings dict).

    Each of ``--noise``, ``--sigma``, ``--keep``, ``--K`` not given on the command line comes from the
    checkpoint's training configuration (the parameters only when the noise is the one it was trained
    with). A flag that contradicts the training noise is allowed (certifying with another noise is
    legitimate research): it prints one warning line and the settings record it under
    ``contradicts_training``. A value neither gives is an error naming the flag."""
    from fractions import Fraction

    from fastcert.smoothing.noise import make_noise

    cfg = training_config(meta)
    trained = _training_noise(cfg)
    method = cfg.get("method")
    name = args.noise
    if name is None:
        if trained is None:
            why = (f"the checkpoint was trained with method {method!r}, not with a smoothing noise" if method
                   else f"{_foreign(meta)} model carries no training metadata" if _foreign(meta)
                   else "the model records no training noise")
            raise CliError(f"--noise is required: {why}")
        name = trained[0]
    same = trained is not None and trained[0] == name
    params = trained[1] if same else {}
    contradicts = []
    if trained is not None and name != trained[0]:
        contradicts.append(f"--noise {name}")
    if name == "discrete":
        if args.sigma is not None:
            raise CliError("--sigma applies to gaussian, laplace and uniform noise, not to --noise discrete")
        keep_flag = getattr(args, "_keep_flag", None) or "--keep"
        keep = args.keep if args.keep is not None else params.get("keep")
        K = args.K if args.K is not None else params.get("K")
        if keep is None:
            raise CliError(f"{keep_flag} is required for --noise discrete (the checkpoint was not trained with "
                           "discrete noise)")
        if K is None:
            raise CliError("--K is required for --noise discrete (the checkpoint was not trained with discrete "
                           "noise)")
        try:
            keep_exact = Fraction(str(keep))
        except (ValueError, ZeroDivisionError):
            raise CliError(f"{keep_flag} must be a number in (0, 1), got {keep!r}") from None
        if not 0 < keep_exact < 1:
            raise CliError(f"{keep_flag} must be in (0, 1), got {keep!r}")
        if same and args.keep is not None and keep_exact != Fraction(str(params["keep"])):
            contradicts.append(f"--keep {keep}")  # the flag's name, whichever spelling was typed
        if same and args.K is not None and int(args.K) != params["K"]:
            contradicts.append(f"--K {args.K}")
        noise = make_noise(name, keep=keep_exact, K=K)
    else:
        if args.keep is not None or args.K is not None:
            raise CliError("--keep and --K apply to --noise discrete only")
        sigma = args.sigma if args.sigma is not None else params.get("sigma")
        if sigma is None:
            why = (f"the checkpoint was trained with {trained[0]} noise, not {name}" if trained is not None
                   else f"{_foreign(meta)} model carries no training metadata" if _foreign(meta)
                   else "the checkpoint records no noise scale")
            raise CliError(f"--sigma is required for --noise {name}: {why}")
        if same and args.sigma is not None and float(args.sigma) != params["sigma"]:
            contradicts.append(f"--sigma {args.sigma}")
        noise = make_noise(name, sigma=sigma)
    trained_repr = repr(make_noise(trained[0], **{**trained[1], "keep": Fraction(str(trained[1]["keep"]))})
                        if trained[0] == "discrete" else make_noise(trained[0], **trained[1])) if trained else None
    if contradicts:
        warn(f"{' '.join(contradicts)} contradicts the training noise {trained_repr} of the checkpoint; "
             f"certifying with {noise!r}")
    settings = {"noise": repr(noise), "training_method": method, "training_noise": trained_repr,
                "contradicts_training": contradicts}
    return noise, settings


def default_method(args, meta) -> str:
    """certify's ``--method``: the flag, else ``ibp`` for an IBP/ACERT-trained checkpoint, else smoothing."""
    if args.method is not None:
        return args.method
    return "ibp" if training_config(meta).get("method") in ("ibp", "acert") else "smoothing"


def model_label(spec) -> str:
    """A short name of a ``--model`` spec: the file's stem, or the factory's name."""
    from pathlib import Path

    text = str(spec)
    if ":" in text and not Path(text).exists():
        return text.rpartition(":")[2].rpartition(".")[2]
    return Path(text).stem


def load_model(spec, weights=None, device="cpu", data=None, dataset=None):
    """The model named by ``--model`` (and ``--weights``) -> (nn.Module in eval mode, metadata dict), in
    any format of :func:`fastcert.models.loading.load_model`.

    With ``data`` (the dataset named ``dataset``, already loaded), the model is fitted to it: the input
    shape is the dataset's, and one forward pass on its first input must give (1, num_classes) logits;
    otherwise a one-line error says what did not fit. Without it, the model must state its input shape
    (fastcert and Cohen et al.'s checkpoints, torch.export programs, factories that state it)."""
    if spec is None:
        raise CliError("--model is required (a checkpoint written by `train`, a TorchScript or torch.export file, "
                       "'package.module:factory' with --weights, or Cohen et al.'s checkpoint)")
    from fastcert.models.loading import load_model as load

    kw = {}
    if data is not None:
        kw = {"input_shape": tuple(data.input_shape), "num_classes": int(data.num_classes), "sample": data.x[0]}
    try:
        return load(spec, weights=weights, device=device, **kw)
    except ValueError as e:
        msg = " ".join(str(e).split())
        head, sep, rest = msg.partition(": ")
        if head == "weights" and sep:
            raise CliError(f"--weights: {rest}") from None
        fits = data is not None and sep and (head in ("input_shape", "num_classes", "sample") or (
            head == "model" and ("does not run on" in rest or " gives " in rest or "does not fit Cohen" in rest)))
        if fits:
            raise CliError(f"--model {spec} does not fit --dataset {dataset} (inputs {tuple(data.input_shape)}, "
                           f"{data.num_classes} classes): {rest}") from None
        if head == "model" and sep:
            raise CliError(f"--model: {rest}") from None
        if data is None and head == "input_shape" and "does not record its input shape" in rest:
            raise CliError(f"--dataset is required: the model {spec} does not record its input shape") from None
        raise CliError(msg) from None


def model_settings(args, meta) -> dict:
    """What a log's settings record about the model beyond ``--model``: its format when it is not a fastcert
    checkpoint, and ``--weights`` when given (nothing for fastcert checkpoints, so their logs stay as they were)."""
    out = {}
    if _foreign(meta):
        out["model_format"] = meta["format"]
    if getattr(args, "weights", None) is not None:
        out["weights"] = str(args.weights)
    return out


def load_model_and_data(args, split: str = "test"):
    """``--model`` / ``--weights`` / ``--dataset`` -> (model, metadata, dataset name, Dataset).

    With ``--dataset`` the dataset is loaded first and the model is fitted to it (its input shape, its
    number of classes, a forward pass on its first input). Without it the dataset comes from the
    checkpoint (:func:`resolve_dataset`), which formats without training metadata do not give."""
    from fastcert.data import load_dataset

    if args.model is None:
        load_model(None)
    weights = getattr(args, "weights", None)
    if args.dataset is not None:
        data = load_dataset(args.dataset, split)
        model, meta = load_model(args.model, weights, args.device, data, args.dataset)
        return model, meta, args.dataset, data
    model, meta = load_model(args.model, weights, args.device)
    dataset = resolve_dataset(args, meta)
    data = load_dataset(dataset, split)
    check_input_shape(data, meta, dataset, args.model)
    return model, meta, dataset, data


def check_input_shape(data, meta, dataset: str, model: str) -> None:
    """The dataset's inputs must have the shape the model was trained on (when the model records it), and
    as many classes as the model has logits."""
    shape = (meta or {}).get("input_shape")
    if shape is not None and tuple(data.input_shape) != tuple(shape):
        raise CliError(f"--dataset {dataset} has inputs {tuple(data.input_shape)} but the model {model} expects "
                       f"{tuple(shape)}")
    k = (meta or {}).get("num_classes")
    if k is not None and int(k) != int(data.num_classes):
        raise CliError(f"--dataset {dataset} has {data.num_classes} classes but the model {model} gives {k} logits")
