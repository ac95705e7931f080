"""A function run in a long-lived child process, killed when a call overruns its budget.

Extraction runs trafilatura here: a page that makes lxml loop or blow memory costs one
child, not the worker. The child is a plain ``python -c`` subprocess (not
multiprocessing), so it works under any main module, inside Beam workers and notebooks.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
from typing import Any


class SandboxError(Exception):
    """A call that did not return: ``reason`` is timeout, extractor-crashed or
    extractor-error (the callee raised), with details."""

    def __init__(self, reason: str, **detail: Any):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def child_main(target: str) -> None:  # pragma: no cover - runs in the child process
    """Serve calls of ``target`` ("module:function") on stdin/stdout until stdin closes."""
    import importlib
    import logging

    module, name = target.split(":")
    func = getattr(importlib.import_module(module), name)
    logging.disable(logging.CRITICAL)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but our frames may reach the pipe
    while True:
        try:
            args = _recv(stdin)
        except EOFError:
            return
        try:
            _send(stdout, ("ok", func(*args)))
        except Exception as e:  # sent back and turned into a reject reason, never lost
            _send(stdout, ("error", f"{type(e).__name__}: {e}"[:200]))


class Sandbox:
    """One long-lived child process serving ``target``, killed when a call overruns.

    The child is a plain ``python -c`` subprocess (not multiprocessing), so it works under
    any main module, inside Beam workers and from notebooks. It starts lazily (Beam
    pickles the DoFn that owns it) and is restarted after a kill.
    """

    def __init__(self, timeout_s: float, target: str):
        self.timeout_s, self.target = timeout_s, target
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-c",
             f"from skypile.text.sandbox import child_main; child_main({self.target!r})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def run(self, *args) -> dict[str, Any] | None:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            _send(self._proc.stdin, args)
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
            if not ready:
                self.close()
                raise SandboxError("timeout", budget_s=self.timeout_s)
            status, value = _recv(self._proc.stdout)
        except (EOFError, BrokenPipeError, ConnectionError, pickle.UnpicklingError):
            self.close()  # the child died (out of memory, a crash inside lxml)
            raise SandboxError("extractor-crashed") from None
        if status == "error":
            raise SandboxError("extractor-error", error=value)
        return value

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            for stream in (self._proc.stdin, self._proc.stdout):
                stream.close()
        self._proc = None

    def __getstate__(self):
        return {"timeout_s": self.timeout_s, "target": self.target}

    def __setstate__(self, state):
        self.__init__(state["timeout_s"], state["target"])
