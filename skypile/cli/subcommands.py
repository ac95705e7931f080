"""``skypile GROUP COMMAND --flags`` where each COMMAND has its own config type (dolma's way).

A group (``tokenizer``, ``shards``, ``classifiers``) names its commands and their config
dataclasses; the flags come from the fields (:func:`skypile.config.add_flags`), the help
from the class and field docstrings, and the parsed flags are checked into the config
(:func:`skypile.config.from_args`), so a bad value is a ConfigError, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable


from skypile import config as cfglib


Commands = dict[str, tuple[type, Callable[[Any], None]]]
"""name -> (its config type, the function that runs a checked config of that type)."""


def arg(default: Any = dataclasses.MISSING, *, metavar: str | None = None,
        repeat: bool = False) -> Any:
    """A config field with its flag's metavar; ``repeat``: a list given by a repeated flag.

    Without a default the flag is required.
    """
    meta = {"metavar": metavar} if metavar else {}
    if repeat:
        meta["action"] = "append"
    return dataclasses.field(default=default, metadata=meta)


def summary(cls: type) -> str:
    """The first line of a config type's docstring: the command's one-line help."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def parser(prog: str, description: str, commands: Commands) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (cls, _run) in commands.items():
        cfglib.add_flags(sub.add_parser(name, help=summary(cls), description=summary(cls)), cls)
    return ap


def run(prog: str, description: str, commands: Commands, argv: list[str] | None,
        errors: tuple[type[Exception], ...] = ()) -> int:
    """Parse ``COMMAND --flags``, check them into the command's config and run it.

    A ConfigError, or one of ``errors`` (the group's own "bad input" errors), is the
    one-line message of :func:`fail`.
    """
    args = parser(prog, description, commands).parse_args(argv)
    cls, func = commands[args.cmd]
    try:
        func(cfglib.from_args(cls, args))
    except (cfglib.ConfigError, *errors) as e:
        return fail(prog, e)
    return 0


def fail(prog: str, error: Exception) -> int:
    """The one-line error every command prints for bad input; exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2
