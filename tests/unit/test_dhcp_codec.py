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


# --- replies that must fit the client (option 57, RFC 2131's 576 bytes, overload) ----------

LONG_DOMAIN = ".".join(["a" * 50, "b" * 50, "lab", "example"])  # 120 bytes
MANY_DNS = b"".join(IPv4Address(f"10.1.0.{i}").packed for i in range(1, 41))


def big_reply(file: bytes = b"", sname: bytes = b"", relay: bytes | None = None) -> d.DhcpMessage:
    options: dict[int, bytes] = {
        d.OPT_MESSAGE_TYPE: bytes((d.OFFER,)),
        d.OPT_SERVER_ID: IPv4Address("10.99.0.1").packed,
        d.OPT_LEASE_TIME: b"\x00\x00\x02\x58",
        d.OPT_SUBNET_MASK: IPv4Address("255.255.255.0").packed,
        d.OPT_ROUTERS: IPv4Address("10.99.0.254").packed,
        d.OPT_DNS: MANY_DNS,
        d.OPT_DOMAIN_NAME: LONG_DOMAIN.encode(),
        d.OPT_HOSTNAME: b"node-1",
        d.OPT_BOOTFILE: b"http://10.99.0.1:8080/boot.ipxe",
    }
    if relay is not None:
        options[d.OPT_RELAY_AGENT] = relay
    return d.message(d.BOOTREPLY, 7, bytes.fromhex("525400aabb01"), options, yiaddr=IPv4Address("10.99.0.21"),
                     file=file, sname=sname)


def limit_of(max_size: int | None) -> int:
    options = {} if max_size is None else {d.OPT_MAX_SIZE: max_size.to_bytes(2, "big")}
    return d.reply_limit(client_message(d.DISCOVER, "52:54:00:aa:bb:01", options=options))


def test_the_reply_limit_is_option_57_less_the_headers_and_576_without_it() -> None:
    assert limit_of(None) == 548
    assert limit_of(300) == 548  # below RFC 2132's minimum: 576
    assert limit_of(1024) == 996
    assert limit_of(65535) == 1472  # no more than an Ethernet frame


def test_a_reply_too_long_for_576_bytes_spills_into_file_and_sname_and_reads_back_whole() -> None:
    reply = big_reply(relay=b"\x01\x04port")
    plain = d.encode(reply)
    assert len(plain) > 548  # what went out before: a client taking 576-byte datagrams drops it
    wire = d.encode(reply, limit=548)
    assert len(wire) <= 548
    back = d.decode(wire)
    assert isinstance(back, d.DhcpMessage)
    assert back.options == reply.options  # every option, values whole (overload undone by decode)
    assert wire[d.HEADER_LEN + 4 : d.HEADER_LEN + 7] == bytes((d.OPT_MESSAGE_TYPE, 1, d.OFFER))
    assert wire.rstrip(b"\0").endswith(d.encode_option(d.OPT_RELAY_AGENT, b"\x01\x04port") + b"\xff")
    # Room enough (option 57): no overload, the same bytes as without a limit.
    assert d.encode(reply, limit=limit_of(1500)) == plain


def test_a_boot_file_in_the_file_field_stays_and_what_fits_nowhere_is_left_out_least_needed_first() -> None:
    reply = big_reply(file=b"undionly.kpxe")
    wire = d.encode(reply, limit=548)
    back = d.decode(wire)
    assert isinstance(back, d.DhcpMessage) and len(wire) <= 548
    assert back.file == b"undionly.kpxe"
    for code in (d.OPT_SERVER_ID, d.OPT_LEASE_TIME, d.OPT_SUBNET_MASK, d.OPT_ROUTERS, d.OPT_BOOTFILE, d.OPT_HOSTNAME):
        assert back.options[code] == reply.options[code]
    # sname (63 bytes) cannot hold the 120-byte domain name: with `file` taken by the boot file
    # it is left out, the least needed option; never a lease, network or boot option.
    assert set(reply.options) - set(back.options) == {d.OPT_DOMAIN_NAME}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.integers(1, 254).filter(lambda c: c not in (d.OPT_OVERLOAD, d.OPT_MESSAGE_TYPE, 82)),
                    st.binary(min_size=1, max_size=300), max_size=12),
    st.sampled_from([548, 700, 996, 1472]),
    st.booleans(),
)
def test_any_reply_fits_its_limit_and_keeps_what_it_keeps_whole(
    extra: dict[int, bytes], limit: int, with_file: bool
) -> None:
    options = {d.OPT_MESSAGE_TYPE: bytes((d.ACK,)), **extra}
    reply = d.message(d.BOOTREPLY, 1, bytes(6), options, file=b"ipxe.efi" if with_file else b"")
    wire = d.encode(reply, limit=limit)
    assert len(wire) <= max(limit, d.MIN_PACKET)
    back = d.decode(wire)
    assert isinstance(back, d.DhcpMessage)
    for code, value in back.options.items():
        assert options[code] == value
    if len(d.encode(reply)) <= limit:
        assert back.options == options
