import gzip
import zlib

import brotli
import pytest

from skypile.files import payload


def test_parse_response_splits_status_headers_body():
    r = payload.parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                            b"Set-Cookie: a\r\nSet-Cookie: b\r\n\r\n<p>x</p>")
    assert r.status == 404
    assert r.headers["content-type"] == "text/html"
    assert r.headers["set-cookie"] == "a, b"
    assert r.body == b"<p>x</p>"


def test_parse_response_rejects_garbage():
    with pytest.raises(payload.PayloadError) as e:
        payload.parse_response(b"\x00\x01garbage without headers")
    assert e.value.reason == "http-malformed"


def test_dechunk():
    assert payload.dechunk(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n") == b"Wikipedia "


@pytest.mark.parametrize("enc,data", [
    ("gzip", gzip.compress(b"hello " * 100)),
    ("deflate", zlib.compress(b"hello " * 100)),
    ("deflate", zlib.compress(b"hello " * 100)[2:-4]),  # raw deflate, as some servers send
    ("br", brotli.compress(b"hello " * 100)),
    ("gzip, br", brotli.compress(gzip.compress(b"hello " * 100))),
])
def test_content_encodings(enc, data):
    assert payload.decode_content(data, enc) == b"hello " * 100


@pytest.mark.parametrize("enc,compress", [("gzip", gzip.compress), ("br", brotli.compress)])
def test_decompression_bomb_is_capped(enc, compress):
    bomb = compress(b"\0" * (8 * 1024 * 1024))
    with pytest.raises(payload.PayloadError) as e:
        payload.decode_content(bomb, enc, payload.Limits(max_payload_bytes=1024 * 1024))
    assert e.value.reason == "decompression-bomb"


def test_bad_content_encoding():
    with pytest.raises(payload.PayloadError) as e:
        payload.decode_content(b"not gzip at all", "gzip")
    assert e.value.reason == "bad-content-encoding"
    with pytest.raises(payload.PayloadError) as e:
        payload.decode_content(b"x", "compress")
    assert e.value.reason == "bad-content-encoding"


def test_charset_order_header_then_meta_then_detection():
    page = "<html><head><meta charset='gbk'></head><body>中文网页，编码是国标。</body></html>"
    raw = page.encode("gbk")
    # header wins when it fits the bytes
    assert payload.decode_text(raw, "text/html; charset=gb2312")[1:] == ("gb18030", "header")
    # no header: the meta tag
    text, cs, src = payload.decode_text(raw, "text/html")
    assert (cs, src) == ("gb18030", "meta") and "中文网页" in text
    # a header that does not fit the bytes is passed over
    assert payload.decode_text(raw, "text/html; charset=utf-8")[1:] == ("gb18030", "meta")
    # neither: detection
    bare = ("<html><body>" + "这是一个没有声明编码的中文网页，内容足够长以便检测。" * 20
            + "</body></html>").encode("gbk")
    text, cs, src = payload.decode_text(bare, "")
    assert src == "detected" and "没有声明编码" in text


def test_bom_wins():
    raw = "\ufeff<p>hé</p>".encode("utf-16-le")
    raw = b"\xff\xfe" + raw[2:]
    assert payload.decode_text(raw, "text/html; charset=iso-8859-1")[2] == "bom"


def test_sniff_binary():
    assert payload.sniff_binary(b"%PDF-1.7 ...") == "application/pdf"
    assert payload.sniff_binary(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert payload.sniff_binary(bytes(range(256)) * 4) == "application/octet-stream"
    assert payload.sniff_binary("<html>普通文本</html>".encode()) is None


def test_strip_control_keeps_whitespace():
    assert payload.strip_control("a\x00b\x07c\td\ne\x1bf\x7f") == "abc\td\nef"
