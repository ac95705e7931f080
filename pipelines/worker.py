"""Entry point of the local runner's worker processes (``--direct_running_mode
multi_processing``): Beam's SDK harness, with smaller data-channel queues, and output
buffers let go when their bundle ends.

Beam 2.77's data channel gives every worker two queues of outgoing data of up to 100 MB
each (a staging queue and the send queue behind it) and a receive queue of up to 100 MB
per bundle. A worker whose output goes out faster than the launcher takes it (the
launcher runs every shuffle of the local runner) fills them: up to 200 MB of encoded
output waiting in the worker, which a launcher with more to shuffle (a larger corpus)
leaves fuller. Here each of those queues holds ``SKYPILE_WORKER_QUEUE_MB`` (default 16)
instead; a message larger than that still passes alone, so nothing waits forever. The
worker then waits for the launcher instead of running ahead of it: on 2 cores, a web
worker's peak at 100k pages fell from 1.09 to 0.94 GiB, for about 4% more wall time on
the 14-file web benchmark (BENCHMARKS.md). ``SKYPILE_WORKER_QUEUE_MB=100`` gives Beam's
sizes back.

It also lets go of each bundle's output buffers when the bundle ends. Beam 2.77 encodes a
bundle's output to the launcher in one buffer per output (sent each time it passes
10 MB, so it grows to 16 MB), and keeps the closed buffer in the worker's cached
processor of that fused stage until the stage runs again, which in a batch job is never.
A pipeline of many stages with many outputs (web: about 60) so keeps one such buffer
per output for the rest of the run, fuller the larger the corpus: at 5,000 pages, 250 of
a web worker's 460 MB of live allocations at its peak (jemalloc's heap profile).

:func:`skypile.pipelines.common.local_runner` starts its worker processes through this
module (``python -m skypile.pipelines.worker``); other runners start their own harness.
"""
from __future__ import annotations

import logging
import os
import sys

QUEUE_MB = 16
_ENV = "SKYPILE_WORKER_QUEUE_MB"


def queue_bytes() -> int:
    """Bytes each data-channel queue of a worker holds: ``SKYPILE_WORKER_QUEUE_MB``, a
    positive number of MB below 1 TB (default 16); anything else gives the default, with
    a warning."""
    raw = os.environ.get(_ENV, "").strip()
    if not raw:
        return QUEUE_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not 0 < mb < 1 << 20:  # also NaN and infinity
        logging.getLogger("skypile").warning(
            "%s=%r is not a positive number of MB; worker queues hold %d MB",
            _ENV, raw, QUEUE_MB)
        return QUEUE_MB << 20
    return max(1, int(mb * (1 << 20)))


def release_output_buffers() -> None:
    """Makes Beam's data-output step drop its stream once the bundle has closed it (module
    docstring); the next bundle is given a new one. Writing to it after the close, which
    would be lost, now fails instead. Idempotent."""
    from apache_beam.runners.worker.bundle_processor import DataOutputOperation

    beam_finish = DataOutputOperation.finish
    if getattr(beam_finish, "releases_stream", False):
        return

    def finish(self) -> None:
        beam_finish(self)  # sends what is left, then closes the stream
        self.output_stream = None

    finish.releases_stream = True
    DataOutputOperation.finish = finish


def main(argv: list[str]) -> None:
    from apache_beam.runners.worker import data_plane, sdk_worker_main

    # Read when a data channel is made, after this: the staging, send and receive queues.
    data_plane._DEFAULT_SEND_QUEUE_MAX_BYTES = queue_bytes()
    release_output_buffers()
    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
