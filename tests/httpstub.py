"""A loopback HTTP server that gives every GET the same answer and records what was asked: the report
endpoint a test kernel calls, a remote file with hostile content.  Import it as ``httpstub`` (``tests/``
is on ``sys.path``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Stub:
    port: int
    paths: list[str] = field(default_factory=list)  # each GET's path, query included, in order

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@contextlib.contextmanager
def answering(body: bytes) -> Iterator[Stub]:
    """Serve ``body`` (200) to every GET on 127.0.0.1, on a port the kernel picks, until the block ends."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield Stub(server.server_address[1], paths)
    finally:
        server.shutdown()
        server.server_close()
