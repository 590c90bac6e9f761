"""One way to run a fake endpoint: a threaded HTTP server on a free loopback port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(
    handler: type[BaseHTTPRequestHandler], name: str
) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """Start `handler` on 127.0.0.1:<free port> in a daemon thread: (server, thread, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # A short poll interval makes shutdown quick; the default half second adds up in tests.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    return server, thread, f"http://{host!s}:{port}"


def shutdown(server: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    """Stop serving, free the port and wait for the serving thread."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)
