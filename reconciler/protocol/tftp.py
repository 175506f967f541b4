"""TFTP without I/O: packets, option negotiation, path policy and the read-transfer state machine.

Role: everything TFTP decides (RFC 1350, 2347 options, 2348 blksize, 2349 timeout/tsize,
7440 windowsize) as values in, values out, in the manner of h11. Nothing here opens a socket
or a file: the caller hands in bytes and a `Source` (random-access reader) and gets back
datagrams to send and, at the end, a `Finished` outcome.

Callers: `reconciler.servers.tftp` (the UDP server) drives `parse_packet`, `negotiate`,
`request_path` and `ReadTransfer`; tests and `bench/tftp.py` use the codec directly.

Errors are `TftpError(code, message)`: raise-able, and they carry the ERROR packet to answer with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple, Protocol

# Opcodes (RFC 1350, RFC 2347).
RRQ = 1
WRQ = 2
DATA = 3
ACK = 4
ERROR = 5
OACK = 6

# Error codes (RFC 1350, RFC 2347).
ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_DISK_FULL = 3
ERR_ILLEGAL_OP = 4
ERR_UNKNOWN_TID = 5
ERR_EXISTS = 6
ERR_NO_USER = 7
ERR_OPTION = 8

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_TIMEOUT = 1.0
MIN_TIMEOUT = 1
MAX_TIMEOUT = 255
MAX_WINDOWSIZE = 65535
DEFAULT_MAX_RETRIES = 5
MAX_REQUEST_SIZE = 65535  # a datagram can hold no more

_HEADER = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")


class TftpError(Exception):
    """A failure with the TFTP error code to send back (`code` 0..8) and a human message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"TFTP error {self.code}: {self.message}"

    def packet(self) -> bytes:
        """The ERROR datagram that tells the peer about this failure."""
        return encode(ErrorPacket(self.code, self.message))


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class ReadRequest:
    filename: str
    mode: str  # lower case: "octet" or "netascii" (others are refused by `negotiate`)
    options: tuple[tuple[str, str], ...] = ()  # (lower-case name, value), in the order sent

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class WriteRequest:
    filename: str
    mode: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DataPacket:
    block: int  # 0..65535 on the wire
    payload: bytes


@dataclass(frozen=True)
class AckPacket:
    block: int


@dataclass(frozen=True)
class ErrorPacket:
    code: int
    message: str


@dataclass(frozen=True)
class OptionAck:
    options: tuple[tuple[str, str], ...]


Packet = ReadRequest | WriteRequest | DataPacket | AckPacket | ErrorPacket | OptionAck


def _split_strings(body: bytes) -> list[bytes]:
    """NUL-terminated strings; the last one must be terminated too."""
    if not body.endswith(b"\0"):
        raise TftpError(ERR_ILLEGAL_OP, "request not NUL-terminated")
    return body[:-1].split(b"\0")


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TftpError(ERR_ILLEGAL_OP, f"{what} is not valid UTF-8") from None


def _parse_request(body: bytes) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    parts = _split_strings(body)
    if len(parts) < 2:
        raise TftpError(ERR_ILLEGAL_OP, "request without filename and mode")
    filename = _text(parts[0], "filename")
    mode = _text(parts[1], "mode").lower()
    rest = parts[2:]
    # Some clients pad with an extra NUL; an odd trailing empty string is tolerated.
    if len(rest) % 2 == 1:
        if rest[-1] != b"":
            raise TftpError(ERR_ILLEGAL_OP, "option without value")
        rest = rest[:-1]
    options: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i in range(0, len(rest), 2):
        name = _text(rest[i], "option name").lower()
        value = _text(rest[i + 1], "option value")
        if name in seen:  # RFC 2347 does not allow repeats; keep the first
            continue
        seen.add(name)
        options.append((name, value))
    return filename, mode, tuple(options)


