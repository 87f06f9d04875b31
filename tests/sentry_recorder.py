"""A stand-in for Sentry's ingest endpoint on 127.0.0.1 that records envelopes.

sentry-sdk's real HTTP transport sends to it (``SENTRY_DSN=http://key@127.0.0.1:PORT/1``),
so the tests see exactly what would reach Sentry's servers.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SentryRecorder:
    """Records every envelope item; ``events()`` returns the error events' payloads."""

    def __init__(self) -> None:
        self.items: list[tuple[dict, dict | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli

                    body = brotli.decompress(body)
                recorder._parse(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"

    def _parse(self, body: bytes) -> None:
        lines = body.split(b"\n")
        i = 1  # line 0 is the envelope header
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            header = json.loads(lines[i])
            payload = None
            if i + 1 < len(lines):
                try:
                    payload = json.loads(lines[i + 1])
                except ValueError:
                    payload = None
            self.items.append((header, payload))
            i += 2

    def events(self) -> list[dict]:
        return [p for h, p in self.items if h.get("type") == "event" and p is not None]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
