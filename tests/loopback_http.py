"""A loopback HTTP(S) server for tests that drive real clients (wget, Chromium) against answers of their own."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def serve(respond: Callable[[http.server.BaseHTTPRequestHandler], None],
          context: ssl.SSLContext | None = None) -> Iterator[int]:  # fmt: skip
    """Serve GETs on 127.0.0.1 (HTTP/1.1, Nagle off; TLS with ``context``) with ``respond(handler)``;
    yields the port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else write-write-read costs a delayed ACK per object

        def do_GET(self) -> None:
            respond(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
