"""Packet-level tests of reconciler.servers.tftp over real UDP sockets on 127.0.0.1.

`Receiver` is a small sans-I/O TFTP read client (RFC 1350/2347/7440) that can drop every Nth
datagram, ACK twice, or abort after the OACK; `fetch` drives it over a socket and
`fetch_many` drives hundreds at once from one thread. Firmware patterns (OVMF's size probe with
the captured RRQs, iPXE's blksize+tsize), duplicate ACKs, loss, rollover, a several-hundred-MB
sparse file, path safety, limits, generation pinning, events and shutdown are checked by what
the client sees: the bytes, the error codes, the boot events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import selectors
import socket
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.events import CollectEvents
from reconciler.core.model import DesiredState, Node, Site
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import tftp as p
from reconciler.servers import tftp as tftp_server
from reconciler.servers.tftp import TftpServer
from tests.dhcp_lab import Lab
from tests.support import VECTORS, patterned_bytes, require_root

FAST = p.Limits(default_timeout=0.05, max_retries=50)  # server-side retransmit timer for loss tests
# Strangers get ERROR 5 from a transfer's port only where it is shared (Linux 5.4 on, see
# servers.tftp.SHARED_PORTS); elsewhere the kernel answers them port unreachable.
NEEDS_SHARED_PORTS = pytest.mark.skipif(not tftp_server.SHARED_PORTS, reason="kernel before Linux 5.4")
SOCKET_TIMEOUT = 10.0


# --------------------------------------------------------------------------- a test client


@dataclass
class Receiver:
    """The receiving side of one RRQ, without I/O: feed it datagrams, send what it returns."""

    request: p.ReadRequest
    drop_every: int = 0  # ignore every Nth datagram from the server (a lossy link)
    double_ack: bool = False  # send every ACK twice (provokes the Sorcerer's Apprentice)
    abort_after_oack: bool = False  # OVMF's size probe: read tsize, answer ERROR 8
    data: bytearray = field(default_factory=bytearray)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    keep: bool = True  # keep the bytes (else only count and hash them)
    nbytes: int = 0
    oack: dict[str, str] | None = None
    error: p.ErrorPacket | None = None
    data_packets: int = 0
    done: bool = False
    _seen: int = 0
    _expected: int = 1
    _in_window: int = 0
    _blksize: int = 512
    _windowsize: int = 1

    def start(self) -> bytes:
        return p.encode(self.request)

    def feed(self, datagram: bytes) -> list[bytes]:
        self._seen += 1
        if self.drop_every and self._seen % self.drop_every == 0:
            return []
        packet = p.parse_packet(datagram)
        if isinstance(packet, p.ErrorPacket):
            self.error, self.done = packet, True
            return []
        if isinstance(packet, p.OptionAck):
            self.oack = dict(packet.options)
            self._blksize = int(self.oack.get("blksize", 512))
            self._windowsize = int(self.oack.get("windowsize", 1))
            if self.abort_after_oack:
                self.done = True
                return [p.error_packet(p.ERR_OPTION, "User aborted the transfer")]
            return self._ack(0)
        assert isinstance(packet, p.DataPacket), packet
        self.data_packets += 1
        if packet.block != self._expected & 0xFFFF:
            self._in_window = 0
            return self._ack((self._expected - 1) & 0xFFFF)  # RFC 7440: last in-order block
        self._expected += 1
        self._in_window += 1
        self.nbytes += len(packet.payload)
        self.digest.update(packet.payload)
        if self.keep:
            self.data += packet.payload
        last = len(packet.payload) < self._blksize
        if last:
            self.done = True
        if last or self._in_window >= self._windowsize:
            self._in_window = 0
            return self._ack(packet.block)
        return []

    def _ack(self, block: int) -> list[bytes]:
        ack = p.encode(p.AckPacket(block))
        return [ack, ack] if self.double_ack else [ack]


def fetch(server: tuple[str, int], receiver: Receiver) -> Receiver:
    """Run one transfer to the end (or the server's error) over a fresh socket."""
    with udp_client() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # room for a window
        sock.sendto(receiver.start(), server)
        while not receiver.done:
            datagram, peer = sock.recvfrom(70000)
            for reply in receiver.feed(datagram):
                sock.sendto(reply, peer)
    return receiver


def carry_on(sock: socket.socket, receiver: Receiver, first: bytes, tid: tuple[str, int]) -> None:
    """Drive a transfer begun over `sock` to its end, from the `first` datagram of port `tid`."""
    replies = receiver.feed(first)
    while not receiver.done:
        for reply in replies:
            sock.sendto(reply, tid)
        replies = receiver.feed(sock.recvfrom(2000)[0])
    for reply in replies:
        sock.sendto(reply, tid)


def fetch_many(server: tuple[str, int], receivers: list[Receiver]) -> None:
    """Run many transfers at once from this one thread (a storm of clients)."""
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    try:
        for receiver in receivers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            socks.append(sock)
            selector.register(sock, selectors.EVENT_READ, receiver)
            sock.sendto(receiver.start(), server)
        pending = len(receivers)
        while pending:
            ready = selector.select(SOCKET_TIMEOUT)
            assert ready, "the server stopped answering"
            for key, _ in ready:
                ready_sock = key.fileobj
                assert isinstance(ready_sock, socket.socket)
                got: Receiver = key.data
                try:
                    datagram, peer = ready_sock.recvfrom(70000)
                except BlockingIOError:
                    continue
                for reply in got.feed(datagram):
                    ready_sock.sendto(reply, peer)
                if got.done:
                    selector.unregister(ready_sock)
                    pending -= 1
    finally:
        for sock in socks:
            sock.close()
        selector.close()


def rrq(name: str, mode: str = "octet", **options: str) -> p.ReadRequest:
    return p.ReadRequest(name, mode, tuple(options.items()))


# --------------------------------------------------------------------------- fixtures


def udp_client() -> socket.socket:
    """A client socket on loopback with the tests' receive timeout (a context manager)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    directory.mkdir()
    (directory / "ipxe.efi").write_bytes(patterned_bytes(850_528, 2))
    (directory / "undionly.kpxe").write_bytes(patterned_bytes(74_213, 3))
    (directory / "small.bin").write_bytes(patterned_bytes(20_000, 4))
    (directory / "sub").mkdir()
    (directory / "sub" / "x.bin").write_bytes(patterned_bytes(700, 5))
    return directory


@dataclass
class Running:
    server: TftpServer
    events: CollectEvents
    holder: GenerationHolder

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address


def _start(root: Path, **kwargs: object) -> Generator[Running, None, None]:
    events = CollectEvents()
    holder = GenerationHolder()
    server = TftpServer(("127.0.0.1", 0), root, holder, events, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield Running(server, events, holder)
    finally:
        server.stop(2.0)


@pytest.fixture
def tftp(root: Path) -> Iterator[Running]:
    yield from _start(root, limits=FAST)


def generation(revision: str, files: dict[str, bytes], nodes: tuple[Node, ...] = ()) -> Generation:
    state = DesiredState(
        revision=revision,
        site=Site(server_address=IPv4Address("127.0.0.1")),
        nodes=nodes,
        profiles={},
        groups=(),
        cloud_init={},
    )
    return Generation(revision=revision, state=state, files=files)


def _ovmf_rrqs() -> tuple[bytes, bytes]:
    packets = json.loads(VECTORS.read_text())["packets"]
    rrqs = [pkt for pkt in packets if pkt.get("message") == "TFTP RRQ"]
    probe = next(pkt for pkt in rrqs if "tsize" in pkt["text"])
    fetch_rrq = next(pkt for pkt in rrqs if "tsize" not in pkt["text"])
    return bytes.fromhex(probe["udp_payload_hex"]), bytes.fromhex(fetch_rrq["udp_payload_hex"])


# --------------------------------------------------------------------------- firmware patterns


def test_ovmf_probe_abort_then_fetch_with_the_captured_rrqs(tftp: Running, root: Path) -> None:
    probe_bytes, fetch_bytes = _ovmf_rrqs()
    probe = p.parse_packet(probe_bytes)
    again = p.parse_packet(fetch_bytes)
    assert isinstance(probe, p.ReadRequest)
    assert isinstance(again, p.ReadRequest)
    first = fetch(tftp.address, Receiver(probe, abort_after_oack=True))
    assert first.oack == {"tsize": "850528", "blksize": "1468", "windowsize": "4"}
    second = fetch(tftp.address, Receiver(again))
    assert second.oack == {"blksize": "1468", "windowsize": "4"}
    assert bytes(second.data) == (root / "ipxe.efi").read_bytes()
    tftp.server.stop(2.0)  # events of finished transfers are all recorded by now
    results = [(e.detail["file"], e.detail["result"], e.detail.get("error_code")) for e in tftp.events.events]
    assert results == [("ipxe.efi", "size-probe", 8), ("ipxe.efi", "ok", None)]
    assert tftp.events.events[1].detail["bytes"] == 850_528


def test_ipxe_blksize_and_tsize(tftp: Running, root: Path) -> None:
    got = fetch(tftp.address, Receiver(rrq("undionly.kpxe", blksize="1432", tsize="0")))
    assert got.oack == {"blksize": "1432", "tsize": "74213"}
    assert bytes(got.data) == (root / "undionly.kpxe").read_bytes()


def test_leading_slash_is_relative_to_the_root(tftp: Running, root: Path) -> None:
    got = fetch(tftp.address, Receiver(rrq("/sub/x.bin")))
    assert bytes(got.data) == (root / "sub" / "x.bin").read_bytes()


def test_netascii_is_translated_and_tsize_is_left_out(tftp: Running, root: Path) -> None:
    """The translated size is not known before the file is streamed: no tsize (RFC 2347: an
    option left out of the OACK is not in effect), for root files and generation files alike."""
    text = b"#!ipxe\nchain http://x/boot\r\nend\n" * 40
    wire = text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    (root / "menu.ipxe").write_bytes(text)
    got = fetch(tftp.address, Receiver(rrq("menu.ipxe", "netascii", tsize="0", blksize="1024")))
    assert got.oack == {"blksize": "1024"}
    assert bytes(got.data) == wire
    tftp.holder.swap(generation("r1", {"tftp/gen.ipxe": text}))
    got = fetch(tftp.address, Receiver(rrq("gen.ipxe", "netascii", tsize="0")))
    assert got.oack is None  # tsize was the only option asked for
    assert bytes(got.data) == wire


def test_a_large_netascii_request_does_not_stall_an_octet_transfer(
    tftp: Running, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads of the netascii file beyond its first MiB are held until the octet transfer has
    finished: a server that reads the whole file before answering (to count its translated
    size) would sit in that read on its only thread, and the octet client would see nothing."""
    text = b"line of a large text file\r\n" * ((4 << 20) // 27)
    (root / "big.txt").write_bytes(text)
    big_inode = (root / "big.txt").stat().st_ino
    release = threading.Event()
    held = threading.Event()
    real_pread = os.pread

    def gated_pread(fd: int, length: int, offset: int) -> bytes:
        if offset >= 1 << 20 and os.fstat(fd).st_ino == big_inode and not release.is_set():
            held.set()
            release.wait(30)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", gated_pread)
    slow = Receiver(rrq("big.txt", "netascii", tsize="0", blksize="1468", windowsize="8"))
    with udp_client() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        try:
            sock.sendto(slow.start(), tftp.address)
            first, peer = sock.recvfrom(70000)  # the OACK: sent without reading the file through
            replies = slow.feed(first)
            assert slow.oack == {"blksize": "1468", "windowsize": "8"}
            # Meanwhile a whole octet transfer runs to its end on the same server thread.
            octet = fetch(tftp.address, Receiver(rrq("ipxe.efi", blksize="1468", windowsize="4")))
            assert bytes(octet.data) == (root / "ipxe.efi").read_bytes()
            assert not held.is_set(), "the netascii file was read past what its window needs"
        finally:
            release.set()
        for reply in replies:
            sock.sendto(reply, peer)
        while not slow.done:
            datagram, peer = sock.recvfrom(70000)
            for reply in slow.feed(datagram):
                sock.sendto(reply, peer)
    assert bytes(slow.data) == text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


# --------------------------------------------------------------------------- reliability


def test_duplicate_acks_do_not_double_send(tftp: Running, root: Path) -> None:
    blocks = 20_000 // 512 + 1
    for options in ({"timeout": "5"}, {"timeout": "5", "windowsize": "4"}):
        got = fetch(tftp.address, Receiver(rrq("small.bin", **options), double_ack=True))
        assert bytes(got.data) == (root / "small.bin").read_bytes()
        # Exactly one DATA per block: every duplicate ACK was ignored (a 5 s retransmit timer
        # cannot fire in a transfer of 40 blocks on loopback).
        assert got.data_packets == blocks


@pytest.mark.parametrize(("windowsize", "every"), [("1", 5), ("4", 7), ("16", 19)])
def test_a_client_that_drops_every_nth_packet_still_gets_the_file(
    tftp: Running, root: Path, windowsize: str, every: int
) -> None:
    request = rrq("small.bin", blksize="1024", windowsize=windowsize)
    got = fetch(tftp.address, Receiver(request, drop_every=every))
    assert bytes(got.data) == (root / "small.bin").read_bytes()


def test_block_numbers_roll_over_past_65535(tftp: Running, root: Path) -> None:
    data = patterned_bytes(8 * 65_600 + 5, 9)
    (root / "roll.bin").write_bytes(data)
    got = fetch(tftp.address, Receiver(rrq("roll.bin", blksize="8", windowsize="64")))
    assert got.nbytes == len(data)
    assert bytes(got.data) == data


def test_several_hundred_megabytes_from_a_sparse_file(tftp: Running, root: Path) -> None:
    size = 300 * 1024 * 1024 + 123
    path = root / "huge.img"
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset in (0, 97 * 1024 * 1024 + 11, 268_435_456 + 5, size - 7):
            handle.seek(offset)
            handle.write(b"MARKER!")
    want = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            want.update(chunk)
    # blksize 4096: 76,800 blocks, so this also crosses the 16-bit rollover.
    got = fetch(tftp.address, Receiver(rrq("huge.img", blksize="4096", windowsize="8", tsize="0"), keep=False))
    assert got.oack is not None
    assert got.oack["tsize"] == str(size)
    assert got.nbytes == size
    assert got.digest.hexdigest() == want.hexdigest()


def test_retries_are_bounded_and_the_failure_is_recorded(root: Path) -> None:
    limits = p.Limits(default_timeout=0.05, max_retries=4)
    for running in _start(root, limits=limits):
        with udp_client() as sock:
            sock.sendto(p.encode(rrq("small.bin")), running.address)
            first, _ = sock.recvfrom(2000)
            # Never ACK: the server resends block 1 max_retries times, then gives up.
            for _ in range(limits.max_retries):
                assert sock.recvfrom(2000)[0] == first
            running.server.stop(SOCKET_TIMEOUT)  # returns once the transfer has given up
        event = running.events.events[-1]
        assert (event.detail["result"], event.detail["bytes"], event.detail["error"]) == ("failed", 0, "timed out")


def test_a_client_that_closes_its_port_ends_its_transfer_at_the_next_send(tftp: Running, root: Path) -> None:
    """The kernel answers the resend with port unreachable, which the transfer's connected socket
    reports: the transfer ends then (as tftpd-hpa's does), not after every retry (50 here)."""
    with udp_client() as sock:
        sock.sendto(p.encode(rrq("small.bin")), tftp.address)
        first, _ = sock.recvfrom(2000)
        assert p.parse_packet(first) == p.DataPacket(1, (root / "small.bin").read_bytes()[:512])
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not tftp.events.events and time.monotonic() < deadline:
        time.sleep(0.01)
    (event,) = tftp.events.events
    assert (event.detail["result"], event.detail["error"]) == ("failed", "the client is gone (port unreachable)")
    assert tftp.server.active_transfers == 0


@NEEDS_SHARED_PORTS
def test_a_packet_from_another_port_gets_unknown_tid_and_the_transfer_goes_on(tftp: Running, root: Path) -> None:
    with udp_client() as sock, udp_client() as stranger:
        receiver = Receiver(rrq("small.bin", timeout="5"))
        sock.sendto(receiver.start(), tftp.address)
        datagram, tid = sock.recvfrom(2000)
        stranger.sendto(p.encode(p.AckPacket(1)), tid)
        error = p.parse_packet(stranger.recvfrom(2000)[0])
        assert isinstance(error, p.ErrorPacket)
        assert error.code == p.ERR_UNKNOWN_TID
        carry_on(sock, receiver, datagram, tid)  # the first datagram is the OACK (timeout option)
    assert bytes(receiver.data) == (root / "small.bin").read_bytes()


def test_the_loop_sleeps_when_idle_and_while_a_slow_client_thinks(root: Path) -> None:
    # The loop busy-polls only for clients that answer within a fraction of a millisecond: an
    # idle server, or one feeding a client that takes its time over each ACK (a slow link),
    # sleeps in epoll instead of burning a CPU.
    for running in _start(root):
        thread = running.server._thread
        assert thread is not None and thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)
        busy = time.clock_gettime(clock)
        time.sleep(0.3)
        assert time.clock_gettime(clock) - busy < 0.03
        receiver = Receiver(rrq("ipxe.efi", blksize="1024"), keep=False)
        with udp_client() as sock:
            started, busy = time.monotonic(), time.clock_gettime(clock)
            sock.sendto(receiver.start(), running.address)
            while not receiver.done:
                datagram, peer = sock.recvfrom(70000)
                time.sleep(0.0004)  # a client 0.4 ms away
                for reply in receiver.feed(datagram):
                    sock.sendto(reply, peer)
            wall, cpu = time.monotonic() - started, time.clock_gettime(clock) - busy
        assert receiver.nbytes == (root / "ipxe.efi").stat().st_size
        # Spinning 0.2 ms of every ~0.5 ms round trip would be about 40% of the wall time.
        assert cpu < 0.2 * wall, (cpu, wall)


# --------------------------------------------------------------------------- safety and errors


def _answer(address: tuple[str, int], payload: bytes) -> p.Packet:
    with udp_client() as sock:
        sock.sendto(payload, address)
        return p.parse_packet(sock.recvfrom(70000)[0])


@pytest.fixture
def outside(tmp_path: Path, root: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"never leaves the host")
    (root / "link-out").symlink_to(secret)
    (root / "dir-out").symlink_to(tmp_path)
    (root / "link-in").symlink_to(root / "small.bin")
    return secret


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../secret.txt", p.ERR_ACCESS),
        ("/../secret.txt", p.ERR_ACCESS),
        ("sub/../../secret.txt", p.ERR_ACCESS),
        ("..\\secret.txt", p.ERR_ACCESS),
        ("link-out", p.ERR_ACCESS),
        ("dir-out/secret.txt", p.ERR_ACCESS),
        (str(Path("/etc/passwd")), p.ERR_NOT_FOUND),  # relative to the root: not there
        ("missing.bin", p.ERR_NOT_FOUND),
        ("sub", p.ERR_NOT_FOUND),
        ("/", p.ERR_NOT_FOUND),
    ],
)
def test_paths_outside_the_root_never_yield_a_byte(tftp: Running, outside: Path, name: str, code: int) -> None:
    answer = _answer(tftp.address, p.encode(rrq(name)))
    assert isinstance(answer, p.ErrorPacket)
    assert answer.code == code


