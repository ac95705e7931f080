"""Reading and extending SentencePiece model files at the protobuf wire level.

The ``sentencepiece`` wheel's generated ``sentencepiece_model_pb2`` needs a newer protobuf
runtime than Apache Beam allows, so we do not use it. A ModelProto only has to be extended
(pieces appended, ``trainer_spec.vocab_size`` updated), and protobuf's wire format makes
that simple: a repeated field may be continued anywhere in the message, and the rest of
the bytes are kept exactly as they were.

ModelProto: pieces = 1 (message: piece = 1 string, score = 2 float, type = 3 enum),
trainer_spec = 2 (message: vocab_size = 4 int32), normalizer_spec = 3, ...
"""

from __future__ import annotations

import struct

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(buf: bytes):
    """(field number, wire type, raw value, start, end) for each field of a message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wt == _FIXED64:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wt == _LEN:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wt == _FIXED32:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, value, start, pos


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | _LEN) + _varint(len(payload)) + payload


def encode_piece(piece: str, score: float, kind: int) -> bytes:
    """One ``ModelProto.pieces`` entry, field tag included."""
    body = (_len_field(1, piece.encode("utf-8"))
            + _varint((2 << 3) | _FIXED32) + struct.pack("<f", score)
            + _varint((3 << 3) | _VARINT) + _varint(kind))
    return _len_field(1, body)


def read_pieces(model: bytes) -> list[tuple[str, float, int]]:
    """(piece, score, type) of every piece, in id order."""
    out = []
    for num, wt, value, _s, _e in fields(model):
        if num == 1 and wt == _LEN:
            piece, score, kind = "", 0.0, NORMAL
            for n, w, v, _a, _b in fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2 and w == _FIXED32:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            out.append((piece, score, kind))
    return out


def trainer_spec_value(model: bytes, field_no: int) -> int | None:
    """A varint field of trainer_spec (4 = vocab_size, 35 = byte_fallback, 25 = split_digits)."""
    for num, wt, value, _s, _e in fields(model):
        if num == 2 and wt == _LEN:
            for n, w, v, _a, _b in fields(value):
                if n == field_no and w == _VARINT:
                    return v
    return None


def extend(model: bytes, new_pieces: list[tuple[str, float, int]]) -> bytes:
    """The model with pieces appended and trainer_spec.vocab_size set to the new size."""
    size = len(read_pieces(model)) + len(new_pieces)
    out = bytearray()
    appended = False
    for num, wt, value, start, end in fields(model):
        if num == 2 and wt == _LEN:
            spec = bytearray()
            for n, w, v, a, b in fields(value):
                if n == 4 and w == _VARINT:
                    continue
                spec += value[a:b]
            spec += _varint((4 << 3) | _VARINT) + _varint(size)
            out += _len_field(2, bytes(spec))
        else:
            out += model[start:end]
        if num == 1 and not appended and _next_is_not_piece(model, end):
            # continue the repeated field right after the last existing piece
            out += b"".join(encode_piece(*p) for p in new_pieces)
            appended = True
    if not appended:
        out += b"".join(encode_piece(*p) for p in new_pieces)
    return bytes(out)


def _next_is_not_piece(model: bytes, pos: int) -> bool:
    if pos >= len(model):
        return True
    key, _ = _read_varint(model, pos)
    return key >> 3 != 1
