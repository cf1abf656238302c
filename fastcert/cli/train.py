"""`train`: train a model of the zoo and write a checkpoint that records architecture and normalization."""
from __future__ import annotations

from fractions import Fraction

from fastcert.cli.common import CliError, Deprecated, add_common, parse_eps

METHODS = ("gaussian", "laplace", "uniform", "discrete", "none", "ibp", "acert")  # fastcert.training.loop.METHODS


def _archs():
    from fastcert.models.zoo import ARCHS

    return tuple(sorted(ARCHS))


def add_arguments(p):
    add_common(p, model=False, out="checkpoint path (required); an unfinished one with the same settings resumes")
    p.add_argument("--arch", default="cnn_small", choices=_archs(), help="model architecture (default cnn_small)")
    p.add_argument("--method", default="gaussian", choices=METHODS,
                   help="training method: noise augmentation (gaussian, laplace, uniform, discrete), none, or "
                        "certified training (ibp, acert); certify and predict take it as their default")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the one-cycle schedule (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    p.add_argument("--sigma", type=float, default=0.25,
                   help="noise scale: Gaussian sigma, Laplace scale, uniform half-width (default 0.25)")
    p.add_argument("--keep", default="0.8", help="discrete noise: keep probability in (0, 1) (default 0.8)")
    p.add_argument("--alpha-keep", dest="keep", action=Deprecated, new="--keep",
                   help="deprecated spelling of --keep (removed in the next release)")
    p.add_argument("--K", type=int, default=255, help="discrete noise: number of levels - 1 (default 255)")
    p.add_argument("--eps", default="0.1",
                   help="ibp/acert: the training linf budget in [0, 1] pixel units, one value (default 0.1)")
    p.add_argument("--kappa", type=float, default=0.5, help="ibp/acert: weight of the clean loss (default 0.5)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training points")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(batch=128)


def run(args) -> int:
    import torch

    from fastcert.data import load_dataset
    from fastcert.training.loop import CERTIFIED_METHODS, evaluate, train

    if args.out is None:
        raise CliError("--out is required (checkpoint path)")
    if args.epochs < 1:
        raise CliError("--epochs must be >= 1")
    if args.batch < 1:
        raise CliError("--batch must be >= 1")
    import os

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ
    if distributed:
        if args.method not in CERTIFIED_METHODS:
            raise CliError("data-parallel training (torchrun) is supported for --method ibp and acert")
        from fastcert.cli.distributed import rank_device

        args.device = rank_device(args.device)  # cuda -> cuda:LOCAL_RANK before NCCL starts
        torch.distributed.init_process_group("gloo" if args.device == "cpu" else "nccl")
    train_set = load_dataset(args.dataset, "train")
    if args.max_train is not None:
        if args.max_train < 1:
            raise CliError("--max-train must be >= 1")
        train_set = train_set.subset(range(min(args.max_train, len(train_set))))
    test_set = load_dataset(args.dataset, "test")
    kw = {}
    if args.method in CERTIFIED_METHODS:
        eps = parse_eps(args.eps)
        if len(eps) != 1:
            raise CliError(f"--eps: train takes one training budget, got {args.eps!r}")
        kw = {"eps": eps[0], "kappa": args.kappa}
    keep_flag = getattr(args, "_keep_flag", None) or "--keep"
    try:
        keep = float(Fraction(str(args.keep)))
    except (ValueError, ZeroDivisionError):
        raise CliError(f"{keep_flag} must be a number in (0, 1), got {args.keep!r}") from None
    if args.method == "discrete" and not 0 < keep < 1:
        raise CliError(f"{keep_flag} must be in (0, 1), got {args.keep!r}")
    model = train(args.arch, train_set, method=args.method, sigma=args.sigma, keep=keep, K=args.K,
                  epochs=args.epochs, batch_size=args.batch, lr=args.lr, weight_decay=args.weight_decay,
                  seed=args.seed, device=args.device, out=args.out, progress=not args.quiet, **kw)
    if distributed:
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    acc = evaluate(model, test_set, device=args.device)
    print(f"clean test accuracy {acc:.4f} ({len(test_set)} points); checkpoint {args.out}")
    return 0