def test_a_symlink_inside_the_root_is_followed(tftp: Running, outside: Path, root: Path) -> None:
    got = fetch(tftp.address, Receiver(rrq("link-in")))
    assert bytes(got.data) == (root / "small.bin").read_bytes()


def test_nul_inside_a_filename_is_refused(tftp: Running) -> None:
    answer = _answer(tftp.address, b"\x00\x01ok\x00../x\x00octet\x00")
    # "ok" is the filename, "../x" the mode: an unknown mode, not a path.
    assert isinstance(answer, p.ErrorPacket)
    assert answer.code in (p.ERR_ILLEGAL_OP, p.ERR_NOT_FOUND)


@NEEDS_SHARED_PORTS
def test_the_client_s_datagrams_reach_the_transfer_s_connected_socket(
    tftp: Running, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transfer's port has two sockets; the kernel gives the client's datagrams to the one
    connected to it (no address formatted or compared), a stranger's to the other."""
    calls = {"on_readable": 0, "on_stranger": 0}
    for name in calls:
        handler = getattr(tftp_server._Transfer, name)

        def counted(self: object, handler: Any = handler, name: str = name) -> None:
            calls[name] += 1
            handler(self)

        monkeypatch.setattr(tftp_server._Transfer, name, counted)
    receivers = [Receiver(rrq("small.bin")) for _ in range(8)]  # the limit per client address
    fetch_many(tftp.address, receivers)
    assert all(bytes(r.data) == (root / "small.bin").read_bytes() for r in receivers)
    deadline = time.monotonic() + SOCKET_TIMEOUT  # the server takes the last ACKs after the clients sent them
    while len(tftp.events.events) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    # 40 ACKs each (20,000 bytes), more if a stall made the server resend and a client ACK twice
    assert calls["on_readable"] >= 8 * 40 and calls["on_stranger"] == 0, calls
    with udp_client() as sock, udp_client() as stranger:
        sock.sendto(p.encode(rrq("small.bin")), tftp.address)
        _, tid = sock.recvfrom(2000)
        stranger.sendto(p.encode(p.AckPacket(1)), tid)
        assert p.parse_packet(stranger.recvfrom(2000)[0]) == p.ErrorPacket(p.ERR_UNKNOWN_TID, "unknown transfer ID")
    assert calls["on_stranger"] == 1


def test_every_transfer_in_flight_has_a_port_of_its_own(root: Path) -> None:
    """Though each port is shared by its transfer's two sockets. (With SO_REUSEPORT set before
    the bind, the kernel handed out ports already shared: about one in 40 transfers.)"""
    count = 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 4 descriptors a transfer here
    if hard < 4 * count + 200:
        pytest.skip(f"the hard open-file limit ({hard}) is below {4 * count + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * count + 200), hard))
    patient = p.Limits(default_timeout=30.0, max_retries=1)  # no resends while the RRQs go out
    try:
        with contextlib.closing(_start(root, limits=patient, max_transfers=count, max_per_client=count)) as started:
            running = next(started)
            with contextlib.ExitStack() as stack:
                tids = []
                for _ in range(count):  # one after another: a burst of 500 RRQs overflows the listener
                    sock = stack.enter_context(udp_client())
                    sock.sendto(p.encode(rrq("small.bin")), running.address)
                    tids.append((sock, sock.recvfrom(2000)[1]))
                assert running.server.active_transfers == count
                for sock, tid in tids:  # end them now, not in a minute
                    sock.sendto(p.error_packet(p.ERR_UNDEFINED, "enough"), tid)
            assert len({tid for _, tid in tids}) == count
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_transfer_whose_port_cannot_be_shared_runs_on_its_connected_socket(
    tftp: Running, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a kernel before 5.4 (or without SO_REUSEPORT) the connected socket serves alone; a
    stranger then gets the kernel's port unreachable (tftpd-hpa's behaviour) instead of ERROR 5,
    and the transfer goes on."""
    monkeypatch.setattr(tftp_server, "SHARED_PORTS", False)
    with udp_client() as sock, udp_client() as stranger:
        receiver = Receiver(rrq("small.bin"))
        sock.sendto(receiver.start(), tftp.address)
        datagram, tid = sock.recvfrom(2000)
        stranger.connect(tid)  # to be told of the ICMP error
        stranger.send(p.encode(p.AckPacket(1)))
        with pytest.raises(ConnectionRefusedError):
            stranger.recv(2000)
        carry_on(sock, receiver, datagram, tid)
    assert bytes(receiver.data) == (root / "small.bin").read_bytes()


@pytest.mark.parametrize(("release", "shared"), [
    ("4.19.0-27-amd64", False), ("5.3.18", False), ("5.4.0-216-generic", True), ("6.18.44-fc-v1252", True),
    ("garbage", False),
])
def test_ports_are_shared_from_linux_5_4_on(monkeypatch: pytest.MonkeyPatch, release: str, shared: bool) -> None:
    monkeypatch.setattr(platform, "release", lambda: release)
    assert tftp_server._kernel_at_least(5, 4) is shared


@NEEDS_SHARED_PORTS
def test_a_client_datagram_on_the_unconnected_socket_is_the_transfer_s(tftp: Running, root: Path) -> None:
    """A kernel before Linux 5.4 may give the client's datagram to either socket of the port.
    No kernel here does, so the test puts a socket of its own where the unconnected one was and
    sends the client's ACK there: the transfer takes it and goes on (no ERROR 5)."""
    with udp_client() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stand_in:
        stand_in.bind(("127.0.0.1", 0))
        stand_in.setblocking(False)
        receiver = Receiver(rrq("small.bin"))
        sock.sendto(receiver.start(), tftp.address)
        datagram, tid = sock.recvfrom(2000)
        (transfer,) = tftp.server._transfers
        swapped = threading.Event()

        def swap() -> None:
            old = transfer._lobby
            assert old is not None
            tftp.server.unwatch(old.fileno())
            transfer._lobby = stand_in
            tftp.server.watch(stand_in.fileno(), transfer.on_stranger)
            old.close()
            swapped.set()

        tftp.server._call_soon(swap)
        assert swapped.wait(SOCKET_TIMEOUT)
        (ack,) = receiver.feed(datagram)
        sock.sendto(ack, stand_in.getsockname())
        following, peer = sock.recvfrom(2000)
        assert peer == tid
        assert p.parse_packet(following) == p.DataPacket(2, (root / "small.bin").read_bytes()[512:1024])


def test_listening_on_every_address_a_transfer_answers_from_the_address_asked(root: Path) -> None:
    """PXE firmware takes DATA only from the address it sent its request to. In a namespace of
    the test's own, the server listens on 0.0.0.0 and has two addresses (10.99.0.1 on a bridge,
    127.0.0.1 on lo); a client on 127.0.0.1 asks 10.99.0.1, and is answered from 10.99.0.1, not
    from the address the route back to it prefers."""
    require_root()
    lab = Lab()

    def scenario() -> tuple[str, bytes, tuple[str, int], p.Packet]:
        server = TftpServer(("0.0.0.0", 0), root, GenerationHolder(), CollectEvents(), limits=FAST)
        server.start()
        try:
            with udp_client() as sock:
                receiver = Receiver(rrq("small.bin"))
                sock.sendto(receiver.start(), ("10.99.0.1", server.address[1]))
                first, tid = sock.recvfrom(2000)
                carry_on(sock, receiver, first, tid)
                # a refused request is answered from the listening port and the address asked
                sock.sendto(p.encode(rrq("missing.bin")), ("10.99.0.1", server.address[1]))
                refusal, refused_by = sock.recvfrom(2000)
            return tid[0], bytes(receiver.data), refused_by, p.parse_packet(refusal)
        finally:
            server.stop(2.0)

    try:
        source, data, refused_by, refusal = lab.call_in(lab.server, scenario)
    finally:
        lab.close()
    assert source == "10.99.0.1"
    assert data == (root / "small.bin").read_bytes()
    assert refused_by[0] == "10.99.0.1"
    assert isinstance(refusal, p.ErrorPacket) and refusal.code == p.ERR_NOT_FOUND


def test_write_requests_are_refused_with_access_violation(tftp: Running, root: Path) -> None:
    answer = _answer(tftp.address, p.encode(p.WriteRequest("new.bin", "octet")))
    assert answer == p.ErrorPacket(p.ERR_ACCESS, "writes are not allowed")
    assert not (root / "new.bin").exists()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00\x01small.bin\x00mail\x00", p.ERR_ILLEGAL_OP),
        (b"\x00\x01small.bin", p.ERR_ILLEGAL_OP),
        (b"\x00\x07junk", p.ERR_ILLEGAL_OP),
        (p.encode(p.AckPacket(1)), p.ERR_UNKNOWN_TID),
    ],
)
def test_bad_requests_get_the_right_error_code(tftp: Running, payload: bytes, code: int) -> None:
    answer = _answer(tftp.address, payload)
    assert isinstance(answer, p.ErrorPacket)
    assert answer.code == code