def parse_packet(data: bytes) -> Packet:
    """Decode one UDP payload. Any malformed input raises TftpError(4); nothing else escapes."""
    if len(data) < 2:
        raise TftpError(ERR_ILLEGAL_OP, "packet shorter than an opcode")
    if len(data) > MAX_REQUEST_SIZE + 4:
        raise TftpError(ERR_ILLEGAL_OP, "packet too large")
    (opcode,) = _OPCODE.unpack_from(data)
    body = data[2:]
    if opcode == RRQ:
        return ReadRequest(*_parse_request(body))
    if opcode == WRQ:
        return WriteRequest(*_parse_request(body))
    if opcode in (DATA, ACK):
        if len(body) < 2:
            raise TftpError(ERR_ILLEGAL_OP, "packet without block number")
        (block,) = _OPCODE.unpack_from(body)
        if opcode == ACK:
            return AckPacket(block)
        return DataPacket(block, bytes(body[2:]))
    if opcode == ERROR:
        if len(body) < 2:
            raise TftpError(ERR_ILLEGAL_OP, "error packet without code")
        (code,) = _OPCODE.unpack_from(body)
        message = bytes(body[2:]).split(b"\0", 1)[0].decode("utf-8", "replace")
        return ErrorPacket(code, message)
    if opcode == OACK:
        if not body:
            return OptionAck(())
        parts = _split_strings(body)
        if len(parts) % 2:
            raise TftpError(ERR_ILLEGAL_OP, "option without value")
        return OptionAck(
            tuple(
                (_text(parts[i], "option name").lower(), _text(parts[i + 1], "option value"))
                for i in range(0, len(parts), 2)
            )
        )
    raise TftpError(ERR_ILLEGAL_OP, f"unknown opcode {opcode}")


def _strings(*values: str) -> bytes:
    return b"".join(v.encode("utf-8") + b"\0" for v in values)


def encode(packet: Packet) -> bytes:
    """The UDP payload for a packet value."""
    if isinstance(packet, ReadRequest | WriteRequest):
        opcode = RRQ if isinstance(packet, ReadRequest) else WRQ
        flat = [s for pair in packet.options for s in pair]
        return _OPCODE.pack(opcode) + _strings(packet.filename, packet.mode, *flat)
    if isinstance(packet, DataPacket):
        return _HEADER.pack(DATA, packet.block & 0xFFFF) + packet.payload
    if isinstance(packet, AckPacket):
        return _HEADER.pack(ACK, packet.block & 0xFFFF)
    if isinstance(packet, ErrorPacket):
        return _HEADER.pack(ERROR, packet.code) + _strings(packet.message)
    flat = [s for pair in packet.options for s in pair]
    return _OPCODE.pack(OACK) + _strings(*flat)


def error_packet(code: int, message: str) -> bytes:
    return encode(ErrorPacket(code, message))


# --------------------------------------------------------------------------- paths


