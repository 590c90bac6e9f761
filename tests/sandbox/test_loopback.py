"""loopback.serve: the one way fakes listen on loopback."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler

import requests

from adperf.sandbox import loopback


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        nodelay = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        data = str(nodelay).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_served_connections_send_without_waiting_for_acks() -> None:
    # Headers and body leave in two writes; with Nagle's algorithm the body waits for the
    # client's delayed ACK (40 ms a request on Linux). Every connection must have TCP_NODELAY.
    server, thread, url = loopback.serve(_Echo, "echo")
    try:
        with requests.Session() as session:
            answers = [session.get(url + "/").text for _ in range(3)]
        assert all(int(a) != 0 for a in answers)
        assert _Echo.disable_nagle_algorithm is False  # the caller's class is left as it was
    finally:
        loopback.shutdown(server, thread)