def test_debian_ipxe_root_serves_ipxe_efi_through_its_symlink_into_boot() -> None:
    debian = Path("/usr/lib/ipxe")
    if not (debian / "ipxe.efi").exists() or not (debian / "undionly.kpxe").exists():
        pytest.fail("Debian's iPXE binaries are missing: apt-get install ipxe")
    for running in _start(debian):
        got = fetch(running.address, Receiver(rrq("ipxe.efi", blksize="1468", windowsize="16")))
        assert bytes(got.data) == (debian / "ipxe.efi").read_bytes()
        got = fetch(running.address, Receiver(rrq("/undionly.kpxe")))
        assert bytes(got.data) == (debian / "undionly.kpxe").read_bytes()


# --------------------------------------------------------------------------- limits and storms


def test_limits_per_client_and_in_total(root: Path) -> None:
    for running in _start(root, max_transfers=3, max_per_client=2):
        with udp_client() as a, udp_client() as b:
            request = p.encode(rrq("small.bin", timeout="30"))
            for _ in range(2):
                a.sendto(request, running.address)
                assert isinstance(p.parse_packet(a.recvfrom(2000)[0]), p.OptionAck)
            assert running.server.active_transfers == 2
            # The same client address (127.0.0.1) a third time: refused.
            b.sendto(request, running.address)
            refused = p.parse_packet(b.recvfrom(2000)[0])
            assert isinstance(refused, p.ErrorPacket)
            assert refused.code == p.ERR_UNDEFINED
        running.server.stop(0.1)
    for running in _start(root, max_transfers=1, max_per_client=5):
        with udp_client() as a:
            request = p.encode(rrq("small.bin", timeout="30"))
            a.sendto(request, running.address)
            assert isinstance(p.parse_packet(a.recvfrom(2000)[0]), p.OptionAck)
            a.sendto(request, running.address)
            refused = p.parse_packet(a.recvfrom(2000)[0])
            assert isinstance(refused, p.ErrorPacket)
            assert "busy" in refused.message
        running.server.stop(0.1)


