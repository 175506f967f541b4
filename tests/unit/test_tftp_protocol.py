"""Unit tests for reconciler.protocol.tftp: codec, negotiation, paths and the transfer machine.

The transfer machine is driven by `Client`, an in-memory RFC 1350/7440 client that can lose
packets, so reliability (retransmission, duplicate ACKs, gaps, rollover) is checked without
sockets or clocks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.protocol import tftp as p
from tests.support import VECTORS


def rrq(name: str = "f", mode: str = "octet", **options: str) -> p.ReadRequest:
    return p.ReadRequest(name, mode, tuple(options.items()))


# --------------------------------------------------------------------------- codec


def _ovmf_rrqs() -> list[dict[str, str]]:
    data = json.loads(VECTORS.read_text())
    return [pkt for pkt in data["packets"] if pkt.get("message") == "TFTP RRQ"]


def test_captured_ovmf_rrqs_decode_to_what_the_firmware_asked() -> None:
    vectors = _ovmf_rrqs()
    assert len(vectors) >= 2
    for vector in vectors:
        packet = p.parse_packet(bytes.fromhex(vector["udp_payload_hex"]))
        assert isinstance(packet, p.ReadRequest)
        words = vector["text"].split()
        assert packet.filename == words[0]
        assert packet.mode == words[1]
        assert packet.options == tuple(zip(words[2::2], words[3::2], strict=True))
        # Re-encoding gives the firmware's bytes back.
        assert p.encode(packet) == bytes.fromhex(vector["udp_payload_hex"])


def test_captured_ovmf_probe_gets_an_oack_with_size_blksize_and_window() -> None:
    probe = next(v for v in _ovmf_rrqs() if "tsize" in v["text"])
    packet = p.parse_packet(bytes.fromhex(probe["udp_payload_hex"]))
    assert isinstance(packet, p.ReadRequest)
    negotiated = p.negotiate(packet, 850528)
    assert negotiated.oack == (("tsize", "850528"), ("blksize", "1468"), ("windowsize", "4"))
    assert (negotiated.blksize, negotiated.windowsize) == (1468, 4)


@pytest.mark.parametrize(
    "packet",
    [
        p.ReadRequest("boot/ipxe.efi", "octet", (("blksize", "1432"), ("tsize", "0"))),
        p.WriteRequest("x", "netascii"),
        p.DataPacket(65535, b"\x00\x01payload"),
        p.DataPacket(0, b""),
        p.AckPacket(0),
        p.AckPacket(65535),
        p.ErrorPacket(8, "size probe"),
        p.OptionAck((("tsize", "10"), ("blksize", "1468"))),
    ],
)
def test_encode_then_parse_round_trips(packet: p.Packet) -> None:
    assert p.parse_packet(p.encode(packet)) == packet


def test_option_names_and_mode_are_case_insensitive_and_repeats_keep_the_first() -> None:
    packet = p.parse_packet(b"\x00\x01f\x00OCTET\x00BLKSIZE\x001024\x00blksize\x00512\x00")
    assert packet == p.ReadRequest("f", "octet", (("blksize", "1024"),))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01file",
        b"\x00\x01file\x00",
        b"\x00\x09\x00",
        b"\x00\x03\x00",
        b"\x00\x01f\x00octet\x00blksize\x00",
        b"\x00\x01\xff\xfe\x00octet\x00",
    ],
)
def test_malformed_packets_raise_illegal_operation(data: bytes) -> None:
    with pytest.raises(p.TftpError) as caught:
        p.parse_packet(data)
    assert caught.value.code == p.ERR_ILLEGAL_OP
    assert caught.value.packet()[:4] == b"\x00\x05\x00\x04"


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_to_a_packet_or_a_clean_tftp_error(data: bytes) -> None:
    try:
        packet = p.parse_packet(data)
    except p.TftpError as error:
        assert 0 <= error.code <= 8
        assert p.parse_packet(error.packet()) == p.ErrorPacket(error.code, error.message)
        return
    p.encode(packet)  # whatever parses can be encoded again


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), min_size=2, max_size=10),
    st.sampled_from([b"\x00\x01", b"\x00\x02", b"\x00\x06"]),
)
def test_structured_requests_never_escape_as_other_exceptions(parts: list[bytes], opcode: bytes) -> None:
    data = opcode + b"".join(part + b"\0" for part in parts)
    try:
        packet = p.parse_packet(data)
    except p.TftpError as error:
        assert error.code == p.ERR_ILLEGAL_OP
        return
    if isinstance(packet, p.ReadRequest):
        try:
            p.negotiate(packet, 1234)
            p.request_path(packet.filename)
        except p.TftpError as error:
            assert error.code in (p.ERR_NOT_FOUND, p.ERR_ACCESS, p.ERR_ILLEGAL_OP)


# --------------------------------------------------------------------------- negotiation


def test_no_options_means_no_oack_and_rfc1350_defaults() -> None:
    negotiated = p.negotiate(rrq(), 100)
    assert negotiated.oack is None
    assert (negotiated.blksize, negotiated.windowsize, negotiated.timeout) == (512, 1, 1.0)


def test_ipxe_blksize_and_tsize_are_acknowledged() -> None:
    negotiated = p.negotiate(rrq(blksize="1432", tsize="0"), 74213)
    assert negotiated.oack == (("blksize", "1432"), ("tsize", "74213"))
    assert negotiated.blksize == 1432


@pytest.mark.parametrize(
    ("asked", "granted"),
    [("8", "8"), ("65464", "65464"), ("70000", "65464"), ("7", None), ("0", None), ("abc", None), ("-5", None)],
)
def test_blksize_is_clamped_or_ignored(asked: str, granted: str | None) -> None:
    negotiated = p.negotiate(rrq(blksize=asked), 10)
    assert dict(negotiated.oack or ()).get("blksize") == granted
    assert negotiated.blksize == int(granted or 512)


def test_server_limits_clamp_blksize_and_windowsize() -> None:
    limits = p.Limits(max_blksize=1468, max_windowsize=8)
    negotiated = p.negotiate(rrq(blksize="9000", windowsize="64"), 10, limits)
    assert negotiated.oack == (("blksize", "1468"), ("windowsize", "8"))


def test_timeout_windowsize_ranges_and_unknown_options() -> None:
    negotiated = p.negotiate(rrq(timeout="3", windowsize="16", multicast="", rollover="0"), 10)
    assert negotiated.oack == (("timeout", "3"), ("windowsize", "16"))
    assert negotiated.timeout == 3.0
    assert p.negotiate(rrq(timeout="0", windowsize="0"), 10).oack is None
    assert p.negotiate(rrq(timeout="256", windowsize="65536"), 10).oack is None


def test_tsize_is_left_out_when_the_size_is_unknown() -> None:
    assert p.negotiate(rrq(tsize="0"), None).oack is None


def test_unsupported_modes_are_refused_with_illegal_operation() -> None:
    with pytest.raises(p.TftpError) as caught:
        p.negotiate(rrq(mode="mail"), 1)
    assert caught.value.code == p.ERR_ILLEGAL_OP
    assert p.negotiate(rrq(mode="netascii"), 1).netascii


def test_netascii_translation_and_announced_size() -> None:
    raw = b"line1\nline2\r\nend\r"
    assert p.netascii_encode(raw) == b"line1\r\nline2\r\0\r\nend\r\0"
    assert p.netascii_size(raw) == len(p.netascii_encode(raw))


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("asked", "relative"),
    [("ipxe.efi", "ipxe.efi"), ("/ipxe.efi", "ipxe.efi"), ("//a/./b//c", "a/b/c"), ("a/b..c", "a/b..c")],
)
def test_request_paths_are_made_root_relative(asked: str, relative: str) -> None:
    assert p.request_path(asked) == relative


@pytest.mark.parametrize(
    "asked", ["../etc/passwd", "/../etc/passwd", "a/../../b", "a\\..\\b", "a\x00b", "a\nb", "..", "a/.."]
)
def test_request_paths_that_could_escape_are_access_violations(asked: str) -> None:
    with pytest.raises(p.TftpError) as caught:
        p.request_path(asked)
    assert caught.value.code == p.ERR_ACCESS


def test_empty_path_is_not_found() -> None:
    with pytest.raises(p.TftpError) as caught:
        p.request_path("/")
    assert caught.value.code == p.ERR_NOT_FOUND


def test_path_is_within() -> None:
    assert p.path_is_within("/srv/tftp/a", "/srv/tftp")
    assert p.path_is_within("/srv/tftp", "/srv/tftp")
    assert not p.path_is_within("/srv/tftpx/a", "/srv/tftp")
    assert not p.path_is_within("/etc/passwd", "/srv/tftp")


# --------------------------------------------------------------------------- the transfer


@dataclass
class Client:
    """An in-memory RFC 1350 + RFC 7440 receiving client around a ReadTransfer."""

    machine: p.ReadTransfer
    windowsize: int = 1
    lose_to_client: Callable[[int], bool] = lambda n: False  # n counts server datagrams from 1
    lose_to_server: Callable[[int], bool] = lambda n: False  # n counts client ACKs from 1
    # Before the machine's k-th input (ACK, ERROR or timeout; k from 1): call prepare() first?
    prepare_before: Callable[[int], bool] = lambda k: False
    lockstep_first: bool = False  # try ack_lockstep() on every ACK, as the server does
    declined: int = 0  # ACKs ack_lockstep() left to ack()
    received: bytearray = field(default_factory=bytearray)
    wire: list[bytes] = field(default_factory=list)  # every datagram the server emitted, in order
    data_sent: int = 0  # DATA datagrams the server emitted
    timeouts: int = 0
    _server_count: int = 0
    _client_count: int = 0
    _inputs: int = 0
    _expected: int = 1
    _in_window: int = 0
    _done: bool = False

    def _to_server(self, packet: p.Packet) -> list[bytes]:
        self._client_count += 1
        if self.lose_to_server(self._client_count):
            return []
        self._input()
        if self.lockstep_first and isinstance(packet, p.AckPacket):
            datagram = self.machine.ack_lockstep(packet.block)
            if datagram is not None:
                return [datagram]
            self.declined += 1
        step = self.machine.receive(packet)
        return list(step.datagrams)

    def _input(self) -> None:
        self._inputs += 1
        if self.prepare_before(self._inputs):
            self.machine.prepare()

    def run(self, max_timeouts: int = 10_000) -> p.Finished:
        pending = list(self.machine.start().datagrams)
        while self.machine.finished is None:
            if not pending:
                self.timeouts += 1
                assert self.timeouts <= max_timeouts
                self._input()
                pending = list(self.machine.timeout().datagrams)
                continue
            replies: list[bytes] = []
            for datagram in pending:
                self.wire.append(datagram)
                self._server_count += 1
                packet = p.parse_packet(datagram)
                if isinstance(packet, p.DataPacket):
                    self.data_sent += 1
                if self.lose_to_client(self._server_count):
                    continue
                replies.extend(self._on(packet))
            pending = replies
        assert self.machine.finished is not None
        return self.machine.finished

    def _on(self, packet: p.Packet) -> list[bytes]:
        if isinstance(packet, p.OptionAck):
            return self._to_server(p.AckPacket(0))
        assert isinstance(packet, p.DataPacket)
        if packet.block != self._expected & 0xFFFF:
            # Out of order (a gap): RFC 7440 says ACK the last block received in order.
            self._in_window = 0
            return self._to_server(p.AckPacket((self._expected - 1) & 0xFFFF))
        self.received += packet.payload
        self._expected += 1
        self._in_window += 1
        last = len(packet.payload) < self.machine.blksize
        if last or self._in_window >= self.windowsize:
            self._in_window = 0
            return self._to_server(p.AckPacket(packet.block))
        return []


def _never(_n: int) -> bool:
    return False


def transfer(
    data: bytes,
    request: p.ReadRequest,
    *,
    max_retries: int = 5,
    lose_to_client: Callable[[int], bool] = _never,
    lose_to_server: Callable[[int], bool] = _never,
) -> tuple[Client, p.Finished]:
    negotiated = p.negotiate(request, len(data))
    machine = p.ReadTransfer(p.BytesSource(data), negotiated, max_retries)
    sim = Client(
        machine,
        windowsize=negotiated.windowsize,
        lose_to_client=lose_to_client,
        lose_to_server=lose_to_server,
    )
    return sim, sim.run()


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 5000])
@pytest.mark.parametrize("windowsize", ["1", "4"])
def test_the_client_receives_exactly_the_file(size: int, windowsize: str) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    sim, finished = transfer(data, rrq(windowsize=windowsize))
    assert bytes(sim.received) == data
    assert finished == p.Finished(True, size)
    assert sim.timeouts == 0
    assert sim.data_sent == size // 512 + 1  # an exact multiple ends with an empty block


def test_duplicate_acks_do_not_double_send() -> None:
    data = bytes(512 * 10)
    negotiated = p.negotiate(rrq(), len(data))
    machine = p.ReadTransfer(p.BytesSource(data), negotiated)
    assert [p.parse_packet(d) for d in machine.start().datagrams] == [p.DataPacket(1, data[:512])]
    assert len(machine.receive(p.AckPacket(1)).datagrams) == 1
    # The same ACK again, and an older one: nothing is sent (no Sorcerer's Apprentice).
    assert machine.receive(p.AckPacket(1)).datagrams == ()
    assert machine.receive(p.AckPacket(0)).datagrams == ()
    assert [p.parse_packet(d) for d in machine.receive(p.AckPacket(2)).datagrams] == [p.DataPacket(3, data[1024:1536])]


def test_sorcerers_apprentice_does_not_happen_when_data_is_delayed() -> None:
    # Every DATA packet arrives twice at the client (delayed duplicate), so the client ACKs twice.
    data = bytes(range(256)) * 40
    negotiated = p.negotiate(rrq(), len(data))
    machine = p.ReadTransfer(p.BytesSource(data), negotiated)
    sent = list(machine.start().datagrams)
    block = 1
    while machine.finished is None:
        first = machine.receive(p.AckPacket(block))
        second = machine.receive(p.AckPacket(block))
        assert second.datagrams == ()
        sent += first.datagrams
        block += 1
    assert len(sent) == len(data) // 512 + 1


def test_window_restarts_after_a_gap_ack() -> None:
    data = bytes(512 * 20)
    negotiated = p.negotiate(rrq(windowsize="4"), len(data))
    machine = p.ReadTransfer(p.BytesSource(data), negotiated)
    assert p.parse_packet(machine.start().datagrams[0]) == p.OptionAck((("windowsize", "4"),))
    blocks = [p.parse_packet(d) for d in machine.receive(p.AckPacket(0)).datagrams]
    assert [b.block for b in blocks if isinstance(b, p.DataPacket)] == [1, 2, 3, 4]
    # Block 3 was lost: the client ACKs 2; the next window starts at 3.
    blocks = [p.parse_packet(d) for d in machine.receive(p.AckPacket(2)).datagrams]
    assert [b.block for b in blocks if isinstance(b, p.DataPacket)] == [3, 4, 5, 6]
    # The rest of the old window reaching the client makes it ACK 2 again: ignored.
    assert machine.receive(p.AckPacket(2)).datagrams == ()


def test_timeout_resends_the_window_from_the_last_acknowledged_block() -> None:
    data = bytes(512 * 20)
    negotiated = p.negotiate(rrq(windowsize="4"), len(data))
    machine = p.ReadTransfer(p.BytesSource(data), negotiated)
    machine.start()
    machine.receive(p.AckPacket(0))
    machine.receive(p.AckPacket(4))
    resent = [p.parse_packet(d) for d in machine.timeout().datagrams]
    assert [b.block for b in resent if isinstance(b, p.DataPacket)] == [5, 6, 7, 8]


def test_oack_is_resent_on_timeout_and_retries_are_bounded() -> None:
    negotiated = p.negotiate(rrq(tsize="0"), 10)
    machine = p.ReadTransfer(p.BytesSource(bytes(10)), negotiated, max_retries=3)
    oack = machine.start().datagrams
    for _ in range(3):
        assert machine.timeout().datagrams == oack
    step = machine.timeout()
    assert step.datagrams == ()
    assert step.finished is not None
    assert not step.finished.ok
    assert machine.receive(p.AckPacket(0)).datagrams == ()


def test_ovmf_size_probe_ends_quietly_as_a_size_probe() -> None:
    negotiated = p.negotiate(rrq("ipxe.efi", tsize="0", blksize="1468", windowsize="4"), 850528)
    machine = p.ReadTransfer(p.BytesSource(bytes(850528)), negotiated)
    assert p.parse_packet(machine.start().datagrams[0]) == p.OptionAck(
        (("tsize", "850528"), ("blksize", "1468"), ("windowsize", "4"))
    )
    step = machine.receive(p.ErrorPacket(p.ERR_OPTION, "User aborted the transfer"))
    assert step.datagrams == ()
    assert step.finished == p.Finished(False, 0, p.ERR_OPTION, "User aborted the transfer", by_client=True)
    assert step.finished.outcome == "size-probe"


def test_a_client_error_after_data_is_an_abort_not_a_probe() -> None:
    assert p.Finished(False, 1024, p.ERR_OPTION, "stop", by_client=True).outcome == "aborted"
    assert p.Finished(False, 0, 0, "gone", by_client=True).outcome == "aborted"
    assert p.Finished(False, 0, None, "timed out").outcome == "failed"
    assert p.Finished(True, 10).outcome == "ok"


def test_unexpected_packets_end_the_transfer_with_illegal_operation() -> None:
    machine = p.ReadTransfer(p.BytesSource(b"x"), p.negotiate(rrq(), 1))
    machine.start()
    step = machine.receive(p.DataPacket(1, b"x"))
    assert step.finished is not None
    assert step.finished.error_code == p.ERR_ILLEGAL_OP
    assert p.parse_packet(step.datagrams[0]) == p.ErrorPacket(p.ERR_ILLEGAL_OP, "expected ACK")


# Drop every Nth datagram with N larger than the window: a resent window then never loses the
# same block twice in a row. (With N dividing the window, any sender that resends whole windows,
# as RFC 7440 prescribes, would lose the same block forever.)
@pytest.mark.parametrize(("windowsize", "every"), [("1", 2), ("1", 3), ("4", 5), ("4", 7), ("16", 17), ("16", 23)])
def test_lossy_links_still_deliver_the_exact_file(windowsize: str, every: int) -> None:
    data = bytes((i * 7 + i // 512) % 251 for i in range(512 * 40 + 17))
    sim, finished = transfer(
        data,
        rrq(windowsize=windowsize),
        max_retries=1000,
        lose_to_client=lambda n: n % every == 0,
        lose_to_server=lambda n: n % 3 == 0,
    )
    assert finished.ok
    assert bytes(sim.received) == data


def _blocks(datagrams: tuple[bytes, ...]) -> list[int]:
    """The block numbers of the DATA datagrams among `datagrams`."""
    return [packet.block for packet in map(p.parse_packet, datagrams) if isinstance(packet, p.DataPacket)]


def test_a_window_built_ahead_is_what_the_closing_ack_gets() -> None:
    data = bytes(range(256)) * 40  # 20 blocks of 512
    machine = p.ReadTransfer(p.BytesSource(data), p.negotiate(rrq(windowsize="4"), len(data)))
    assert machine.prepare() == ()  # the OACK is not acknowledged yet: nothing to build
    machine.start()
    assert _blocks(machine.receive(p.AckPacket(0)).datagrams) == [1, 2, 3, 4]
    built = machine.prepare()
    assert [p.parse_packet(d) for d in built] == [p.DataPacket(n, data[(n - 1) * 512 : n * 512]) for n in (5, 6, 7, 8)]
    assert machine.prepare() == ()  # once per window
    step = machine.receive(p.AckPacket(4))
    assert all(a is b for a, b in zip(step.datagrams, built, strict=True))  # sent as built, not built again
    # Blocks 5-8 are out, 9-12 built ahead. The client lost 7: its ACK of 6 gets 7-10, with 9
    # and 10 as built; 11 and 12 wait for the next window.
    built = machine.prepare()
    step = machine.receive(p.AckPacket(6))
    assert _blocks(step.datagrams) == [7, 8, 9, 10]
    assert step.datagrams[2] is built[0] and step.datagrams[3] is built[1]
    step = machine.receive(p.AckPacket(10))
    assert _blocks(step.datagrams) == [11, 12, 13, 14]
    assert step.datagrams[0] is built[2] and step.datagrams[1] is built[3]


def test_nothing_is_built_ahead_past_the_last_block() -> None:
    machine = p.ReadTransfer(p.BytesSource(bytes(600)), p.negotiate(rrq(windowsize="4"), 600))
    machine.start()  # the OACK
    assert len(machine.receive(p.AckPacket(0)).datagrams) == 2  # blocks 1 and 2 (88 bytes): the whole file
    assert machine.prepare() == ()
    assert machine.receive(p.AckPacket(2)).finished == p.Finished(True, 600)
    assert machine.prepare() == ()


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 6000),
    blksize=st.sampled_from(["8", "512", "1468"]),
    windowsize=st.integers(1, 8),
    lost=st.frozensets(st.integers(1, 400), max_size=40),
    lost_acks=st.frozensets(st.integers(1, 200), max_size=20),
    prepared=st.frozensets(st.integers(1, 600)),
    read_ahead=st.sampled_from([1, 3000, 65536]),
    lockstep_first=st.booleans(),
)
def test_building_ahead_and_the_lockstep_shortcut_never_change_what_is_sent(
    size: int, blksize: str, windowsize: int, lost: frozenset[int], lost_acks: frozenset[int],
    prepared: frozenset[int], read_ahead: int, lockstep_first: bool,
) -> None:
    """Whenever prepare() is called (between any two inputs), and with ack_lockstep() tried first
    on every ACK as the server does, every datagram on the wire and the outcome are exactly those
    of a machine that does neither, over a lossy link."""
    data = bytes((i * 31 + i // 7) % 256 for i in range(size))
    request = rrq(blksize=blksize, windowsize=str(windowsize))
    runs = []
    for fast in (False, True):
        machine = p.ReadTransfer(p.BytesSource(data), p.negotiate(request, size), max_retries=10_000,
                                 read_ahead=read_ahead)
        sim = Client(
            machine, windowsize=windowsize, lose_to_client=lost.__contains__, lose_to_server=lost_acks.__contains__,
            prepare_before=prepared.__contains__ if fast else _never, lockstep_first=fast and lockstep_first,
        )
        runs.append((sim.run(), sim.wire, bytes(sim.received)))
    assert runs[0] == runs[1]
    assert runs[1][0].ok
    assert runs[1][2] == data


class _Releases(p.BytesSource):
    """A source that notes every release."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.released: list[int] = []

    def release(self, offset: int) -> None:
        self.released.append(offset)


