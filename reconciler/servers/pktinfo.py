"""IP_PKTINFO (Linux): which interface a datagram came in on and which local address it was for.

Used by the DHCP server (the interface a request came in on, to send the reply out of it) and
the TFTP server (the address a read request was sent to, for the transfer's port and the
listener's errors to answer from when it listens on every address).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("@i4s4s")  # struct in_pktinfo: ipi_ifindex, ipi_spec_dst, ipi_addr
CMSG_SPACE = socket.CMSG_SPACE(PKTINFO.size)


class Arrival(NamedTuple):
    ifindex: int
    local: str  # ipi_spec_dst: the local address the datagram is for (for a broadcast: the interface's)


def arrival(ancdata: list[tuple[int, int, bytes]]) -> Arrival | None:
    """The IP_PKTINFO of a `recvmsg` result's ancillary data, if it carries one."""
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= PKTINFO.size:
            ifindex, spec_dst, _ = PKTINFO.unpack_from(value)
            return Arrival(ifindex, socket.inet_ntoa(spec_dst))
    return None


def out_of(ifindex: int) -> list[tuple[int, int, bytes]]:
    """Ancillary data for `sendmsg`: send out of interface `ifindex`."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(ifindex, b"\0" * 4, b"\0" * 4))]


def from_address(local: str) -> list[tuple[int, int, bytes]]:
    """Ancillary data for `sendmsg`: send from the local address `local`."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, socket.inet_aton(local), b"\0" * 4))]
