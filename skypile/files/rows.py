"""Row formats: JSONL (plain, .gz, .zst), Parquet, plain text and tab-separated pairs; one
row is one record, a bad row is a reject and reading goes on.

Hostile rows (README, "Hostile input"): a row over ``read.max_record_bytes`` is a
``read:too-large`` reject, skipped without being held; invalid Unicode (lone surrogates,
bytes that are not UTF-8) and NaN / Infinity are repaired, and every repair is counted in
the record's ``metadata["repaired"]``; ids are always strings.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import re
import zlib
from typing import Any, BinaryIO, Iterator

from skypile.document import Origin, Reject, json_safe, stable_id
from skypile.files.records import (STAGE, FileRange, RawRecord, ReaderOptions, ReadStats,
                                   file_reject)
from skypile.text.chars import preview

_SKIP_CHUNK = 1 << 20  # what is read at a time while the rest of an oversized line is skipped
_PARQUET_BATCH_ROWS = 64  # rows decoded at a time: a row group is never materialised whole
_REPLACEMENT_UTF8 = "\ufffd".encode("utf-8")


def _pair_text(first, second) -> str | None:
    if isinstance(first, str) and isinstance(second, str) and first.strip() and second.strip():
        return f"{first.strip()}\n{second.strip()}"
    return None


# ---- repairs ----------------------------------------------------------------------------

_PLAIN = (str, int, bool, type(None))
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A JSON escape of a surrogate code point: the only way a line decoded as UTF-8 can
parse to a string that is not valid Unicode."""
_LENIENT_JSON = json.JSONDecoder(strict=False)
"""strict=False: raw control characters inside strings are kept, not a reject (one
decoder for every line: ``json.loads`` with an option builds a new one per call)."""


def _repair(row: dict, fixed: dict, strings_valid: bool = False) -> dict:
    """The row as strict JSON data; per field, what :func:`json_safe` changed goes to
    ``fixed`` ({kind: {field: n}}), so the record can say exactly what was repaired.

    ``strings_valid``: the row was parsed from a JSON line without a surrogate escape,
    so its keys and strings are valid Unicode; its flat values, and objects of flat
    values, are then taken as they are, without a scan of every text (floats, lists and
    deeper objects are still checked)."""
    out = {}
    for key, value in row.items():
        if strings_valid and (type(value) in _PLAIN or type(value) is dict
                              and all(type(v) in _PLAIN for v in value.values())):
            out[key] = value  # a flat object (our own metadata) of plain values: strict already
            continue
        fixes: collections.Counter = collections.Counter()
        key = json_safe(key if isinstance(key, str) else str(key), fixes)
        # one level is the row itself; metadata keeps MAX_DEPTH levels below the record
        out[key] = json_safe(value, fixes, depth=1 if key == "metadata" else 0)
        for kind, n in fixes.items():
            fixed.setdefault(kind, {})[key] = fixed.get(kind, {}).get(key, 0) + n
    return out


def _doc_id(raw: Any, path: str, where: str, fixed: dict) -> str:
    """Ids are strings. A missing, empty or NaN id is a stable id of the file and row; so
    is an id that is neither a string nor a number (kept in ``repaired.bad_id``)."""
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, float):  # finite: json_safe made NaN / Infinity null
        return repr(raw)
    if raw not in (None, ""):
        fixed["bad_id"] = raw
    return stable_id(path, where)


def _row_record(row: dict, path: str, where: str, opts: ReaderOptions,
                fixed: dict | None = None, strings_valid: bool = False) -> RawRecord | Reject:
    fixed = dict(fixed or {})
    row = _repair(row, fixed, strings_valid)
    if opts.parallel_fields:
        a, b = opts.parallel_fields[:2]
        text = _pair_text(row.get(a), row.get(b))
        row = {**row, "source_kind": "parallel"}
    else:
        text = row.get(opts.text_field)
    doc_id = _doc_id(row.get(opts.id_field), path, where, fixed)
    url = row.get(opts.url_field)
    if url is not None and not isinstance(url, str):
        fixed["bad_url"] = url
    url = url if isinstance(url, str) else ""
    if not isinstance(text, str):
        return Reject.of(Origin(doc_id, url, path), STAGE, "no-text-field",
                         text=json.dumps(row, ensure_ascii=False)[:1 << 20],
                         file=path, at=where, field=opts.parallel_fields or opts.text_field)
    if not text.strip():
        return Reject.of(Origin(doc_id, url, path), STAGE, "empty-text", file=path, at=where)
    # our own output rows carry a metadata object: keep it flat, not nested
    meta = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    meta.update({k: v for k, v in row.items()
                 if k not in (opts.text_field, opts.id_field, opts.url_field, "metadata",
                              *opts.parallel_fields)})
    meta.update({"file": path, "at": where})
    if fixed:
        earlier = meta.get("repaired") if isinstance(meta.get("repaired"), dict) else {}
        meta["repaired"] = {**earlier, **fixed}
    return RawRecord(id=doc_id, url=url, source=path, kind="text", body=text, metadata=meta)


# ---- lines, bounded ---------------------------------------------------------------------

