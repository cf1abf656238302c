"""The command line, ``python -m fastcert.cli <subcommand>`` (also the ``fastcert`` console script).

``entry`` dispatches to one module per subcommand (``add_arguments(parser)``, ``run(args) -> int``):
each parses its flags, calls the library and prints. Nothing below this package imports it.
"""
from fastcert.cli.entry import main
from fastcert.errors import CliError

__all__ = ["CliError", "main"]
