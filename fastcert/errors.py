"""Exceptions shared by the package and the CLI (kept out of cli.py so that `python -m fastcert.cli`,
which runs cli.py as __main__, still recognizes them)."""


class CliError(ValueError):
    """A user error on the command line: printed as one line ``error: ...``, exit status 2."""
