"""A server's bind error, said so the operator knows what to change.

Called by the supervisor (daemon/supervisor.py) for the `/status` message and the log line:
EACCES names the port and CAP_NET_BIND_SERVICE; ENODEV the interface and those that exist;
EADDRINUSE the process holding the port, found as `ss -p` finds it (the socket's inode in
/proc/net/{udp,tcp}, then the /proc/<pid>/fd link to it; a process we may not inspect stays
unnamed).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

PROC = Path("/proc")


def explain(name: str, address: str, interface: str | None, exc: OSError) -> str:
    """`dhcp on 0.0.0.0:67 interface eth9: [Errno 19] No such device: <what to change>`."""
    where = f"{name} on {address}" + (f" interface {interface}" if interface else "")
    text = exc.strerror or str(exc)
    host, _, port_text = address.rpartition(":")
    port = int(port_text) if port_text.isdigit() else 0
    option = f"--{name}-listen"
    if exc.errno in (errno.EACCES, errno.EPERM):
        if port and port < 1024:
            hint = (f"port {port} is privileged: run with CAP_NET_BIND_SERVICE (systemd: "
                    f"AmbientCapabilities=CAP_NET_BIND_SERVICE) or as root, or choose {option} with a port >= 1024")
        else:
            hint = "permission denied binding the socket (binding to an interface needs CAP_NET_RAW)"
        return f"{where}: {text}: {hint}"
    if exc.errno == errno.ENODEV:
        names = ", ".join(sorted(n for _, n in socket.if_nameindex())) or "none"
        return (f"{where}: {text}: interface {interface!r} does not exist here (interfaces: {names}); "
                "fix dhcp.interface in netboot.yaml or --dhcp-interface")
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port, udp=name != "http") if port else None
        who = f"held by {holder}" if holder else f"held by another socket (`ss -lpn sport = :{port}` names it)"
        return f"{where}: {text}: {address} is in use, {who}; stop it or choose another {option}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {text}: {host} is not an address of this host; fix {option}"
    return f"{where}: {text}"


def port_holder(port: int, *, udp: bool) -> str | None:
    """`pid 1234 (dnsmasq)` of a process with a socket bound to local `port`, or None."""
    inodes: set[str] = set()
    for table in ("udp", "udp6") if udp else ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rpartition(":")[2], 16) == port and fields[9] != "0":
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    comm = (pid_dir / "comm").read_text().strip()
                    return f"pid {pid_dir.name} ({comm})"
        except OSError:
            continue
    return None
