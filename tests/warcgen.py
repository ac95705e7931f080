"""Builds WARC bytes by hand for tests: good records and every kind of damage."""

from __future__ import annotations

import gzip
import uuid


def http_response(body: bytes, status: str = "200 OK", headers: dict | None = None) -> bytes:
    head = {"Content-Type": "text/html; charset=utf-8", **(headers or {})}
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in head.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def record(block: bytes, wtype: str = "response", url: str | None = "http://example.com/",
           content_type: str = "application/http; msgtype=response",
           length: int | None = None, record_id: str | None = None) -> bytes:
    headers = [
        "WARC/1.0",
        f"WARC-Type: {wtype}",
        f"WARC-Record-ID: <urn:uuid:{record_id or uuid.uuid5(uuid.NAMESPACE_URL, repr((url, block)))}>",
        "WARC-Date: 2024-05-01T00:00:00Z",
    ]
    if url is not None:
        headers.append(f"WARC-Target-URI: {url}")
    headers += [f"Content-Type: {content_type}",
                f"Content-Length: {len(block) if length is None else length}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + block + b"\r\n\r\n"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


ARTICLE = (b"<html><head><title>A day at the lake</title></head><body>"
           b"<nav><a href='/'>Home</a> | <a href='/news'>News</a> | <a href='/about'>About</a></nav>"
           b"<article><h1>A day at the lake</h1>"
           + b"".join(b"<p>We walked along the shore of the lake for most of the morning, and the "
                      b"water was calm and clear, so we could see the stones on the bottom. Paragraph %d "
                      b"goes on to describe the birds, the trees and the weather in some detail.</p>" % i
                      for i in range(6))
           + b"</article><footer>Copyright 2024 Example Media. All rights reserved.</footer>"
           b"</body></html>")

ARTICLE_ZH = ("<html><head><meta http-equiv='Content-Type' content='text/html; charset=gb2312'>"
              "<title>湖边的一天</title></head><body><div>首页 | 新闻 | 体育 | 财经 | 关于我们</div>"
              "<div class='content'>"
              + "".join(f"<p>我们沿着湖边走了一个上午，湖水平静而清澈，可以看见湖底的石头。第{i}段接着描写了"
                        "湖边的鸟、树和天气，文字很长，内容也很完整，读起来很舒服。</p>" for i in range(6))
              + "</div><div>版权所有 2024 示例网</div></body></html>").encode("gbk")