def test_two_hundred_concurrent_transfers_share_one_thread(root: Path) -> None:
    for running in _start(root, max_transfers=512, max_per_client=512):
        before = threading.active_count()
        receivers = [Receiver(rrq("small.bin", blksize="1468", windowsize="4", timeout="5")) for _ in range(200)]
        fetch_many(running.address, receivers)
        want = (root / "small.bin").read_bytes()
        assert all(bytes(r.data) == want for r in receivers)
        assert threading.active_count() == before  # no thread per transfer
        running.server.stop(2.0)
        assert [e.detail["result"] for e in running.events.events] == ["ok"] * 200
        assert running.server.active_transfers == 0


# --------------------------------------------------------------------------- generations and events


def test_generation_files_win_and_each_transfer_keeps_its_generation(tftp: Running, root: Path) -> None:
    old = patterned_bytes(30_000, 11)
    new = patterned_bytes(30_000, 12)
    tftp.holder.swap(generation("a" * 40, {"tftp/small.bin": old}))
    with udp_client() as sock:
        receiver = Receiver(rrq("small.bin", timeout="5"))
        sock.sendto(receiver.start(), tftp.address)
        datagram, tid = sock.recvfrom(2000)
        # A new commit is applied while the transfer is in flight.
        tftp.holder.swap(generation("b" * 40, {"tftp/small.bin": new}))
        carry_on(sock, receiver, datagram, tid)
    assert bytes(receiver.data) == old
    assert bytes(fetch(tftp.address, Receiver(rrq("small.bin"))).data) == new
    assert bytes(fetch(tftp.address, Receiver(rrq("undionly.kpxe"))).data) == (root / "undionly.kpxe").read_bytes()
    tftp.server.stop(2.0)
    assert [e.revision for e in tftp.events.events] == ["a" * 40, "b" * 40, "b" * 40]


