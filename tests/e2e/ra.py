"""A tiny IPv6 router-advertisement sender for the e2e namespace (run as `python ra.py IFACE`).

iPXE configures IPv6 alongside DHCPv4 and waits (~13 s) for a router advertisement before it
gives up on IPv6. This sends an RA with router lifetime 0 and neither the M nor the O flag, so
iPXE's IPv6 configuration completes at once with nothing to configure: every 0.5 s, and right
after each router solicitation. Started and killed by `tests/e2e/harness.Lab`, inside the lab's
namespace only (it refuses to run in the root namespace's interfaces by taking the name given).
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time
from pathlib import Path

ICMPV6_RS, ICMPV6_RA = 133, 134
ALL_NODES = "ff02::1"


def advertisement(mac: bytes) -> bytes:
    # type, code, checksum (kernel fills it), cur hop limit, flags (no M, no O), router lifetime 0,
    # reachable time, retrans timer; then the source link-layer address option
    return struct.pack("!BBHBBHII", ICMPV6_RA, 0, 0, 64, 0, 0, 0, 0) + struct.pack("!BB6s", 1, 1, mac)


def main(iface: str) -> int:
    mac = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))
    index = socket.if_nametoindex(iface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    with_all_routers = socket.inet_pton(socket.AF_INET6, "ff02::2") + struct.pack("@I", index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, with_all_routers)
    packet = advertisement(mac)
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now >= next_send:
            try:
                sock.sendto(packet, (ALL_NODES, 0, 0, index))
            except OSError as exc:  # no link-local address yet (no port up): try again shortly
                print(f"ra: {exc}", flush=True)
            next_send = now + 0.5
        ready, _, _ = select.select([sock], [], [], max(next_send - time.monotonic(), 0))
        if ready:
            data, _ = sock.recvfrom(2048)
            if data and data[0] == ICMPV6_RS:
                next_send = 0.0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
