"""A throwaway Ethernet segment in network namespaces for the DHCP tests and bench/dhcp.py.

No tests here. `Lab` makes a server namespace holding a bridge (10.99.0.1/24 by default) and
one namespace per extra host, each joined to the bridge by a veth pair created directly in the
namespaces (no name ever appears in the root namespace). Names carry a random suffix because
other engineers create namespaces concurrently; `close()` deletes everything it made.
`Lab.call_in(ns, fn)` runs `fn` on a thread that has entered the namespace (setns), which is
how the tests bind the DhcpServer's sockets inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check)


class Lab:
    """A bridge in a server namespace plus client namespaces attached to it."""

    def __init__(self, server_cidr: str = "10.99.0.1/24") -> None:
        self.suffix = secrets.token_hex(3)
        self.server = f"nrdhcp-{self.suffix}-s"
        self.namespaces: list[str] = []
        self._add_ns(self.server)
        self.ip(self.server, "link", "set", "lo", "up")
        self.ip(self.server, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        self.ip(self.server, "addr", "add", server_cidr, "dev", "br0")
        self.ip(self.server, "link", "set", "br0", "up")
        self.hosts: dict[str, str] = {}

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)

    def ip(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", ns, *args)

    def add_bridge(self, name: str, cidr: str) -> None:
        """Another link in the server namespace: bridge `name` with the server's address `cidr`."""
        self.ip(self.server, "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        self.ip(self.server, "addr", "add", cidr, "dev", name)
        self.ip(self.server, "link", "set", name, "up")

    def add_host(self, role: str, mac: str, cidr: str | None = None, bridge: str = "br0") -> str:
        """A namespace with `eth0` (MAC `mac`) on `bridge`; returns the namespace name."""
        ns = f"nrdhcp-{self.suffix}-{role}"
        self._add_ns(ns)
        port = f"p-{role}"[:15]
        self.ip(self.server, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.ip(self.server, "link", "set", port, "master", bridge, "up")
        self.ip(ns, "link", "set", "lo", "up")
        self.ip(ns, "link", "set", "eth0", "address", mac)
        if cidr:
            self.ip(ns, "addr", "add", cidr, "dev", "eth0")
        self.ip(ns, "link", "set", "eth0", "up")
        self.hosts[role] = ns
        return ns

    def run(self, ns: str, *cmd: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, timeout=timeout, check=check)

    def popen(self, ns: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], text=True, **kwargs)
        return proc

    def call_in(self, ns: str, fn: Callable[[], T]) -> T:
        """Run `fn` on a fresh thread inside namespace `ns`; sockets it opens live there."""
        box: dict[str, object] = {}

        def target() -> None:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                os.close(fd)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            with contextlib.suppress(Exception):
                sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