@settings(max_examples=300, deadline=None)
@given(
    inputs=st.lists(st.one_of(st.integers(-2, 1), st.sampled_from(["timeout", "prepare"]),
                              st.integers(0, 0xFFFF).map(str)), max_size=120),
    options=st.sampled_from([{}, {"blksize": "8"}, {"blksize": "8", "tsize": "0"}, {"windowsize": "2"}]),
    read_ahead=st.sampled_from([1, 24, 100, 65536]),
)
@example(inputs=[0, "timeout", "timeout", "timeout", "timeout", 0], options={}, read_ahead=65536)  # ACK after giving up
def test_the_lockstep_shortcut_agrees_with_ack_on_any_input(
    inputs: list[int | str], options: dict[str, str], read_ahead: int
) -> None:
    """Any ACK numbers in any order, with timeouts and windows built ahead between them: where
    ack_lockstep() answers, ack() answers the same and leaves the same state; where it
    declines, it changed nothing. An int is an ACK relative to the newest block sent (0: that
    block), a numeric string an ACK of that wire number (duplicates, stale, ahead of what was
    sent, the OACK's 0). A small read-ahead makes blocks that must be read first."""
    sources = [_Releases(bytes(range(256)) * 2) for _ in range(2)]
    negotiated = p.negotiate(rrq(**options), 512)
    machines = [p.ReadTransfer(source, negotiated, max_retries=3, read_ahead=read_ahead) for source in sources]

    def state(machine: p.ReadTransfer) -> dict[str, object]:
        return {k: v for k, v in vars(machine).items() if k != "_source"}

    newest = 0  # block number of the newest DATA sent

    def note(datagrams: tuple[bytes, ...]) -> None:
        nonlocal newest
        for datagram in datagrams:
            if datagram[1] == p.DATA:
                newest = int.from_bytes(datagram[2:4], "big")

    step = machines[0].start()
    assert machines[1].start() == step
    note(step.datagrams)
    for item in inputs:
        if item == "timeout":
            step = machines[0].timeout()
            assert machines[1].timeout() == step
        elif item == "prepare":
            assert machines[0].prepare() == machines[1].prepare()
            step = p.Step()
        else:
            wire_block = (newest + item) & 0xFFFF if isinstance(item, int) else int(item)
            before = state(machines[1]), list(sources[1].released)
            shortcut = machines[1].ack_lockstep(wire_block)
            step = machines[0].ack(wire_block)
            if shortcut is not None:
                assert step == p.Step((shortcut,))
            else:
                assert (state(machines[1]), sources[1].released) == before
                assert machines[1].ack(wire_block) == step
        assert state(machines[0]) == state(machines[1])
        assert sources[0].released == sources[1].released  # what a netascii source may drop
        note(step.datagrams)


