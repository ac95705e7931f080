"""What every reader yields and shares: the raw record, the reading options, the counts
and the reject for a whole file or a byte offset in it."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

from skypile.document import Origin, Reject, stable_id

STAGE = "read"


@dataclasses.dataclass(slots=True)
class RawRecord:
    """One record as read, before extraction.

    ``kind`` says what ``body`` holds: ``http`` (a raw HTTP response, headers included),
    ``html`` (bare page bytes) or ``text`` (already text: WET, JSONL, Parquet).
    """

    id: str
    url: str
    source: str
    kind: str
    body: bytes | str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReaderOptions:
    """How files are read. Set from the ``read`` section of the pipeline config."""

    text_field: str = "text"
    """JSONL/Parquet column with the document text."""
    id_field: str = "id"
    """JSONL/Parquet column with the document id (a stable id is made when it is missing)."""
    url_field: str = "url"
    """JSONL/Parquet column with the URL, if any."""
    max_record_bytes: int = 20 * 1024 * 1024
    """Records larger than this are rejected (``read:too-large``) without being held in memory."""
    max_header_bytes: int = 64 * 1024
    """A WARC header block longer than this is treated as corruption."""
    text_only: bool = False
    """Accept only text documents (JSONL, Parquet, WET); pages needing extraction are rejected."""
    parallel_fields: list[str] = dataclasses.field(default_factory=list)
    """English-Chinese pairs: two JSONL/Parquet fields (e.g. [en, zh]) joined into one
    document, English first (source_kind=parallel). TSV files are always read as pairs."""
    content: Literal["auto", "html", "text"] = "auto"
    """What the text of JSONL/Parquet rows, WET and text files holds: "auto" sends a text that
    looks like an HTML page or fragment through extraction, "html" sends every one, "text"
    none. One that still looks like HTML after the extract stage, or in ``skypile dedup``
    (which extracts nothing), is rejected: ``extract:markup``."""
    list_on_workers: bool = False
    """List the inputs inside the pipeline, not on the launcher: for paths only workers
    can see (a Dataflow dry run without credentials, a Flink cluster's own storage). Each
    --input pattern is expanded by a worker; one that matches nothing becomes a reject
    ``read:no-match`` (counted as an unreadable input), and stats.json's ``inputs`` lists
    the patterns, since the launcher never sees the files."""
    split_mb: int = 16
    """``skypile tokenize``: a plain (uncompressed) JSONL file over twice this many MB is
    read as ranges of about this size, each starting at a line, so that several workers
    share it; line numbers stay those of the whole file, which costs one extra pass over
    the file to count them (on object storage, a second download). 0: one file, one
    reader."""


class FileRange(NamedTuple):
    """Lines of one file: those starting at byte ``start`` up to (not including) ``end``,
    ``start`` being a line's first byte and ``line`` its number in the whole file."""

    path: str
    start: int
    end: int
    line: int


@dataclasses.dataclass
class ReadStats:
    records: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    part: bool = False
    """Only a range of the file was read: an empty range says nothing of the file."""

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1


class UnreadableFile(Exception):
    """The file as a whole could not be read (missing, permission, not a known format)."""


def file_reject(path: str, reason: str, offset: int | None = None, **detail) -> Reject:
    detail = {"file": path, **({"offset": offset} if offset is not None else {}), **detail}
    return Reject.of(Origin(stable_id(path, str(offset), reason), "", path), STAGE, reason,
                     **detail)
