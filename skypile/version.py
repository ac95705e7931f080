"""Which code made an output, and how it was launched.

Every pipeline command records both in its ``stats.json`` (``skypile_version``,
``command``), so a data card can name them for each run of a chain. Asked once per run,
on the machine that launched it, never on a worker.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from skypile import __version__
from skypile.files.names import printable


def _git(where: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(where: str | None = None) -> str:
    """``skypile X.Y.Z`` plus ``git describe`` of the source tree when there is one.

    Only a tree that tracks this package counts: an installed copy inside some other
    repository (a virtual environment in a project) is not described by that project's
    commit. Never fails: no git, no repository or a slow disk leave the git part out.
    """
    where = where or os.path.dirname(os.path.abspath(__file__))
    described = None
    if _git(where, "ls-files", "--error-unmatch", "--", "__init__.py") is not None:
        described = _git(where, "describe", "--always", "--dirty", "--tags")
    return f"skypile {__version__}" + (f" (git {described})" if described else "")


_SECRET_FLAG = re.compile(
    r"--[\w.-]*(storage_options|secret|token|password|passwd|key_id|access_key|credential)",
    re.IGNORECASE)
"""Flags whose value is masked: our storage options and Beam's / the clouds' credentials
(``--s3_secret_access_key``, ``--s3_access_key_id``, ``--s3_session_token``...)."""
_URL_USER = re.compile(r"(://)[^/@\s]+@")


def launch_command(prog: str, argv: list[str]) -> str:
    """``prog`` and its arguments as one shell-quoted line. Credentials stay out: the
    value of a flag that :data:`_SECRET_FLAG` names (``--flag=value`` or ``--flag value``)
    and a ``user:password@`` in a URL are masked."""
    words, mask_next = [], False
    for arg in argv:
        if mask_next:
            arg, mask_next = "***", False
        elif _SECRET_FLAG.match(arg):
            name, eq, _value = arg.partition("=")
            arg, mask_next = (f"{name}=***", False) if eq else (arg, True)
        arg = printable(arg)[0]  # a non-UTF-8 file name: its bytes shown as \xNN
        words.append(_URL_USER.sub(r"\1***@", arg))
    return " ".join([prog, *map(shlex.quote, words)])