def _ends_line(chunk: bytes | str) -> bool:
    return chunk[-1:] in (b"\n", "\n")


def bounded_lines(fh, limit: int, lineno: int = 0, offset: int = 0, end: int | None = None
                  ) -> Iterator[tuple[int, int, bytes | str, int]]:
    """(line number, offset, line, size) for each line of ``fh`` (bytes or text), counted
    from ``lineno`` lines before, at ``offset``, up to the line that starts at ``end``.

    Never holds more than ``limit + 1`` units of a line: a longer line comes as its first
    ``limit + 1`` units with its full ``size`` (newline excluded), the rest read past in
    chunks. The caller rejects ``size > limit``.
    """
    while end is None or offset < end:
        line = fh.readline(limit + 1)
        if not line:
            return
        lineno += 1
        size, tail = len(line), line
        while not _ends_line(tail) and size > limit:
            tail = fh.readline(_SKIP_CHUNK)
            if not tail:
                break
            size += len(tail)
        yield lineno, offset, line, size - (1 if _ends_line(tail) else 0)
        offset += size


def _too_large(path: str, lineno: int, offset: int, head, size: int, cap: int) -> Reject:
    return Reject.of(Origin(stable_id(path, str(lineno)), "", path), STAGE, "too-large",
                     text=preview(head[:min(cap, 4096)]), file=path, line=lineno,
                     offset=offset, bytes=size, cap=cap)


def _decode(line: bytes) -> tuple[str, int]:
    """UTF-8 text of a line, and how many invalid byte sequences became U+FFFD."""
    try:
        return line.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        return text, text.count("\ufffd") - line.count(_REPLACEMENT_UTF8)


def _parse_line(line: bytes, lineno: int) -> tuple[dict, dict, bool]:
    """The JSON object of one line, the repairs made decoding it, and whether its
    strings are known to be valid Unicode (no surrogate escape in the line); ValueError
    if there is no object."""
    text, bad = _decode(line)
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    try:
        row = _LENIENT_JSON.decode(text)
    except RecursionError:
        raise ValueError("nested too deep to parse") from None
    if not isinstance(row, dict):
        raise ValueError("not an object")
    return (row, ({"invalid_utf8": {"line": bad}} if bad else {}),
            not _SURROGATE_ESCAPE.search(text))


def jsonl_records(path: str, stream: BinaryIO, gz: bool, opts: ReaderOptions,
                   stats: ReadStats, span: FileRange | None = None
                   ) -> Iterator[RawRecord | Reject]:
    """The rows of a JSONL file, or of the lines of ``span`` (a plain file's range)."""
    fh = gzip.GzipFile(fileobj=stream) if gz else stream
    cap = opts.max_record_bytes
    lineno = offset = 0
    end = None
    if span is not None:
        fh.seek(span.start)
        lineno, offset, end = span.line - 1, span.start, span.end
    try:
        for lineno, offset, line, size in bounded_lines(fh, cap, lineno, offset, end):
            if size > cap:
                stats.records += 1
                yield _too_large(path, lineno, offset, line, size, cap)
                continue
            if not line.strip():
                continue
            stats.records += 1
            try:
                row, fixed, strings_valid = _parse_line(line, lineno)
            except ValueError as e:
                yield Reject.of(Origin(stable_id(path, str(lineno)), "", path), STAGE, "bad-json",
                                text=preview(line), file=path, line=lineno, offset=offset,
                                error=str(e)[:120])
                continue
            yield _row_record(row, path, f"line {lineno}", opts, fixed, strings_valid)
    except (EOFError, zlib.error, OSError) as e:
        yield file_reject(path, "truncated-gzip" if gz else "read-error", offset,
                          line=lineno, error=str(e)[:120])


# ---- Parquet ----------------------------------------------------------------------------

def _batch_rows(batch) -> list[tuple[dict, dict] | Exception]:
    """A record batch as (row, repairs) pairs. String columns that are not valid UTF-8
    are decoded with U+FFFD for the bad bytes (``{"invalid_utf8": {column: n}}``); a row
    whose nested column is still not UTF-8 comes as the error, for a reject."""
    import pyarrow as pa

    try:
        return [(row, {}) for row in batch.to_pylist()]
    except UnicodeDecodeError:
        pass
    columns: dict[str, list] = {}
    fixes: list[dict] = [{} for _ in range(batch.num_rows)]
    for name, col in zip(batch.schema.names, batch.columns):
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            columns[name] = [_value(col, i) for i in range(batch.num_rows)]
            continue
        columns[name] = []
        for i, raw in enumerate(col.cast(pa.large_binary()).to_pylist()):
            text, n = _decode(raw) if raw is not None else (None, 0)
            if n:
                fixes[i].setdefault("invalid_utf8", {})[name] = n
            columns[name].append(text)
    out: list[tuple[dict, dict] | Exception] = []
    for i in range(batch.num_rows):
        bad = next((v for v in (c[i] for c in columns.values()) if isinstance(v, Exception)), None)
        out.append(bad or ({name: c[i] for name, c in columns.items()}, fixes[i]))
    return out