def request_path(filename: str) -> str:
    """The root-relative POSIX path a client asked for, or TftpError(2) when it may escape.

    A leading `/` is dropped (tftpd-hpa `-s` behaviour: firmware often sends `/ipxe.efi`).
    `..` components, backslashes, NUL and control characters are refused outright; the
    server still resolves symlinks with realpath and checks the result lies under the root.
    """
    if any(ord(c) < 0x20 or c == "\x7f" for c in filename):
        raise TftpError(ERR_ACCESS, "control character in filename")
    if "\\" in filename:
        raise TftpError(ERR_ACCESS, "backslash in filename")
    parts = [p for p in filename.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise TftpError(ERR_ACCESS, "'..' in filename")
    if not parts:
        raise TftpError(ERR_NOT_FOUND, "empty filename")
    return "/".join(parts)


def path_is_within(resolved: str, allowed: str) -> bool:
    """True when `resolved` (a realpath) is `allowed` itself or below it (both absolute, normalised)."""
    if resolved == allowed:
        return True
    prefix = allowed if allowed.endswith("/") else allowed + "/"
    return resolved.startswith(prefix)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Limits:
    """What the server is willing to do; the client's requests are clamped to these."""

    max_blksize: int = MAX_BLKSIZE
    max_windowsize: int = 64
    default_timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES


@dataclass(frozen=True)
class Negotiated:
    """The transfer parameters in force, and the OACK to send first (None: no options accepted)."""

    netascii: bool
    blksize: int
    windowsize: int
    timeout: float
    oack: tuple[tuple[str, str], ...] | None


def _int_option(value: str) -> int | None:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


def negotiate(request: ReadRequest, size: int | None, limits: Limits = Limits()) -> Negotiated:
    """Decide mode and options for an RRQ. `size` is the byte count the client will receive
    (after netascii translation), or None when unknown (tsize is then left out of the OACK).

    Unknown or out-of-range options are ignored (left out of the OACK), as RFC 2347 allows.
    Raises TftpError(4) for a mode other than octet/netascii.
    """
    if request.mode not in ("octet", "netascii"):
        raise TftpError(ERR_ILLEGAL_OP, f"unsupported mode {request.mode!r}")
    blksize = DEFAULT_BLKSIZE
    windowsize = 1
    timeout = limits.default_timeout
    oack: list[tuple[str, str]] = []
    for name, value in request.options:
        number = _int_option(value)
        if name == "blksize":
            if number is None or number < MIN_BLKSIZE:
                continue
            blksize = min(number, MAX_BLKSIZE, limits.max_blksize)
            oack.append(("blksize", str(blksize)))
        elif name == "windowsize":
            if number is None or number < 1 or number > MAX_WINDOWSIZE:
                continue
            windowsize = min(number, limits.max_windowsize)
            oack.append(("windowsize", str(windowsize)))
        elif name == "timeout":
            if number is None or number < MIN_TIMEOUT or number > MAX_TIMEOUT:
                continue
            timeout = float(number)
            oack.append(("timeout", str(number)))
        elif name == "tsize":
            if size is None:
                continue
            oack.append(("tsize", str(size)))
    return Negotiated(
        netascii=request.mode == "netascii",
        blksize=blksize,
        windowsize=windowsize,
        timeout=timeout,
        oack=tuple(oack) if oack else None,
    )


# --------------------------------------------------------------------------- sources


class Source(Protocol):
    """Random-access bytes the transfer sends; the server adapts files and generation bytes."""

    def read_at(self, offset: int, length: int) -> bytes: ...

    def release(self, offset: int) -> None:
        """Everything before `offset` has been acknowledged and will not be read again."""


class BytesSource:
    """A Source over bytes already in memory (files a generation provides)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read_at(self, offset: int, length: int) -> bytes:
        return bytes(self._view[offset : offset + length])

    def release(self, offset: int) -> None:
        return None


def netascii_encode(raw: bytes) -> bytes:
    """LF -> CR LF and CR -> CR NUL (RFC 764); each input byte maps independently."""
    return raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def netascii_size(raw: bytes) -> int:
    """How many bytes `raw` becomes in netascii (what tsize must announce)."""
    return len(raw) + raw.count(b"\r") + raw.count(b"\n")


class NetasciiSource:
    """Translates an underlying Source on the fly, keeping only the unacknowledged tail.

    Reads only move forward except within the window not yet acknowledged, which is what
    `ReadTransfer` does, so the buffer stays about one window long.
    """

    CHUNK = 65536

    def __init__(self, raw: Source) -> None:
        self._raw = raw
        self._raw_pos = 0
        self._eof = False
        self._buf = bytearray()
        self._buf_start = 0  # translated offset of _buf[0]

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < self._buf_start:
            raise ValueError("netascii source read before the released offset")
        end = offset + length
        while not self._eof and self._buf_start + len(self._buf) < end:
            chunk = self._raw.read_at(self._raw_pos, self.CHUNK)
            if not chunk:
                self._eof = True
                break
            self._raw_pos += len(chunk)
            self._buf += netascii_encode(chunk)
        start = offset - self._buf_start
        return bytes(self._buf[start : start + length])

    def release(self, offset: int) -> None:
        drop = offset - self._buf_start
        if drop > 0:
            del self._buf[:drop]
            self._buf_start = offset
        self._raw.release(self._raw_pos)


# --------------------------------------------------------------------------- the transfer


@dataclass(frozen=True)
class Finished:
    """How a transfer ended. `error_code` None means the client acknowledged the last block."""

    ok: bool
    bytes_sent: int  # payload bytes the client acknowledged
    error_code: int | None = None
    message: str = ""
    by_client: bool = False  # the client sent the ERROR (e.g. OVMF's size probe, code 8)

    @property
    def outcome(self) -> str:
        """`ok`; `size-probe` (RFC 2347: the client ended option negotiation with error 8 before any
        data, as OVMF does to learn tsize); `aborted` by the client; or `failed` (timeouts, ...)."""
        if self.ok:
            return "ok"
        if self.by_client and self.error_code == ERR_OPTION and self.bytes_sent == 0:
            return "size-probe"
        return "aborted" if self.by_client else "failed"


class Step(NamedTuple):
    """What to do after an input: send these datagrams (in order), and stop if finished.

    A named tuple rather than a dataclass: one is made per ACK on the transfer hot path."""

    datagrams: tuple[bytes, ...] = ()
    finished: Finished | None = None


_NOTHING = Step()

# Bytes read from the source at a time (at least one window): a lockstep transfer then costs
# one read per ~64 KiB instead of one per block.
READ_AHEAD = 65536


class ReadTransfer:
    """The server side of one RRQ: OACK / DATA windows out, ACKs in, retransmission on timeout.

    Block numbers are tracked as unbounded integers and put on the wire modulo 65536, so a
    transfer rolls over past block 65535 to 0 (as tftpd-hpa and iPXE expect). An ACK
    acknowledges every block up to it (RFC 7440); an ACK for a block already acknowledged is
    ignored, which is what prevents the Sorcerer's Apprentice. An ACK inside the window just
    sent means the client saw a gap: the next window starts right after it. A timeout resends
    the window from the first unacknowledged block (or the OACK), up to `max_retries` times.

    Call `start()` once, then `ack(block)` or `receive(packet)` per packet from the client's
    TID and `timeout()` whenever `timeout_seconds` passed without a step that sent something.

    The DATA datagrams of the window in flight are kept whole (header and payload) for
    retransmission, and the source is read `READ_AHEAD` bytes at a time: per ACK the hot path
    builds only the datagrams of the blocks it newly sends. `prepare()` builds those ahead, while
    the caller waits for the client anyway, so the ACK that closes a window is answered with
    datagrams already made. `ack_lockstep(block)` is `ack` cut short for the ACK a lockstep
    transfer meets on nearly every block.
    """

    def __init__(
        self,
        source: Source,
        negotiated: Negotiated,
        max_retries: int = DEFAULT_MAX_RETRIES,
        read_ahead: int = READ_AHEAD,
    ) -> None:
        self._source = source
        self.blksize = negotiated.blksize
        self.windowsize = negotiated.windowsize
        self.timeout_seconds = negotiated.timeout
        self._oack = negotiated.oack
        self._max_retries = max_retries
        self._awaiting_oack_ack = negotiated.oack is not None
        self._base = 1  # first block not yet acknowledged
        self._next = 1  # next block to send
        self._last: int | None = None  # final block number, once read
        self._last_len = 0
        self._retries = 0
        self._finished: Finished | None = None
        self._sent: list[bytes] = []  # DATA datagrams of blocks _base .. _next-1
        self._ahead: list[bytes] = []  # DATA datagrams built ahead: blocks _next .. _next+len-1
        self._chunk = memoryview(b"")  # read-ahead bytes, from block _chunk_block on
        self._chunk_block = 1
        self._chunk_end = 1  # first block not in the chunk
        self._read_blocks = max(self.windowsize, read_ahead // self.blksize, 1)

    @property
    def finished(self) -> Finished | None:
        return self._finished

    @property
    def acknowledged_bytes(self) -> int:
        done = self._base - 1
        if self._last is not None and done >= self._last:
            return (self._last - 1) * self.blksize + self._last_len
        return done * self.blksize

    def _read(self, block: int) -> None:
        """Fill the read-ahead chunk from `block` on; note the last block at the end of the file."""
        blksize = self.blksize
        want = self._read_blocks * blksize
        data = self._source.read_at((block - 1) * blksize, want)
        self._chunk = memoryview(data)
        self._chunk_block = block
        full = len(data) // blksize
        if len(data) < want:
            self._last = block + full  # the remainder (possibly empty) is the final block
            self._last_len = len(data) - full * blksize
            self._chunk_end = self._last + 1
        else:
            self._chunk_end = block + full

    def _build(self, block: int, end: int, into: list[bytes]) -> int:
        """Append the DATA datagrams of blocks `block` .. `end`-1 (or up to the last block) to
        `into`; returns the first block not built."""
        blksize = self.blksize
        while block < end and (self._last is None or block <= self._last):
            if block >= self._chunk_end:
                self._read(block)  # sets _last when the file ends: block <= _last still holds
            start = (block - self._chunk_block) * blksize
            into.append(_HEADER.pack(DATA, block & 0xFFFF) + self._chunk[start : start + blksize])
            block += 1
        return block

    def _window(self) -> Step:
        """Send blocks from `_base` up to a full window or the last block."""
        sent = self._sent
        block = self._next
        end = self._base + self.windowsize
        ahead = self._ahead
        if ahead:
            take = min(len(ahead), end - block)
            sent += ahead[:take]
            del ahead[:take]
            block += take
        self._next = self._build(block, end, sent)
        return Step(tuple(sent))

    def prepare(self) -> tuple[bytes, ...]:
        """Build the datagrams that an ACK of every block sent so far will call for, so that the
        ACK is answered without building them (pure speed: what is sent does not change). The
        caller does this while it waits for the client. Returns what was built, () when nothing
        is to be (a window already built ahead, the transfer's end reached, or no DATA yet)."""
        if self._finished is not None or self._awaiting_oack_ack or self._ahead:
            return ()
        block = self._next
        if self._last is not None and block > self._last:
            return ()
        self._build(block, block + self.windowsize, self._ahead)
        return tuple(self._ahead)

    def start(self) -> Step:
        if self._awaiting_oack_ack and self._oack is not None:
            return Step((encode(OptionAck(self._oack)),))
        return self._window()

    def _finish(self, finished: Finished, datagrams: tuple[bytes, ...] = ()) -> Step:
        self._finished = finished
        self._sent.clear()
        self._ahead.clear()
        self._chunk = memoryview(b"")
        return Step(datagrams, finished)

    def ack(self, wire_block: int) -> Step:
        """The client acknowledged `wire_block` (the hot path: no packet value needed)."""
        if self._finished is not None:
            return _NOTHING
        if self._awaiting_oack_ack:
            if wire_block != 0:
                return _NOTHING
            self._awaiting_oack_ack = False
            self._retries = 0
            return self._window()
        # Map the 16-bit number to the one block in [base-1, next-1] it can mean.
        low = self._base - 1
        acked = low + ((wire_block - low) & 0xFFFF)
        if acked >= self._next:
            return _NOTHING  # a stale ACK from before a rollover, or nonsense: ignore
        if acked == low:
            return _NOTHING  # duplicate: never resend on it (Sorcerer's Apprentice)
        del self._sent[: acked - low]
        self._base = acked + 1
        self._retries = 0
        if self._last is not None and acked >= self._last:
            return self._finish(Finished(True, self.acknowledged_bytes))
        self._source.release(acked * self.blksize)
        # Whether the ACK closes the window or sits inside it (the client saw a gap and
        # dropped what followed), the next window starts right after the acknowledged block.
        return self._window()

    def ack_lockstep(self, wire_block: int) -> bytes | None:
        """`ack` for what a lockstep transfer meets on nearly every ACK, cut to the bone: the
        one block in flight acknowledged and the next one already read. Returns that block's
        DATA datagram, with the state exactly as `ack` leaves it; None, with nothing changed,
        for everything else (the caller then calls `ack`): the final ACK, a duplicate or stale
        one, the OACK's, a window, a block to be read first, one built ahead. It takes about
        0.8 us where `ack` takes 1.4; a 200-transfer lockstep storm used 8-10% less server CPU."""
        base = self._base
        block = base + 1
        # One block in flight (`_next == base + 1`) is lockstep: a window is cut to one block
        # only by the file's end, and then the next block is past the chunk. Before the OACK is
        # acknowledged nothing is in flight.
        if (
            wire_block != base & 0xFFFF
            or self._next != block
            or block >= self._chunk_end  # not read yet, or past the end: `ack` decides
            or self._finished is not None
            or self._ahead
        ):
            return None
        blksize = self.blksize
        start = (block - self._chunk_block) * blksize
        datagram = _HEADER.pack(DATA, block & 0xFFFF) + self._chunk[start : start + blksize]
        self._source.release(base * blksize)
        self._sent[:] = (datagram,)
        self._base = block
        self._next = block + 1
        self._retries = 0
        return datagram

    def receive(self, packet: Packet) -> Step:
        if self._finished is not None:
            return _NOTHING
        if isinstance(packet, AckPacket):
            return self.ack(packet.block)
        if isinstance(packet, ErrorPacket):
            return self._finish(
                Finished(False, self.acknowledged_bytes, packet.code, packet.message, by_client=True)
            )
        error = TftpError(ERR_ILLEGAL_OP, "expected ACK")
        return self._finish(
            Finished(False, self.acknowledged_bytes, error.code, error.message), (error.packet(),)
        )

    def timeout(self) -> Step:
        """No progress for `timeout_seconds`: resend, or give up after `max_retries`."""
        if self._finished is not None:
            return _NOTHING
        self._retries += 1
        if self._retries > self._max_retries:
            return self._finish(Finished(False, self.acknowledged_bytes, ERR_UNDEFINED, "timed out"))
        if self._awaiting_oack_ack:
            return self.start()
        return self._window()