def test_events_carry_client_mac_node_file_bytes_and_duration(root: Path) -> None:
    mac = "52:54:00:aa:bb:01"
    node = Node(name="node-1", mac=mac, profile="p", hostname="node-1")
    for running in _start(root, mac_for_address={"127.0.0.1": mac}.get):
        running.holder.swap(generation("c" * 40, {}, (node,)))
        fetch(running.address, Receiver(rrq("undionly.kpxe", blksize="1432", tsize="0")))
        _answer(running.address, p.encode(rrq("nope.bin")))
        running.server.stop(2.0)
        ok, missing = running.events.events
        assert (ok.stage, ok.revision, ok.mac, ok.node, ok.client) == ("tftp", "c" * 40, mac, "node-1", "127.0.0.1")
        assert ok.detail["file"] == "undionly.kpxe"
        assert ok.detail["bytes"] == 74_213
        assert (ok.detail["blksize"], ok.detail["windowsize"], ok.detail["result"]) == (1432, 1, "ok")
        assert ok.detail["duration"] >= 0
        assert (missing.detail["result"], missing.detail["error_code"], missing.detail["file"]) == (
            "error",
            p.ERR_NOT_FOUND,
            "nope.bin",
        )


# --------------------------------------------------------------------------- lifecycle


def test_stop_lets_an_in_flight_transfer_finish_and_closes_the_port(root: Path) -> None:
    for running in _start(root):
        address = running.address
        with udp_client() as sock:
            receiver = Receiver(rrq("small.bin", timeout="5"))
            sock.sendto(receiver.start(), address)
            datagram, tid = sock.recvfrom(2000)
            stopper = threading.Thread(target=running.server.stop, args=(10.0,))
            stopper.start()
            carry_on(sock, receiver, datagram, tid)
            stopper.join(SOCKET_TIMEOUT)
            assert not stopper.is_alive()
        assert bytes(receiver.data) == (root / "small.bin").read_bytes()
        assert running.events.events[-1].detail["result"] == "ok"
        # Nothing listens any more: the kernel answers with port unreachable.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SOCKET_TIMEOUT)
            sock.connect(address)
            sock.send(p.encode(rrq("small.bin")))
            with pytest.raises(ConnectionRefusedError):
                sock.recv(2000)


def test_listens_only_on_the_configured_address(tftp: Running) -> None:
    host, port = tftp.address
    assert host == "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(("127.0.0.2", port))
        sock.send(p.encode(rrq("small.bin")))
        with pytest.raises(ConnectionRefusedError):
            sock.recv(2000)


def test_port_zero_then_address_reports_the_real_port(tftp: Running) -> None:
    assert tftp.address[1] != 0
