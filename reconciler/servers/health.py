"""What a server says about its own sockets: `health() -> Health` on DhcpServer, TftpServer, HttpServer.

Read by the daemon's supervisor (daemon/supervisor.py) for `/status`, `/readyz` and the
`netboot_server_up` gauge: the state shown is what the socket says, not what was intended.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Health:
    serving: bool  # bound as needed and its thread alive
    needed: bool = True  # the served generation needs it (DHCP in mode off, or before any generation: not)
    address: str = ""  # host:port bound, or wanted while not bound
    interface: str | None = None  # the interface it is (to be) bound to, where it binds to one
    error: OSError | None = None  # the last bind error while not serving
