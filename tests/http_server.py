"""A static file server on 127.0.0.1 for remote-scene and checkpoint-download tests: honours HTTP
Range requests (as object stores, COG hosts and model-release hosts do), logs what it serves, and
can misbehave on purpose (fail, cut a download short, ignore Range).

Started in a thread on a random port; nothing leaves the loopback interface.
"""
from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class ServerLog:
    """What the server did: requests seen (``heads`` of them HEAD) and the headers of each,
    body bytes sent per file name, and the ``Range`` header of each GET in order (``None`` for
    a GET without one)."""

    requests: int = 0
    heads: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    failures_injected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, name: str) -> int:
        return self.bytes_sent.get(name, 0)


class RangeServer:
    """Serve the files of ``root`` at ``http://127.0.0.1:PORT/<run>/<name>``.

    ``<run>`` differs per server, so a port reused by a later server is a new URL to GDAL (whose
    per-process cache of remote files would otherwise serve the old server's bytes).

    ``fail_every``: every n-th GET fails, as ``fail_mode`` says: ``"close"`` drops the
    connection without an answer, ``"503"`` answers Service Unavailable. ``status``: file name ->
    HTTP status to answer instead of the file (404, 403). ``tokens``: file name -> query string
    the request must carry (a signed URL), else 403.

    ``honour_range=False``: a server that ignores Range, answering 200 with the whole file (and
    no ``Accept-Ranges``). A Range starting past the end is answered 416 with
    ``Content-Range: bytes */size``. ``cut_after``: drop the connection once after that many body
    bytes of the next GET (a download interrupted midway), then back to ``None``; an attribute,
    so a test can set it on a running server.

    ``validators``: send ``ETag`` and ``Last-Modified`` with each file, as web servers do, the
    ETag made of the file's size and modification time (nginx's recipe), so a file replaced in
    ``root`` gets a new one; ``False``: a server that sends neither (``Content-Length`` still
    goes out). ``head_status``: answer every HEAD with that status (403 as presigned S3 URLs
    signed for GET do, 405). ``required_headers``: header name -> value each request must carry
    (a token header), else 403. All three are attributes a test may change on a running server.
    ``redirects``: file name -> URL to answer ``302 Found`` with.
    """

    def __init__(self, root: str | os.PathLike, fail_every: int = 0, fail_mode: str = "close",
                 status: dict[str, int] | None = None, tokens: dict[str, str] | None = None,
                 honour_range: bool = True, cut_after: int | None = None, validators: bool = True,
                 head_status: int | None = None, required_headers: dict[str, str] | None = None,
                 redirects: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.validators = validators
        self.head_status = head_status
        self.required_headers = dict(required_headers or {})
        self.redirects = dict(redirects or {})
        self.honour_range = honour_range
        self.cut_after = cut_after
        self.fail_every = fail_every
        self.fail_mode = fail_mode
        self.status = dict(status or {})
        self.tokens = dict(tokens or {})
        self.log = ServerLog()
        self.run = uuid.uuid4().hex[:12]
        self._gets = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                server._answer(self, head=True)

            def do_GET(self) -> None:
                server._answer(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{self.run}"

    def __enter__(self) -> "RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path, _, query = handler.path.partition("?")
        run, _, name = path.lstrip("/").partition("/")
        if run != self.run:
            name = ""  # answered 404 below
        with self.log.lock:
            self.log.requests += 1
            self.log.heads += head
            self.log.headers.append(dict(handler.headers.items()))
            if not head:
                self._gets += 1
                self.log.ranges.append(handler.headers.get("Range"))
            inject = bool(self.fail_every) and not head and self._gets % self.fail_every == 0
            if inject:
                self.log.failures_injected += 1
        if inject:
            if self.fail_mode == "close":
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            return self._empty(handler, 503)
        if name in self.redirects:
            return self._empty(handler, 302, {"Location": self.redirects[name]})
        if head and self.head_status is not None:
            return self._empty(handler, self.head_status)
        if name in self.status:
            return self._empty(handler, self.status[name])
        if any(handler.headers.get(k) != v for k, v in self.required_headers.items()):
            return self._empty(handler, 403)
        if name in self.tokens and query != self.tokens[name]:
            return self._empty(handler, 403)
        file = self.root / name
        if not name or not file.is_file():
            return self._empty(handler, 404)
        stat = file.stat()
        size = stat.st_size
        validators = {"ETag": f'"{size:x}-{stat.st_mtime_ns:x}"',
                      "Last-Modified": formatdate(stat.st_mtime, usegmt=True)} if self.validators else {}
        start, end, code = 0, size - 1, 200
        match = _RANGE.match(handler.headers.get("Range", "")) if self.honour_range else None
        if match:
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:  # a suffix range: the last N bytes
                start = max(0, size - int(last))
            if start >= size:
                return self._empty(handler, 416, {"Content-Range": f"bytes */{size}", **validators})
            code = 206
        length = end - start + 1
        body = b""
        if not head:
            with open(file, "rb") as f:
                f.seek(start)
                body = f.read(length)
            with self.log.lock:
                cut, self.cut_after = self.cut_after, None
                if cut is not None:  # fewer bytes than Content-Length said, then hang up
                    body = body[:cut]
                    handler.close_connection = True
                # Counted before the status line goes out: a client may act on the headers
                # alone (a one-byte GET read for its Content-Range) and close before the body,
                # and the test asserting on the log must find this GET counted all the same.
                self.log.bytes_sent[name] = self.log.bytes_sent.get(name, 0) + len(body)
        handler.send_response(code)
        handler.send_header("Content-Length", str(length))
        if self.honour_range:
            handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        for key, value in validators.items():
            handler.send_header(key, value)
        if code == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    @staticmethod
    def _empty(handler: BaseHTTPRequestHandler, code: int,
               headers: dict[str, str] | None = None) -> None:
        handler.send_response(code)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
