"""One way to run a fake endpoint: a threaded HTTP server on a free loopback port; and one way
to run a set of fakes outside the caller's process (`FakeProcess`)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any


def serve(
    handler: type[BaseHTTPRequestHandler], name: str
) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """Start `handler` on 127.0.0.1:<free port> in a daemon thread: (server, thread, base URL)."""
    # A response goes out in two writes (headers at end_headers(), then the body). With Nagle's
    # algorithm on, the body waits for the client's ACK of the headers, which the client delays
    # (delayed ACK, 40 ms on Linux): every request on a kept-alive connection then costs ~42 ms
    # instead of ~1 ms. TCP_NODELAY on the accepted socket, as a real API's server sends.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _no_nagle(handler))
    server.daemon_threads = True
    # A short poll interval makes shutdown quick; the default half second adds up in tests.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    return server, thread, f"http://{host!s}:{port}"


def _no_nagle(handler: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    """`handler` with TCP_NODELAY set on each connection (StreamRequestHandler's switch)."""
    if handler.disable_nagle_algorithm:
        return handler
    return type(handler.__name__, (handler,), {"disable_nagle_algorithm": True})


def shutdown(server: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    """Stop serving, free the port and wait for the serving thread."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)


class LoopbackFake:
    """Base of a fake HTTP endpoint: `_serve` starts its request handler on loopback, `stop()`
    frees the port. The handler reaches the fake through its `server_fake` attribute."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> str:
        """Serve `handler` (bound to this fake) on a free loopback port; return the base URL."""
        bound = type(handler.__name__, (handler,), {"server_fake": self})
        self._server, self._thread, base_url = serve(bound, name)
        return base_url

    def stop(self) -> None:
        """Stop serving and free the port."""
        shutdown(self._server, self._thread)
        self._server, self._thread = None, None


class FakeProcess:
    """Fakes served from a separate, freshly started Python process, never from the caller's.

    gRPC's server threads do not survive `fork()` ("Other threads are currently calling into
    gRPC, skipping fork() handlers"): a fake served from a process that later forks (luigi's
    workers, `--workers > 1`) can hang its children. A new interpreter (`python -m
    adperf.sandbox.loopback`, like multiprocessing's `spawn` but without re-running the
    caller's `__main__`) shares no threads with the caller. `factory(*args)` (a module-level
    function: it is pickled by name) builds the fakes there; each is started and its URL or
    endpoint sent back. A fake's method can still be called through `call` (or a `proxies()`
    stand-in), e.g. to script a restatement in a test. The process exits when told to, and by
    itself when the caller's end of the pipe closes (the caller died), so it never outlives
    the run.
    """

    def __init__(
        self, factory: Callable[..., Sequence[Any]], *args: Any, timeout: float = 600.0
    ) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._lock = threading.Lock()
        self._owner = os.getpid()
        fd = child.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "adperf.sandbox.loopback", str(fd)],
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self._conn.send((factory, args))
        reply = self._receive(timeout, "start")
        self.urls: list[str] = list(reply)

    def call(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` of the index-th fake in the serving process; return its result."""
        if os.getpid() != self._owner:
            raise RuntimeError("fakes: only the process that started them can call them")
        with self._lock:
            self._conn.send(("call", index, method, args, kwargs))
            return self._receive(60.0, f"{method}()")

    def apply(self, function: Callable[..., Any], *args: Any, timeout: float = 600.0) -> Any:
        """Run `function(fakes, *args)` in the serving process (a module-level function: it is
        pickled by name), e.g. to give running fakes a longer world without restarting them."""
        if os.getpid() != self._owner:
            raise RuntimeError("fakes: only the process that started them can call them")
        with self._lock:
            self._conn.send(("apply", function, args))
            return self._receive(timeout, f"{getattr(function, '__name__', function)}()")

    def alive(self) -> bool:
        """Whether the serving process still runs."""
        return self._proc.poll() is None

    def proxies(self) -> list[RemoteFake]:
        """One stand-in per fake whose method calls run on the fake in the serving process."""
        return [RemoteFake(self, i) for i in range(len(self.urls))]

    def stop(self) -> None:
        """Stop the fakes and the process (only from the process that started it)."""
        if os.getpid() != self._owner:
            return  # a forked child: the fakes are its parent's
        with self._lock:
            if self._proc.poll() is None:
                try:
                    self._conn.send(("stop",))
                    self._proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()  # our own child, by its pid
                    self._proc.wait(timeout=5)
            self._conn.close()

    def _receive(self, timeout: float, what: str) -> Any:
        if not self._conn.poll(timeout):
            self._proc.kill()
            raise RuntimeError(f"fakes: no answer to {what} within {timeout:.0f} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"fakes: the serving process died during {what} (exit {self._proc.poll()})"
            ) from None
        if status != "ok":
            raise RuntimeError(f"fakes: {what} failed in the serving process: {value}")
        return value


class RemoteFake:
    """Stand-in for one fake of a FakeProcess: `proxy.set_rows(df)` runs there."""

    def __init__(self, process: FakeProcess, index: int) -> None:
        self._process, self._index = process, index

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._process.call(self._index, name, *args, **kwargs)

        return method


def _serve_in_child(conn: Connection, factory: Callable[..., Sequence[Any]], args: Any) -> None:
    """The serving process: build and start the fakes, answer calls until told to stop."""
    try:
        fakes = list(factory(*args))
        urls = [fake.start() for fake in fakes]
    except Exception as exc:  # reported to the caller, which raises it with this message
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", urls))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                break  # the caller is gone: stop serving
            if message[0] == "stop":
                break
            try:
                if message[0] == "apply":
                    _, function, call_args = message
                    result = function(fakes, *call_args)
                else:
                    _, index, method, call_args, kwargs = message
                    result = getattr(fakes[index], method)(*call_args, **kwargs)
            except Exception as exc:  # the caller raises it; the fakes keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", result))
    finally:
        for fake in fakes:
            fake.stop()


if __name__ == "__main__":
    # The serving process of FakeProcess: argv[1] is its end of the pipe.
    _conn = Connection(int(sys.argv[1]))
    _factory, _args = _conn.recv()
    _serve_in_child(_conn, _factory, _args)
