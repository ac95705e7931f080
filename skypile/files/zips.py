"""Zip archives of source code, read in place with every member's size bounded.

A zip's headers are written by whoever made it: the declared sizes may lie (a zip bomb
says 1 KB and inflates to gigabytes) and the names may be flagged UTF-8 and not be,
which Python's zipfile refuses outright. So member data is inflated by our own loop,
one bounded step at a time per compression method, never further than the cap; the
headers only say how much compressed data there is. When zipfile refuses a name, a
small reader of the central directory keeps the name as bytes instead of losing the
whole archive. Links and devices are counted, never opened.
"""

from __future__ import annotations

import bz2
import io
import lzma
import stat
import struct
import zipfile
import zlib
from typing import Iterator

from skypile.document import Reject
from skypile.files.members import (Budget, CodeReadOptions, archive_member, file_reject,
                                   member_reject, refuse_member, repo_name)
from skypile.files.readers import RawRecord, ReadStats

_CHUNK = 1 << 16
_UTF8_FLAG = 0x800
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, ValueError,
               struct.error)


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name, undecodable bytes as lone surrogates (as tar and os give them).

    A name without the UTF-8 flag is often UTF-8 all the same (many tools never set it);
    bytes that are not are kept as bytes (``\\xNN`` once printable), never read as cp437.
    """
    if info.flag_bits & _UTF8_FLAG:
        return info.filename
    return info.filename.encode("cp437").decode("utf-8", "surrogateescape")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.is_dir():
        return "dir"
    fmt = stat.S_IFMT(info.external_attr >> 16)
    if fmt in (0, stat.S_IFREG):  # 0: no Unix mode (DOS, Windows)
        return "file"
    if fmt == stat.S_IFDIR:
        return "dir"
    return "link" if fmt == stat.S_IFLNK else "device"


def _central_directory(raw) -> list[zipfile.ZipInfo]:
    """The members of a zip whose names Python's zipfile refuses (flagged UTF-8, not UTF-8).

    A plain reading of the end record and the central directory (no zip64): names are
    kept as bytes (lone surrogates), the rest is what zipfile would give.
    """
    raw.seek(0, io.SEEK_END)
    size = raw.tell()
    raw.seek(max(0, size - 65557))
    tail = raw.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise zipfile.BadZipFile("no end of central directory")
    *_, count, cd_size, cd_offset, _comment = struct.unpack("<4s4H2LH", tail[at:at + 22])
    start = size - len(tail) + at - cd_size
    raw.seek(start)
    cd, infos, pos = raw.read(cd_size), [], 0
    for _ in range(count):
        f = struct.unpack(zipfile.structCentralDir, cd[pos:pos + 46])
        if f[0] != b"PK\x01\x02":
            raise zipfile.BadZipFile("bad central directory entry")
        name = cd[pos + 46:pos + 46 + f[12]].split(b"\0", 1)[0]
        info = zipfile.ZipInfo(name.decode("utf-8", "surrogateescape"))
        (info.flag_bits, info.compress_type, info.CRC, info.compress_size, info.file_size,
         info.external_attr) = f[5], f[6], f[9], f[10], f[11], f[17]
        info.flag_bits |= _UTF8_FLAG  # the name is already decoded
        info.header_offset = f[18] + start - cd_offset  # data prepended to the zip
        infos.append(info)
        pos += 46 + f[12] + f[13] + f[14]
    return infos


def _zip_infos(raw) -> list[zipfile.ZipInfo]:
    try:
        return zipfile.ZipFile(raw).infolist()
    except UnicodeDecodeError:
        return _central_directory(raw)


class _Stored:
    """Stored (uncompressed) data, with the decompressors' interface."""

    eof = False

    @staticmethod
    def decompress(data: bytes, max_length: int) -> bytes:
        return data[:max_length]


def _decompressor(info: zipfile.ZipInfo, raw, limit: int):
    """(decompressor, bytes of compressed data it took from ``raw`` already)."""
    kind = info.compress_type
    if kind == zipfile.ZIP_STORED:
        return _Stored(), 0
    if kind == zipfile.ZIP_DEFLATED:
        return zlib.decompressobj(-15), 0
    if kind == zipfile.ZIP_BZIP2:
        return bz2.BZ2Decompressor(), 0
    if kind == zipfile.ZIP_LZMA:  # version (2), properties size (2), LZMA1 properties
        _version, n = struct.unpack("<HH", raw.read(4))
        props = raw.read(n)
        if n < 5 or len(props) < 5:
            raise zipfile.BadZipFile("bad LZMA properties")
        d = props[0]
        # a dictionary larger than what we will ever decode is never needed
        dict_size = max(4096, min(int.from_bytes(props[1:5], "little"), limit))
        filt = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": d % 9,
                "lp": d // 9 % 5, "pb": d // 45}
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]), 4 + n
    raise NotImplementedError(f"compression method {kind}")


def _zip_data(raw, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most ``limit`` bytes of a member, inflated in bounded steps: the sizes in its
    headers decide nothing but how much compressed data there is to read."""
    raw.seek(info.header_offset)
    head = raw.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("no local file header")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    raw.seek(info.header_offset + 30 + name_len + extra_len)
    dec, used = _decompressor(info, raw, limit)
    left, out = info.compress_size - used, bytearray()
    while left > 0 and len(out) < limit and not dec.eof:
        chunk = raw.read(min(_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        out += dec.decompress(chunk, limit - len(out))
    return bytes(out)


def _zip_member(repo: str, name: str, info: zipfile.ZipInfo, raw, path: str,
                opts: CodeReadOptions) -> tuple[RawRecord | Reject, int]:
    """One zip member's record or reject, and the bytes it took from the archive budget."""
    if info.flag_bits & 0x1:
        return member_reject(repo, name, path, "encrypted"), 0
    try:
        data = _zip_data(raw, info, opts.max_file_bytes + 1)
    except NotImplementedError as e:
        return member_reject(repo, name, path, "unsupported-compression", error=str(e)), 0
    except _ZIP_ERRORS as e:
        return member_reject(repo, name, path, "damaged-member", error=str(e)[:120]), 0
    if len(data) <= opts.max_file_bytes and (len(data) != info.file_size
                                             or zlib.crc32(data) != info.CRC):
        return member_reject(repo, name, path, "damaged-member", bytes_read=len(data),
                             error="size or CRC differs from the header"), len(data)
    return archive_member(repo, name, data, path, opts), len(data)


def zip_members(path: str, raw, opts: CodeReadOptions,
                stats: ReadStats) -> Iterator[RawRecord | Reject]:
    """The files of the zip in ``raw`` (a seekable binary file), read from ``path``."""
    repo = repo_name(path)
    try:
        infos = _zip_infos(raw)
    except (*_ZIP_ERRORS, UnicodeDecodeError) as e:
        yield file_reject(path, "bad-archive", error=str(e)[:120])
        return
    budget = Budget(opts.max_archive_bytes)
    for info in infos:
        kind = _zip_kind(info)
        if kind != "file":
            if kind != "dir":  # folders are not records; links and devices are skipped
                stats.skip(kind)
            continue
        name = _zip_name(info)
        refused = refuse_member(repo, name, info.file_size, path, opts)
        if refused:
            yield refused
            continue
        item, spent = _zip_member(repo, name, info, raw, path, opts)
        if not budget.spend(spent):
            yield file_reject(path, "archive-too-large", cap=opts.max_archive_bytes)
            return
        yield item
