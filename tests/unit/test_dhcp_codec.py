"""protocol.dhcp: real firmware packets decode to the facts they carry; any bytes are safe."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.protocol import dhcp as d
from tests.dhcp_fixtures import client_message, vectors

VECTORS = vectors()


@pytest.mark.parametrize("packet", VECTORS, ids=[f"{p['client']}-{p['message']}" for p in VECTORS])
def test_real_packets_decode_to_the_captured_facts(packet: dict[str, object]) -> None:
    message = d.decode(bytes.fromhex(str(packet["udp_payload_hex"])))
    assert isinstance(message, d.DhcpMessage)
    assert d.MESSAGE_NAMES[message.message_type or 0] == packet["message"]
    assert message.mac == packet["chaddr"]
    assert message.broadcast is packet["broadcast_flag"]
    assert message.vendor_class == packet["option60"]
    assert (b"iPXE" in message.user_classes) is (packet["option77"] == "iPXE")
    assert message.options.get(d.OPT_CLIENT_ARCH, b"").hex() == packet["option93"]
    assert (message.ipxe_options is not None) is packet["has_option175"]


def test_ipxe_option_175_is_parsed_into_sub_options() -> None:
    packet = next(p for p in VECTORS if p["has_option175"])
    message = d.decode(bytes.fromhex(packet["udp_payload_hex"]))
    assert isinstance(message, d.DhcpMessage)
    sub = message.ipxe_options
    assert sub is not None
    assert sub[0x13] == b"\x01"  # iPXE advertises HTTP support (175.19)


@pytest.mark.parametrize("packet", VECTORS, ids=[f"{p['client']}-{p['message']}" for p in VECTORS])
def test_real_packets_round_trip(packet: dict[str, object]) -> None:
    message = d.decode(bytes.fromhex(str(packet["udp_payload_hex"])))
    assert isinstance(message, d.DhcpMessage)
    again = d.decode(d.encode(message))
    assert again == message


def test_user_class_rfc3004_list_and_raw_form() -> None:
    assert d.parse_user_classes(b"iPXE") == (b"iPXE",)
    assert d.parse_user_classes(b"\x04iPXE\x03foo") == (b"iPXE", b"foo")
    assert d.parse_user_classes(b"") == ()
    assert d.parse_user_classes(b"\x00") == (b"\x00",)


def test_option_overload_reads_options_from_file_and_sname() -> None:
    base = d.encode(client_message(d.DISCOVER, options={d.OPT_OVERLOAD: b"\x03"}))
    raw = bytearray(base)
    file_options = bytes((d.OPT_VENDOR_CLASS, 9)) + b"PXEClient" + b"\xff"
    sname_options = bytes((d.OPT_USER_CLASS, 4)) + b"iPXE" + b"\xff"
    raw[108 : 108 + len(file_options)] = file_options
    raw[44 : 44 + len(sname_options)] = sname_options
    message = d.decode(bytes(raw))
    assert isinstance(message, d.DhcpMessage)
    assert message.vendor_class == "PXEClient"
    assert message.user_classes == (b"iPXE",)
    assert message.file == b"" and message.sname == b""
    assert d.OPT_OVERLOAD not in message.options


def test_long_options_are_split_and_concatenated_back() -> None:
    long = bytes(range(256)) * 2
    message = client_message(d.DISCOVER, options={d.OPT_VENDOR_SPECIFIC: long})
    decoded = d.decode(d.encode(message))
    assert isinstance(decoded, d.DhcpMessage)
    assert decoded.options[d.OPT_VENDOR_SPECIFIC] == long


def test_relay_agent_information_is_written_last_unchanged() -> None:
    relay = b"\x01\x04eth0\x02\x03abc"
    message = client_message(d.DISCOVER, options={d.OPT_RELAY_AGENT: relay, d.OPT_HOSTNAME: b"x"})
    wire = d.encode(message)
    assert bytes((82, len(relay))) + relay + b"\xff" in wire  # the last option, then END
    assert len(wire) >= d.MIN_PACKET


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x01" * 239, "too short"),
        (b"\x03" + bytes(239), "bad op"),
        (b"\x01\x01\x06" + bytes(237), "no DHCP magic cookie"),
    ],
)
def test_garbage_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    result = d.decode(data)
    assert isinstance(result, d.Rejected)
    assert reason in result.reason


def test_truncated_options_are_rejected() -> None:
    wire = d.encode(client_message(d.DISCOVER))
    cut = wire[: d.HEADER_LEN + 4] + b"\x3c\x20PXE"
    assert isinstance(d.decode(cut), d.Rejected)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_decode_or_reject_cleanly(data: bytes) -> None:
    result = d.decode(data)
    assert isinstance(result, d.DhcpMessage | d.Rejected)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"", b"\x34\x01\x01", b"\x34\x01\x03", b"\x34\x01\x07"]))
def test_random_options_after_a_valid_header_decode_or_reject(tail: bytes, overload: bytes) -> None:
    header = d.encode(client_message(d.DISCOVER))[: d.HEADER_LEN + 4]
    result = d.decode(header + overload + tail)
    assert isinstance(result, d.DhcpMessage | d.Rejected)
    if isinstance(result, d.DhcpMessage):
        again = d.decode(d.encode(result))
        assert isinstance(again, d.DhcpMessage)


options_strategy = st.dictionaries(
    st.integers(1, 254).filter(lambda c: c not in (d.OPT_OVERLOAD, d.OPT_MESSAGE_TYPE)),
    st.binary(min_size=1, max_size=300),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.binary(min_size=6, max_size=6),
    options_strategy,
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, d.FLAG_BROADCAST]),
)
def test_encode_then_decode_is_identity(xid: int, chaddr: bytes, options: dict[int, bytes], gi: int,
                                        flags: int) -> None:
    message = d.DhcpMessage(
        op=d.BOOTREPLY,
        xid=xid,
        chaddr=chaddr,
        flags=flags,
        giaddr=IPv4Address(gi),
        options={d.OPT_MESSAGE_TYPE: b"\x02", **options},
        file=b"ipxe.efi",
    )
    assert d.decode(d.encode(message)) == message
