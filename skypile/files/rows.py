"""Row formats: JSONL (plain, .gz, .zst), Parquet, plain text and tab-separated pairs; one
row is one record, a bad row is a reject and reading goes on."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from typing import Any, BinaryIO, Iterator

from skypile.document import Origin, Reject, stable_id
from skypile.files.records import STAGE, RawRecord, ReaderOptions, ReadStats, file_reject
from skypile.text.chars import preview

def _pair_text(first, second) -> str | None:
    if isinstance(first, str) and isinstance(second, str) and first.strip() and second.strip():
        return f"{first.strip()}\n{second.strip()}"
    return None


def _row_record(row: dict, path: str, where: str, opts: ReaderOptions) -> RawRecord | Reject:
    if opts.parallel_fields:
        a, b = opts.parallel_fields[:2]
        text = _pair_text(row.get(a), row.get(b))
        row = {**row, "source_kind": "parallel"}
    else:
        text = row.get(opts.text_field)
    raw_id = row.get(opts.id_field)
    doc_id = str(raw_id) if raw_id not in (None, "") else stable_id(path, where)
    url = row.get(opts.url_field) or ""
    if not isinstance(text, str):
        return Reject.of(Origin(doc_id, str(url), path), STAGE, "no-text-field",
                         text=json.dumps(row, ensure_ascii=False, default=str)[:1 << 20],
                         file=path, at=where, field=opts.parallel_fields or opts.text_field)
    if not text.strip():
        return Reject.of(Origin(doc_id, str(url), path), STAGE, "empty-text", file=path,
                         at=where)
    # our own output rows carry a metadata object: keep it flat, not nested
    meta = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    meta.update({k: v for k, v in row.items()
                 if k not in (opts.text_field, opts.id_field, opts.url_field, "metadata",
                              *opts.parallel_fields) and _jsonable(v)})
    meta.update({"file": path, "at": where})
    return RawRecord(id=doc_id, url=str(url), source=path, kind="text", body=text, metadata=meta)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


def jsonl_records(path: str, stream: BinaryIO, gz: bool, opts: ReaderOptions,
                   stats: ReadStats) -> Iterator[RawRecord | Reject]:
    text_stream = gzip.GzipFile(fileobj=stream) if gz else stream
    lineno, offset = 0, 0
    try:
        for line in text_stream:
            lineno += 1
            here = offset
            offset += len(line)
            if not line.strip():
                continue
            stats.records += 1
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                yield Reject.of(Origin(stable_id(path, str(lineno)), "", path), STAGE, "bad-json",
                                text=preview(line), file=path, line=lineno, offset=here,
                                error=str(e)[:120])
                continue
            yield _row_record(row, path, f"line {lineno}", opts)
    except (EOFError, zlib.error, OSError) as e:
        yield file_reject(path, "truncated-gzip" if gz else "read-error", offset,
                          line=lineno, error=str(e)[:120])


def parquet_records(path: str, stream: BinaryIO, opts: ReaderOptions,
                     stats: ReadStats) -> Iterator[RawRecord | Reject]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream)
    except Exception as e:  # pyarrow raises several unrelated types for a bad footer
        yield file_reject(path, "bad-parquet", error=str(e)[:120])
        return
    row_no = 0
    for group in range(pf.num_row_groups):
        try:
            table = pf.read_row_group(group)
        except Exception as e:  # a damaged row group; the others may still be fine
            yield file_reject(path, "bad-parquet", row_group=group, error=str(e)[:120])
            continue
        for row in table.to_pylist():
            stats.records += 1
            yield _row_record(row, path, f"row {row_no}", opts)
            row_no += 1


def text_records(path: str, stream: BinaryIO, gz: bool, stats: ReadStats
                  ) -> Iterator[RawRecord | Reject]:
    """Plain UTF-8 text: one document per paragraph (blank-line separated)."""
    fh = io.TextIOWrapper(gzip.GzipFile(fileobj=stream) if gz else stream, encoding="utf-8",
                          errors="replace")
    para: list[str] = []
    start = number = 0
    for lineno, line in enumerate(fh, 1):
        if line.strip():
            if not para:
                start = lineno
            para.append(line.rstrip("\n"))
            continue
        if para:
            number += 1
            stats.records += 1
            yield RawRecord(id=stable_id(path, str(start)), url="", source=path, kind="text",
                            body="\n".join(para), metadata={"file": path, "at": f"line {start}"})
            para = []
    if para:
        stats.records += 1
        yield RawRecord(id=stable_id(path, str(start)), url="", source=path, kind="text",
                        body="\n".join(para), metadata={"file": path, "at": f"line {start}"})


def tsv_pairs(path: str, stream: BinaryIO, gz: bool, stats: ReadStats
               ) -> Iterator[RawRecord | Reject]:
    """Parallel text: ``english<TAB>chinese`` per line, each pair one document."""
    fh = io.TextIOWrapper(gzip.GzipFile(fileobj=stream) if gz else stream, encoding="utf-8",
                          errors="replace")
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        stats.records += 1
        cols = line.rstrip("\n").split("\t")
        text = _pair_text(*cols[:2]) if len(cols) >= 2 else None
        rid = stable_id(path, str(lineno))
        if text is None:
            yield Reject.of(Origin(rid, "", path), STAGE, "not-a-pair", text=line, file=path,
                            line=lineno)
            continue
        yield RawRecord(id=rid, url="", source=path, kind="text", body=text,
                        metadata={"file": path, "at": f"line {lineno}", "source_kind": "parallel"})
