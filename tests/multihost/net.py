"""Worker "hosts" for the multi-host test: a network namespace each, joined to this machine by a
veth pair, with its own host name (a UTS namespace); or, where namespaces cannot be made,
plain processes on loopback.

The services (luigid, the S3 server, PostgreSQL) listen on 127.0.0.1 here. A host in a
namespace reaches them at the address of its veth pair's outer end, where a relay in the test
process forwards each port to the loopback service, as a port forward on a services machine
would: every byte between a worker and a service crosses the veth link.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Host:
    """One worker host: the prefix that runs a command on it and where it reaches services."""

    name: str
    services_ip: str  # where this host reaches luigid, S3 and PostgreSQL
    prefix: list[str] = field(default_factory=list)  # argv prefix running a command there


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(argv, check=True, capture_output=True, text=True)


def namespaces_work() -> str | None:
    """None when `ip netns add` works here; else why not (e.g. no CAP_SYS_ADMIN).
    ADPERF_TEST_HOSTS=loopback asks for the loopback hosts anyway (to test that path)."""
    if os.environ.get("ADPERF_TEST_HOSTS") == "loopback":
        return "ADPERF_TEST_HOSTS=loopback"
    name = f"adperf-probe-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        return "no `ip` command (iproute2)"
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _free_subnet() -> int:
    """A third octet N with 10.231.N.0/24 unused on this machine."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    candidates = [n for n in range(1, 255) if f"10.231.{n}." not in used]
    return random.choice(candidates)


@contextlib.contextmanager
def hosts(names: list[str], ports: list[int]) -> Iterator[list[Host]]:
    """Hosts for `names`, each reaching the loopback services on `ports`; torn down after."""
    if namespaces_work() is not None:
        yield [Host(name, "127.0.0.1") for name in names]
        return
    tag = uuid.uuid4().hex[:5]
    made: list[tuple[str, str]] = []
    relays: list[Relay] = []
    out: list[Host] = []
    try:
        for i, name in enumerate(names):
            ns, outer, inner = f"adperf-{tag}-{i}", f"vh{tag}{i}", f"vn{tag}{i}"
            net = _free_subnet()
            gateway, address = f"10.231.{net}.1", f"10.231.{net}.2"
            _ip("netns", "add", ns)
            made.append((ns, outer))
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{gateway}/24", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("addr", "add", f"{address}/24", "dev", inner, ns=ns)
            _ip("link", "set", inner, "up", ns=ns)
            # The host's own loopback: the sandbox's fake APIs listen there.
            _ip("link", "set", "lo", "up", ns=ns)
            relays += [Relay(gateway, port) for port in ports]
            script = f'hostname "{name}" && exec "$@"'
            prefix = ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", script, "sh"]
            out.append(Host(name, gateway, prefix))
        yield out
    finally:
        for relay in relays:
            relay.close()
        for ns, outer in made:
            subprocess.run(["ip", "link", "del", outer], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Relay:
    """Forward TCP connections to `address:port` to 127.0.0.1:port (a thread per direction)."""

    def __init__(self, address: str, port: int) -> None:
        self.port = port
        self.server = socket.create_server((address, port))
        self.server.settimeout(0.5)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            conn.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        self.thread.join(5)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
