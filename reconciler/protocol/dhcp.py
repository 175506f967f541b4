"""DHCPv4 wire codec: RFC 2131/2132 messages and the options netbooting needs; no sockets.

Called by `protocol.dhcp_decide` (which reads decoded messages and builds replies) and by
`servers.dhcp` (which turns datagrams into `DhcpMessage` values with `decode` and replies back
into bytes with `encode`). Like h11, this module does no I/O: bytes in, values out.

Covered: the fixed BOOTP header; options with RFC 3396 concatenation of repeated codes; option
overload (52) into `file`/`sname`; RFC 3004 user class (77) and the raw single-string form iPXE
and udhcpc really send; RFC 4578 client system architecture (93), NDI (94) and UUID (97); iPXE's
encapsulated options (175); relay agent information (82, RFC 3046: kept as opaque bytes so the
decider can echo it unchanged); client identifier (61).

`decode` never raises: any byte string becomes a `DhcpMessage` or a `Rejected` saying why.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import NamedTuple

# --- message types (option 53) ---
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8

MESSAGE_NAMES: Mapping[int, str] = {
    DISCOVER: "DISCOVER",
    OFFER: "OFFER",
    REQUEST: "REQUEST",
    DECLINE: "DECLINE",
    ACK: "ACK",
    NAK: "NAK",
    RELEASE: "RELEASE",
    INFORM: "INFORM",
}

BOOTREQUEST = 1
BOOTREPLY = 2

# --- option codes ---
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTERS = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN_NAME = 15
OPT_BROADCAST = 28
OPT_VENDOR_SPECIFIC = 43
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_REQUEST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_RENEWAL_T1 = 58
OPT_REBINDING_T2 = 59
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_TFTP_SERVER = 66
OPT_BOOTFILE = 67
OPT_USER_CLASS = 77
OPT_RELAY_AGENT = 82
OPT_CLIENT_ARCH = 93
OPT_CLIENT_NDI = 94
OPT_CLIENT_UUID = 97
OPT_IPXE_ENCAP = 175
OPT_END = 255

IPXE_NO_PXEDHCP = 176  # 175.176 = 1: iPXE skips its ProxyDHCP wait

MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_LEN = HEADER.size  # 236
MIN_PACKET = 300  # BOOTP minimum; some relays and old firmware drop shorter replies
# RFC 2131 §2: a client takes a 576-byte IP datagram unless it says more in option 57 (RFC 2132
# §9.10, counted with the IP and UDP headers, as ISC dhcpd and dnsmasq count it); never more than
# an Ethernet frame holds.
MIN_DATAGRAM = 576
MAX_DATAGRAM = 1500
IP_UDP_HEADERS = 28
DEFAULT_REPLY_LIMIT = MIN_DATAGRAM - IP_UDP_HEADERS  # 548
FLAG_BROADCAST = 0x8000
ZERO_IP = IPv4Address(0)


@dataclass(frozen=True)
class Rejected:
    """A datagram that is not a DHCP message we can answer, with the reason (for logs)."""

    reason: str


@dataclass(frozen=True)
class DhcpMessage:
    """One BOOTP/DHCP message. `options` keeps wire order; repeated codes are concatenated."""

    op: int
    xid: int
    chaddr: bytes  # hlen bytes of the client hardware address
    options: Mapping[int, bytes] = field(default_factory=dict)
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO_IP
    yiaddr: IPv4Address = ZERO_IP
    siaddr: IPv4Address = ZERO_IP
    giaddr: IPv4Address = ZERO_IP
    sname: bytes = b""
    file: bytes = b""

    @property
    def message_type(self) -> int | None:
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    @functools.cached_property
    def mac(self) -> str:
        """chaddr in lowercase colon form (the model's spelling); computed once per message."""
        return self.chaddr.hex(":")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    def ip_option(self, code: int) -> IPv4Address | None:
        value = self.options.get(code)
        if value is None or len(value) != 4:
            return None
        return _ip(value)

    @property
    def vendor_class(self) -> str:
        return self.options.get(OPT_VENDOR_CLASS, b"").decode("ascii", "replace")

    @property
    def user_classes(self) -> tuple[bytes, ...]:
        return parse_user_classes(self.options.get(OPT_USER_CLASS, b""))

    @property
    def client_arches(self) -> tuple[int, ...]:
        return parse_client_arches(self.options.get(OPT_CLIENT_ARCH, b""))

    @property
    def ipxe_options(self) -> Mapping[int, bytes] | None:
        """Option 175's sub-options, or None when the client sent no 175."""
        value = self.options.get(OPT_IPXE_ENCAP)
        if value is None:
            return None
        return parse_encapsulated(value) or {}


def message(
    op: int,
    xid: int,
    chaddr: bytes,
    options: Mapping[int, bytes],
    *,
    htype: int = 1,
    hops: int = 0,
    secs: int = 0,
    flags: int = 0,
    ciaddr: IPv4Address = ZERO_IP,
    yiaddr: IPv4Address = ZERO_IP,
    siaddr: IPv4Address = ZERO_IP,
    giaddr: IPv4Address = ZERO_IP,
    sname: bytes = b"",
    file: bytes = b"",
) -> DhcpMessage:
    """`DhcpMessage(...)` for the per-packet path: the same frozen value, built without the
    frozen dataclass `__init__` (one `object.__setattr__` per field: ~5 us against ~0.5 us for
    14 fields, and every DORA builds four messages)."""
    built = object.__new__(DhcpMessage)
    built.__dict__.update(
        op=op, xid=xid, chaddr=chaddr, options=options, htype=htype, hops=hops, secs=secs,
        flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr, sname=sname, file=file,
        mac=chaddr.hex(":"),  # what the `mac` cached_property would store (its lookup takes a lock)
    )
    return built


_ZERO4 = bytes(4)
_IP_CACHE: dict[bytes, IPv4Address] = {}
_IP_CACHE_MAX = 4096


def _ip(raw: bytes) -> IPv4Address:
    """IPv4Address(raw), shared: the all-zero address and recent ones (relays, clients) are
    looked up instead of constructed (IPv4Address is immutable)."""
    if raw == _ZERO4:
        return ZERO_IP
    found = _IP_CACHE.get(raw)
    if found is None:
        if len(_IP_CACHE) >= _IP_CACHE_MAX:
            _IP_CACHE.clear()
        found = _IP_CACHE[raw] = IPv4Address(raw)
    return found


def packed(ip: IPv4Address) -> bytes:
    """ip.packed at a fraction of the cost of the property (which goes through two Python calls)."""
    return int(ip).to_bytes(4, "big")


def parse_user_classes(value: bytes) -> tuple[bytes, ...]:
    """RFC 3004 user class list; the raw form (`iPXE` with no length prefix) is one class.

    iPXE and `udhcpc -x 0x4d:...` send the bare string; a strict RFC 3004 parse of `iPXE`
    fails (0x69 is longer than what follows), so a value that is not a clean list of non-empty
    length-prefixed items is taken whole.
    """
    if not value:
        return ()
    items: list[bytes] = []
    i = 0
    while i < len(value):
        length = value[i]
        if length == 0 or i + 1 + length > len(value):
            return (value,)
        items.append(value[i + 1 : i + 1 + length])
        i += 1 + length
    return tuple(items)


def parse_client_arches(value: bytes) -> tuple[int, ...]:
    """RFC 4578 option 93: a list of 16-bit architecture types (a trailing odd byte ignored)."""
    return tuple(struct.unpack_from("!H", value, i)[0] for i in range(0, len(value) - 1, 2))


def parse_encapsulated(value: bytes) -> dict[int, bytes] | None:
    """Sub-options of an encapsulated option (43, 82, 175); None when malformed."""
    out: dict[int, bytes] = {}
    i = 0
    n = len(value)
    while i < n:
        code = value[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            break
        if i + 1 >= n:
            return None
        length = value[i + 1]
        if i + 2 + length > n:
            return None
        out[code] = out.get(code, b"") + value[i + 2 : i + 2 + length]
        i += 2 + length
    return out


def _parse_options(data: bytes, into: dict[int, bytes]) -> bool:
    """Parse one option area; True when it ended cleanly (END or exhausted)."""
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return True
        if i + 1 >= n:
            return False
        length = data[i + 1]
        end = i + 2 + length
        if end > n:
            return False
        chunk = data[i + 2 : end]
        previous = into.get(code)
        into[code] = chunk if previous is None else previous + chunk  # RFC 3396
        i = end
    return True


def decode(data: bytes) -> DhcpMessage | Rejected:
    """Bytes of a UDP payload -> a message, or a clean rejection. Never raises."""
    try:
        return _decode(bytes(data))
    except Exception as exc:  # the contract is "never raise"; anything left is a codec bug
        return Rejected(f"undecodable: {type(exc).__name__}")


def _decode(data: bytes) -> DhcpMessage | Rejected:
    if len(data) < HEADER_LEN + 4:
        return Rejected(f"too short ({len(data)} bytes)")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) = (
        HEADER.unpack_from(data)
    )
    if op not in (BOOTREQUEST, BOOTREPLY):
        return Rejected(f"bad op {op}")
    if hlen > 16:
        return Rejected(f"bad hlen {hlen}")
    if data[HEADER_LEN : HEADER_LEN + 4] != MAGIC_COOKIE:
        return Rejected("no DHCP magic cookie")
    options: dict[int, bytes] = {}
    if not _parse_options(data[HEADER_LEN + 4 :], options):
        return Rejected("truncated options")
    overload = options.pop(OPT_OVERLOAD, b"")
    mode = overload[0] if len(overload) == 1 else 0
    if mode not in (0, 1, 2, 3):
        return Rejected(f"bad option overload {mode}")
    if mode & 1:
        if not _parse_options(file, options):
            return Rejected("truncated options in file field")
        file = b""
    if mode & 2:
        if not _parse_options(sname, options):
            return Rejected("truncated options in sname field")
        sname = b""
    return message(
        op,
        xid,
        chaddr[:hlen],
        options,
        htype=htype,
        hops=hops,
        secs=secs,
        flags=flags,
        ciaddr=_ip(ciaddr),
        yiaddr=_ip(yiaddr),
        siaddr=_ip(siaddr),
        giaddr=_ip(giaddr),
        sname=sname.split(b"\0", 1)[0],
        file=file.split(b"\0", 1)[0],
    )


def encode_option(code: int, value: bytes) -> bytes:
    """One option, split into 255-byte pieces when longer (RFC 3396)."""
    if not value:
        return bytes((code, 0))
    out = bytearray()
    for i in range(0, len(value), 255):
        piece = value[i : i + 255]
        out += bytes((code, len(piece)))
        out += piece
    return bytes(out)


def encode_encapsulated(items: Iterable[tuple[int, bytes]]) -> bytes:
    """Sub-options for an encapsulated option (43, 175)."""
    return b"".join(bytes((code, len(value))) + value for code, value in items)


_SKIP_IN_LOOP = frozenset((OPT_MESSAGE_TYPE, OPT_PAD, OPT_END, OPT_RELAY_AGENT))
_CODE_LEN = struct.Struct("BB")


class OptionBlock(NamedTuple):
    """Options encoded ahead of time (`option_block`) for `encode` to copy whole."""

    skip: frozenset[int]  # what `encode` then leaves out of its loop: these codes and its own
    wire: bytes


def option_block(options: Mapping[int, bytes]) -> OptionBlock:
    """Options as `encode` writes them between the message type and option 82 (both left out):
    wire order, long values split (RFC 3396)."""
    wire = b"".join(encode_option(code, value) for code, value in options.items() if code not in _SKIP_IN_LOOP)
    return OptionBlock(_SKIP_IN_LOOP | frozenset(options), wire)


def reply_limit(request: DhcpMessage) -> int:
    """The most bytes a reply to `request` may take (the UDP payload): the sender's option 57,
    at least 576 and at most 1500, less the IP and UDP headers; 548 without option 57."""
    raw = request.options.get(OPT_MAX_SIZE)
    if raw is None or len(raw) != 2:
        return DEFAULT_REPLY_LIMIT
    return min(max((raw[0] << 8) | raw[1], MIN_DATAGRAM), MAX_DATAGRAM) - IP_UDP_HEADERS


def encode(message: DhcpMessage, block: OptionBlock | None = None, limit: int | None = None) -> bytes:
    """A message -> wire bytes: message type first, END last, padded to the BOOTP minimum.

    `sname` and `file` must fit their fields (64 and 128 bytes); a longer boot URL belongs in
    option 67 (the decider does that) rather than in an overloaded field.

    `limit` (`reply_limit`): when the message would be longer, options that do not fit the
    options field go into an empty `file` and then `sname` field (option overload, RFC 2132
    §9.3), the most needed first (`_PRIORITY`); what fits nowhere is left out.

    `block`: these options of the message are already encoded (`option_block`), and come first
    after the message type, in that order. The result is the same bytes; the decider encodes
    what every client of one kind gets once per answer, not once per reply.
    """
    chaddr = message.chaddr[:16]
    parts = [
        HEADER.pack(
            message.op,
            message.htype,
            len(chaddr),
            message.hops,
            message.xid,
            message.secs,
            message.flags,
            packed(message.ciaddr),
            packed(message.yiaddr),
            packed(message.siaddr),
            packed(message.giaddr),
            chaddr,
            message.sname[:63],
            message.file[:127],
        ),
        MAGIC_COOKIE,
    ]
    options = message.options
    mtype = options.get(OPT_MESSAGE_TYPE)
    if mtype is not None:
        parts.append(encode_option(OPT_MESSAGE_TYPE, mtype))
    code_len = _CODE_LEN.pack
    append = parts.append
    skip = _SKIP_IN_LOOP
    if block is not None:
        skip = block.skip
        append(block.wire)
    for code, value in options.items():
        if code in skip:
            continue
        if 0 < len(value) < 256:
            append(code_len(code, len(value)))
            append(value)
        else:
            append(encode_option(code, value))
    relay = options.get(OPT_RELAY_AGENT)
    if relay is not None:  # RFC 3046 §2.1: the last option, echoed as the relay sent it
        append(encode_option(OPT_RELAY_AGENT, relay))
    append(b"\xff")
    out = b"".join(parts)
    if limit is not None and len(out) > limit:
        return _overloaded(message, limit)
    if len(out) < MIN_PACKET:
        out += bytes(MIN_PACKET - len(out))
    return out


# Which options a reply keeps first when it must be made to fit (`_overloaded`): the lease and
# the server, the network, the boot answer, the client's own echoes, then names and resolvers.
_PRIORITY = {
    code: rank
    for rank, code in enumerate((
        OPT_SERVER_ID, OPT_LEASE_TIME, OPT_RENEWAL_T1, OPT_REBINDING_T2, OPT_SUBNET_MASK, OPT_ROUTERS,
        OPT_VENDOR_CLASS, OPT_VENDOR_SPECIFIC, OPT_TFTP_SERVER, OPT_BOOTFILE, OPT_IPXE_ENCAP, OPT_CLIENT_ID,
        OPT_HOSTNAME, OPT_DNS, OPT_DOMAIN_NAME, OPT_BROADCAST, OPT_MESSAGE,
    ))
}
_FILE_LEN = 128
_SNAME_LEN = 64


def _overloaded(message: DhcpMessage, limit: int) -> bytes:
    """`encode` for a message over `limit`: options spill into the unused `file` and `sname`
    fields (each ends with END and is padded), option 52 says which; the rest is left out."""
    options = message.options
    mtype = options.get(OPT_MESSAGE_TYPE)
    relay = options.get(OPT_RELAY_AGENT)
    head = encode_option(OPT_MESSAGE_TYPE, mtype) if mtype is not None else b""
    tail = encode_option(OPT_RELAY_AGENT, relay) if relay is not None else b""
    items = sorted(
        ((code, encode_option(code, value)) for code, value in options.items() if code not in _SKIP_IN_LOOP),
        key=lambda item: _PRIORITY.get(item[0], len(_PRIORITY)),
    )
    # The options field: the fixed part, the cookie, option 53, option 52 (3), option 82 and END.
    room = [limit - HEADER_LEN - len(MAGIC_COOKIE) - len(head) - 3 - len(tail) - 1]
    fields: list[list[bytes]] = [[]]
    if not message.file:
        room.append(_FILE_LEN - 1)
        fields.append([])
    if not message.sname:
        room.append(_SNAME_LEN - 1)
        fields.append([])
    names = ["options", *(["file"] if not message.file else []), *(["sname"] if not message.sname else [])]
    for _, wire in items:
        for index, left in enumerate(room):
            if len(wire) <= left:
                fields[index].append(wire)
                room[index] = left - len(wire)
                break
    used = {name: b"".join(chunks) for name, chunks in zip(names, fields, strict=True)}
    overload = (1 if used.get("file") else 0) | (2 if used.get("sname") else 0)
    file = (used["file"] + b"\xff").ljust(_FILE_LEN, b"\0") if overload & 1 else message.file[:127]
    sname = (used["sname"] + b"\xff").ljust(_SNAME_LEN, b"\0") if overload & 2 else message.sname[:63]
    chaddr = message.chaddr[:16]
    out = b"".join((
        HEADER.pack(message.op, message.htype, len(chaddr), message.hops, message.xid, message.secs,
                    message.flags, packed(message.ciaddr), packed(message.yiaddr), packed(message.siaddr),
                    packed(message.giaddr), chaddr, sname, file),
        MAGIC_COOKIE,
        head,
        used["options"],
        encode_option(OPT_OVERLOAD, bytes((overload,))) if overload else b"",
        tail,
        b"\xff",
    ))
    if len(out) < MIN_PACKET:
        out += bytes(MIN_PACKET - len(out))
    return out