def _value(col, i: int) -> Any:
    try:
        return col[i].as_py()
    except UnicodeDecodeError as e:
        return e


def _parquet_batch(batch, path: str, first_row: int, opts: ReaderOptions,
                   stats: ReadStats) -> Iterator[RawRecord | Reject]:
    """The records of one batch; a row over the size cap is a reject, not a Python object."""
    cap = opts.max_record_bytes
    sizes = ([batch.slice(i, 1).nbytes for i in range(batch.num_rows)]
             if batch.nbytes > cap else [0] * batch.num_rows)
    small = [i for i, n in enumerate(sizes) if n <= cap]
    rows = dict(zip(small, _batch_rows(batch.take(small) if len(small) < len(sizes) else batch)))
    for i, size in enumerate(sizes):
        stats.records += 1
        where = f"row {first_row + i}"
        origin = Origin(stable_id(path, where), "", path)
        row = rows.get(i)
        if row is None:
            yield Reject.of(origin, STAGE, "too-large", file=path, at=where, bytes=size, cap=cap)
        elif isinstance(row, Exception):
            yield Reject.of(origin, STAGE, "bad-utf8", file=path, at=where, error=str(row)[:120])
        else:
            yield _row_record(row[0], path, where, opts, row[1])


def parquet_records(path: str, stream: BinaryIO, opts: ReaderOptions,
                     stats: ReadStats) -> Iterator[RawRecord | Reject]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream, buffer_size=1 << 20)
    except Exception as e:  # pyarrow raises several unrelated types for a bad footer
        yield file_reject(path, "bad-parquet", error=str(e)[:120])
        return
    row_no = 0
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        done = 0
        batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[group])
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:  # a damaged row group; the others may still be fine
                yield file_reject(path, "bad-parquet", row_group=group, rows=rows - done,
                                  first_row=row_no + done, error=str(e)[:120])
                break
            if batch is None:
                break
            yield from _parquet_batch(batch, path, row_no + done, opts, stats)
            done += batch.num_rows
        row_no += rows


# ---- plain text and pairs ---------------------------------------------------------------

def _text_lines(path: str, stream: BinaryIO, gz: bool, cap: int):
    fh = io.TextIOWrapper(gzip.GzipFile(fileobj=stream) if gz else stream, encoding="utf-8-sig",
                          errors="replace")
    return bounded_lines(fh, cap)


def text_records(path: str, stream: BinaryIO, gz: bool, stats: ReadStats,
                 opts: ReaderOptions | None = None) -> Iterator[RawRecord | Reject]:
    """Plain UTF-8 text: one document per paragraph (blank-line separated); a paragraph
    over ``max_record_bytes`` characters is a ``read:too-large`` reject, not held."""
    cap = (opts or ReaderOptions()).max_record_bytes
    para: list[str] = []
    start = size = 0
    first = ""
    for lineno, _offset, line, n in _text_lines(path, stream, gz, cap):
        if line.strip():
            if not size:
                start, first = lineno, line
            size += n + 1  # with the newline that joins it to the next line
            if size - 1 <= cap:
                para.append(line.rstrip("\n"))
            else:  # over the cap: the rest of the paragraph is only counted
                para = []
            continue
        yield from _paragraph(path, start, para, size, cap, stats, first)
        para, size = [], 0
    yield from _paragraph(path, start, para, size, cap, stats, first)


def _paragraph(path: str, start: int, para: list[str], size: int, cap: int,
               stats: ReadStats, first: str) -> Iterator[RawRecord | Reject]:
    if not size:
        return
    stats.records += 1
    rid = stable_id(path, str(start))
    if size - 1 > cap:
        yield Reject.of(Origin(rid, "", path), STAGE, "too-large", text=preview(first[:4096]),
                        file=path, line=start, bytes=size - 1, cap=cap)
        return
    yield RawRecord(id=rid, url="", source=path, kind="text", body="\n".join(para),
                    metadata={"file": path, "at": f"line {start}"})


def tsv_pairs(path: str, stream: BinaryIO, gz: bool, stats: ReadStats,
              opts: ReaderOptions | None = None) -> Iterator[RawRecord | Reject]:
    """Parallel text: ``english<TAB>chinese`` per line, each pair one document."""
    cap = (opts or ReaderOptions()).max_record_bytes
    for lineno, offset, line, size in _text_lines(path, stream, gz, cap):
        if not line.strip():
            continue
        stats.records += 1
        rid = stable_id(path, str(lineno))
        if size > cap:
            yield Reject.of(Origin(rid, "", path), STAGE, "too-large", text=preview(line[:4096]),
                            file=path, line=lineno, bytes=size, cap=cap)
            continue
        cols = line.rstrip("\n").split("\t")
        text = _pair_text(*cols[:2]) if len(cols) >= 2 else None
        if text is None:
            yield Reject.of(Origin(rid, "", path), STAGE, "not-a-pair", text=line, file=path,
                            line=lineno)
            continue
        yield RawRecord(id=rid, url="", source=path, kind="text", body=text,
                        metadata={"file": path, "at": f"line {lineno}", "source_kind": "parallel"})
