"""The argument parser of the trainer's commands (``skypile train``, ``eval``, ``export``):
a bad flag is one line, like every other bad input (``skypile.cli.subcommands.fail``)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from skypile.cli.subcommands import fail


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports a bad flag as ``PROG: error: MESSAGE`` (exit 2), without
    the usage block; ``--help`` still shows it. Its subparsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        sys.exit(fail(self.prog, message))