def test_block_numbers_roll_over_past_65535() -> None:
    blocks = 65536 + 300
    data = bytes((i // 8) % 256 for i in range(8 * blocks + 3))
    for windowsize in ("1", "16"):
        sim, finished = transfer(
            data, rrq(blksize="8", windowsize=windowsize), lose_to_client=lambda n: n % 50_000 == 0
        )
        assert finished == p.Finished(True, len(data))
        assert bytes(sim.received) == data


def test_the_lockstep_shortcut_takes_every_ack_but_reads_and_the_end_across_a_rollover() -> None:
    blocks = 65536 + 300
    data = bytes((i // 8) % 256 for i in range(8 * blocks + 3))
    machine = p.ReadTransfer(p.BytesSource(data), p.negotiate(rrq(blksize="8"), len(data)))
    sim = Client(machine, lockstep_first=True)
    assert sim.run() == p.Finished(True, len(data))
    assert bytes(sim.received) == data
    reads = blocks // (p.READ_AHEAD // 8) + 1
    assert sim.declined <= 1 + reads + 1  # the OACK's ACK 0, one per read, the final ACK


def test_netascii_source_translates_across_windows_and_resends() -> None:
    raw = (b"abc\n" * 300) + b"\r" + b"tail\r\n"
    wire = p.netascii_encode(raw)
    negotiated = p.negotiate(rrq(mode="netascii", windowsize="3", tsize="0"), p.netascii_size(raw))
    assert dict(negotiated.oack or ())["tsize"] == str(len(wire))
    machine = p.ReadTransfer(p.NetasciiSource(p.BytesSource(raw)), negotiated, max_retries=100)
    sim = Client(machine, windowsize=3, lose_to_client=lambda n: n % 4 == 0)
    assert sim.run().ok
    assert bytes(sim.received) == wire
