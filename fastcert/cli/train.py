"""`train`: train a model of the zoo and write a checkpoint that records architecture and normalization."""
from __future__ import annotations

from fastcert.cli.common import CliError, add_common


def add_arguments(p):
    add_common(p, model=False)
    p.add_argument("--arch", default="cnn_small", help="model architecture (fastcert.models.zoo.ARCHS)")
    p.add_argument("--method", default="gaussian",
                   help="gaussian | laplace | uniform | discrete | none | ibp | acert")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--sigma", type=float, default=0.25, help="noise scale (sigma / Laplace scale / uniform half-width)")
    p.add_argument("--alpha-keep", type=float, default=0.8, help="discrete noise: keep probability")
    p.add_argument("--K", type=int, default=255, help="discrete noise: number of levels - 1")
    p.add_argument("--eps", type=float, default=0.1, help="ibp/acert: training epsilon (linf, [0,1] pixels)")
    p.add_argument("--kappa", type=float, default=0.5, help="ibp/acert: weight of the clean loss")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training points")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(batch=128)


def run(args) -> int:
    import torch

    from fastcert.data import load_dataset
    from fastcert.models.zoo import ARCHS
    from fastcert.training.loop import CERTIFIED_METHODS, METHODS, evaluate, train

    if args.method not in METHODS:
        raise CliError(f"--method must be one of {', '.join(METHODS)}, got {args.method!r}")
    if args.arch not in ARCHS:
        raise CliError(f"--arch must be one of {', '.join(sorted(ARCHS))}, got {args.arch!r}")
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
        torch.distributed.init_process_group("gloo" if args.device == "cpu" else "nccl")
    train_set = load_dataset(args.dataset, "train")
    if args.max_train is not None:
        if args.max_train < 1:
            raise CliError("--max-train must be >= 1")
        train_set = train_set.subset(range(min(args.max_train, len(train_set))))
    test_set = load_dataset(args.dataset, "test")
    kw = {}
    if args.method in CERTIFIED_METHODS:
        kw = {"eps": args.eps, "kappa": args.kappa}
    model = train(args.arch, train_set, method=args.method, sigma=args.sigma, alpha_keep=args.alpha_keep, K=args.K,
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
