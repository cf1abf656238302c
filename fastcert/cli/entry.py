"""Command line: ``fastcert <subcommand> [--help]``, the same as ``python -m fastcert.cli <subcommand>``.

Each subcommand lives in ``fastcert/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Bad input exits with status 2 and one line ``error: ...`` (no traceback).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "certify": "Certify test points (randomized smoothing or IBP/CROWN-IBP); writes a Cohen-style log",
    "predict": "Predict with the smoothed classifier (abstains at level alpha); writes a log",
    "analyze": "Certified accuracy tables and plots from logs (ours and the original papers')",
    "threshold": "Exact thresholds rho_r^{-1}(p) for discrete (l0) smoothing",
    "curve": "Robustness curves (minimal adversarial perturbations) per norm",
    "distances": "Inter-/intra-class distances of a dataset per norm",
    "train": "Train a model (noise augmentation, IBP, ACERT)",
    "bench": "Short benchmark table of the compiled kernels against their reference paths",
}


from fastcert.errors import CliError  # noqa: E402


def _prog() -> str:
    """How the user called us: ``fastcert`` (the console script) or ``python -m fastcert.cli``."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m fastcert.cli" if argv0 in ("__main__.py", "-m", "-c", "") else "fastcert"


def build_parser(name: str) -> argparse.ArgumentParser:
    """Parser of one subcommand (only its module is imported, so start-up stays fast)."""
    from fastcert.cli.common import Parser

    mod = importlib.import_module(f"fastcert.cli.{name}")
    p = Parser(prog=f"{_prog()} {name}", description=SUBCOMMANDS[name])
    mod.add_arguments(p)
    p.set_defaults(_run=mod.run)
    return p


def _usage() -> str:
    lines = [f"usage: {_prog()} <subcommand> [--help] [options]", "", "subcommands:"]
    lines += [f"  {name:<10} {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", f"`{_prog()} <subcommand> --help` lists a subcommand's flags."]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run one subcommand; returns the exit status (0 ok, 2 bad input, 1 internal error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        try:
            print(_usage())
        except BrokenPipeError:  # `fastcert --help | head`
            pass
        return 0 if argv else 2
    name = argv[0]
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    try:
        args = build_parser(name).parse_args(argv[1:])
    except SystemExit as e:  # --help (0) or a bad flag (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`fastcert analyze ... | head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (CliError, ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError, KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
        print(f"error: {msg.splitlines()[0] if msg else type(e).__name__}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: one line, the traceback on request
        if os.environ.get("FASTCERT_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: internal error {type(e).__name__}: {first} (set FASTCERT_DEBUG=1 for the traceback; "
              f"please report it)", file=sys.stderr)
        return 1

