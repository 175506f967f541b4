"""IP_PKTINFO (Linux): which interface a datagram came in on and which local address it was for.

Used by the DHCP server (the interface a request came in on, to send the reply out of it, and
that interface's address, to choose the subnet of an unrelayed request) and
the TFTP server (the address a read request was sent to, for the transfer's port and the
listener's errors to answer from when it listens on every address).
"""

from __future__ import annotations

import socket
import struct

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("@i4s4s")  # struct in_pktinfo: ipi_ifindex, ipi_spec_dst, ipi_addr
CMSG_SPACE = socket.CMSG_SPACE(PKTINFO.size)


def _find(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, bytes] | None:
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= PKTINFO.size:
            ifindex, spec_dst, _ = PKTINFO.unpack_from(value)
            return ifindex, spec_dst
    return None


def arrival(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int]:
    """(interface index, local address as an integer) a `recvmsg` result came in on; (0, 0) when
    not known. For a broadcast the address is the receiving interface's own (ipi_spec_dst), so
    DHCP learns the link of an unrelayed request. On DHCP's per-packet path."""
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= PKTINFO.size:
            ifindex, spec_dst, _ = PKTINFO.unpack_from(value)
            return ifindex, int.from_bytes(spec_dst, "big")
    return 0, 0


def local_address_of(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """The local address a `recvmsg` result was for (ipi_spec_dst; for a broadcast, the
    interface's), if its ancillary data says."""
    found = _find(ancdata)
    return socket.inet_ntoa(found[1]) if found is not None else None


def out_of(ifindex: int) -> list[tuple[int, int, bytes]]:
    """Ancillary data for `sendmsg`: send out of interface `ifindex`."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(ifindex, b"\0" * 4, b"\0" * 4))]


def from_address(local: str) -> list[tuple[int, int, bytes]]:
    """Ancillary data for `sendmsg`: send from the local address `local`."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, socket.inet_aton(local), b"\0" * 4))]
