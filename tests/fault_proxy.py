"""A loopback HTTP proxy in front of the S3 server that injects faults on a seeded schedule.

Each request is, by a seeded random draw: forwarded; answered ``500 InternalError``; answered
``503 SlowDown`` (S3's throttling); dropped (connection closed before any answer); or cut
halfway through the upstream answer's body (a dropped connection mid-download). Point boto3's
``endpoint_url`` at ``proxy.endpoint``. ``delay`` slows every request (to kill a sync midway).
"""

from __future__ import annotations

import http.client
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

FAULTS = ("ok", "500", "503", "drop", "cut")

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{msg}</Message><RequestId>fault</RequestId></Error>"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up on a cut answer is part of the experiment


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        seed: int = 0,
        error_rate: float = 0.0,
        weights: dict[str, float] | None = None,
        delay: float = 0.0,
    ) -> None:
        u = urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.rng = random.Random(seed)
        self.error_rate = error_rate
        self.weights = weights or {"500": 1.0, "503": 1.0, "drop": 1.0, "cut": 1.0}
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw(self) -> str:
        with self._lock:
            fault = "ok"
            if self.rng.random() < self.error_rate:
                kinds = list(self.weights)
                fault = self.rng.choices(kinds, [self.weights[k] for k in kinds])[0]
            self.counts[fault] += 1
            return fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _error(self, status: int, code: str, msg: str) -> None:
                body = _ERROR_BODY.format(code=code, msg=msg).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                if proxy.delay:
                    threading.Event().wait(proxy.delay)
                fault = proxy.draw()
                if fault == "500":
                    return self._error(500, "InternalError", "injected fault")
                if fault == "503":
                    return self._error(503, "SlowDown", "Please reduce your request rate.")
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                headers = {k: v for k, v in self.headers.items()}
                headers.pop("Transfer-Encoding", None)
                headers.pop("Expect", None)
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in (
                            "transfer-encoding",
                            "connection",
                            "content-length",
                            "server",
                            "date",
                        ):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command == "HEAD":
                        return None
                    if fault == "cut" and len(data) > 1:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.close()
                        return None
                    self.wfile.write(data)
                finally:
                    conn.close()
                return None

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
