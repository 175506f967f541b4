"""core.boot: matchbox label parsing and selection, the node-by-MAC rule, 404 reasons, stages, NoCloud."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core import boot
from reconciler.core.model import Boot, DesiredState, Group, Node, Profile, Site


def _state(groups: tuple[Group, ...] = (), nodes: tuple[Node, ...] = ()) -> DesiredState:
    profiles = {
        pid: Profile(pid, pid, Boot(kernel=f"/assets/{pid}/vmlinuz", initrd=(f"/assets/{pid}/initrd",)))
        for pid in ("install", "disk", "rack", "worker", "rackworker", "a", "b")
    }
    profiles["gen"] = Profile("gen", "gen", Boot(), generic_id="gen-t")
    return DesiredState(
        revision="a" * 40,
        site=Site(IPv4Address("10.0.0.1")),
        nodes=nodes,
        profiles=profiles,
        groups=tuple(sorted(groups, key=lambda g: g.id)),
        cloud_init={},
    )


NODE = Node("node-1", "52:54:00:aa:bb:01", "install", "node-1", IPv4Address("10.0.0.21"), {"rack": "r1"})


# -- net.ParseMAC ------------------------------------------------------------------------------

GO_PARSE_MAC = [
    ("00:00:5e:00:53:01", "00:00:5e:00:53:01"),
    ("00-00-5E-00-53-01", "00:00:5e:00:53:01"),
    ("0000.5e00.5301", "00:00:5e:00:53:01"),
    ("02:00:5e:10:00:00:00:01", "02:00:5e:10:00:00:00:01"),  # EUI-64
    ("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", None),  # 20 octets: kept below
    ("0000.5e00.5301.0000", "00:00:5e:00:53:01:00:00"),
    ("000000.5e0053", None),
    ("00:00:5e:00:53", None),
    ("00:00:5e-00:53:01", None),  # mixed separators
    ("00005e005301", None),  # bare hex: Go refuses it
    ("0:0:5e:0:53:1", None),
    ("zz:00:5e:00:53:01", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "want"), GO_PARSE_MAC[:4] + GO_PARSE_MAC[5:])
def test_parse_mac_follows_go(text: str, want: str | None) -> None:
    assert boot.parse_mac(text) == want


def test_parse_mac_infiniband_20_octets() -> None:
    text = GO_PARSE_MAC[4][0]
    assert boot.parse_mac(text) == text


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-"]), st.booleans())
def test_parse_mac_any_spelling_of_six_octets(raw: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in raw)
    if upper:
        text = text.upper()
    assert boot.parse_mac(text) == ":".join(f"{b:02x}" for b in raw)


# -- labelsFromRequest -------------------------------------------------------------------------


def _reference_parse_mac(text: str) -> str | None:
    """The first, plainly written port of Go's ParseMAC (one regex per octet), kept to check the fast one."""
    if len(text) < 14:
        return None
    if text[2] in ":-":
        if (len(text) + 1) % 3 != 0:
            return None
        octets = text.split(text[2])
        if not all(re.fullmatch(r"[0-9A-Fa-f]{2}", o) for o in octets):
            return None
    elif text[4] == ".":
        if (len(text) + 1) % 5 != 0:
            return None
        groups = text.split(".")
        if not all(re.fullmatch(r"[0-9A-Fa-f]{4}", g) for g in groups):
            return None
        octets = [q for g in groups for q in (g[:2], g[2:])]
    else:
        return None
    return ":".join(o.lower() for o in octets) if len(octets) in (6, 8, 20) else None


def _reference_labels(query: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in labels:
            continue
        if key.lower() == "mac":
            mac = _reference_parse_mac(value)
            if mac is not None:
                labels[key] = mac
            continue
        labels[key] = value
    return labels


_MAC_ALPHABET = "0123456789abcdefABCDEFxX:-."
_MACS = st.one_of(
    st.text(_MAC_ALPHABET, max_size=64),
    st.lists(st.text("0123456789abcdefABCDEFg", min_size=1, max_size=5), min_size=1, max_size=21).flatmap(
        lambda parts: st.sampled_from([":", "-", "."]).map(lambda sep: sep.join(parts))
    ),
)


@given(_MACS)
def test_parse_mac_matches_the_reference_port(text: str) -> None:
    assert boot.parse_mac(text) == _reference_parse_mac(text)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["mac", "MAC", "Mac", "rack", "a+b", "m%61c", "%", "x=y", ""]),
            st.one_of(_MACS, st.text("ab%+=2F:-C3&é ", max_size=12)),
            st.booleans(),
        ),
        max_size=6,
    )
)
def test_labels_match_parse_qsl(fields: list[tuple[str, str, bool]]) -> None:
    query = "&".join(f"{k}={v}" if eq else k for k, v, eq in fields)
    assert boot.labels_from_query(query) == _reference_labels(query)


def test_every_query_parameter_is_a_label_and_blank_values_are_kept() -> None:
    labels = boot.labels_from_query("uuid=u1&mac=52-54-00-AA-BB-01&domain=&hostname=h&arch=x86_64")
    assert labels == {"uuid": "u1", "mac": "52:54:00:aa:bb:01", "domain": "", "hostname": "h", "arch": "x86_64"}


def test_unparseable_mac_is_dropped_and_the_first_value_wins() -> None:
    assert boot.labels_from_query("mac=nope&rack=r1&rack=r2") == {"rack": "r1"}


def test_mac_key_in_any_case_is_normalised_under_its_own_key() -> None:
    assert boot.labels_from_query("MAC=5254.00aa.bb01") == {"MAC": "52:54:00:aa:bb:01"}


# -- selection ---------------------------------------------------------------------------------


def test_node_by_mac_comes_before_a_group_with_more_selectors() -> None:
    groups = (Group("rw", "rw", "rackworker", {"rack": "r1", "role": "worker"}),)
    index = boot.BootIndex.build(_state(groups, (NODE,)))
    target = boot.select_target(index, {"mac": NODE.mac, "rack": "r1", "role": "worker"})
    assert target is not None and target.node == NODE and target.file("ipxe") == "ipxe/node-1.ipxe"


def test_most_selectors_first_then_id_then_default() -> None:
    groups = (
        Group("default", "d", "disk"),
        Group("rack", "r", "rack", {"rack": "r1"}),
        Group("z-role", "w", "worker", {"role": "worker"}),
        Group("rw", "rw", "rackworker", {"rack": "r1", "role": "worker"}),
    )
    index = boot.BootIndex.build(_state(groups))
    pick = {
        "both": {"rack": "r1", "role": "worker"},
        "rack": {"rack": "r1"},
        "role": {"role": "worker"},
        "none": {"rack": "r9"},
    }
    got = {name: boot.select_target(index, labels) for name, labels in pick.items()}
    assert {name: t.group.id for name, t in got.items() if t and t.group} == {
        "both": "rw",
        "rack": "rack",
        "role": "z-role",
        "none": "default",
    }
    # a tie on selector count is decided by group id, the same answer every time
    tie = boot.BootIndex.build(_state((Group("b", "b", "b", {"x": "1"}), Group("a", "a", "a", {"y": "1"}))))
    for _ in range(3):
        target = boot.select_target(tie, {"x": "1", "y": "1"})
        assert target is not None and target.group is not None and target.group.id == "a"


def test_group_with_mac_selector_matches_any_spelling() -> None:
    index = boot.BootIndex.build(_state((Group("m", "m", "install", {"mac": "52:54:00:aa:bb:09"}),)))
    labels = boot.labels_from_query("mac=52-54-00-AA-BB-09")
    target = boot.select_target(index, labels)
    assert target is not None and target.group is not None and target.group.id == "m"


def test_no_match_without_default_group_is_a_404_that_says_why() -> None:
    index = boot.BootIndex.build(_state((Group("rack", "r", "rack", {"rack": "r1"}),), (NODE,)))
    answer = boot.answer_boot("ipxe", index, {}, {"mac": "52:54:00:00:00:09", "rack": "r2"}, "mac=...")
    assert answer.status == 404 and answer.stage == "unknown-machine"
    assert b"no node has mac 52:54:00:00:00:09" in answer.body
    assert b"rack='r2'" in answer.body and b"no default group" in answer.body


def test_matched_but_file_missing_names_the_file() -> None:
    index = boot.BootIndex.build(_state((), (NODE,)))
    answer = boot.answer_boot("grub", index, {}, {"mac": NODE.mac}, "")
    assert answer.status == 404 and b"grub/node-1.cfg" in answer.body and answer.node == NODE


def test_metadata_appends_request_variables_like_matchbox() -> None:
    index = boot.BootIndex.build(_state((), (NODE,)))
    files = {"metadata/node-1.env": b"NAME=node-1"}
    query = "mac=52-54-00-aa-bb-01&hostname=x%0AEVIL%3D1"
    answer = boot.answer_boot("metadata", index, files, boot.labels_from_query(query), query)
    assert answer.body.decode().splitlines() == [
        "NAME=node-1",
        "REQUEST_QUERY_HOSTNAME=x EVIL=1",
        "REQUEST_QUERY_MAC=52:54:00:aa:bb:01",
        f"REQUEST_RAW_QUERY={query}",
    ]


def test_metadata_drops_query_keys_that_are_not_env_names() -> None:
    """Keys that could start a line or a key of their own are dropped; `d-e` is printed as
    matchbox's renderAsEnvFile prints it (strings.ToUpper only: `REQUEST_QUERY_D-E`)."""
    index = boot.BootIndex.build(_state((), (NODE,)))
    files = {"metadata/node-1.env": b"NAME=node-1\n"}
    query = "mac=52-54-00-aa-bb-01&a%0AX=1&b%0D%0AY=2&c%3DZ=3&d-e=4&f+g=5&ok_1=6"
    answer = boot.answer_boot("metadata", index, files, boot.labels_from_query(query), query)
    lines = answer.body.decode().splitlines()
    assert lines == [
        "NAME=node-1",
        "REQUEST_QUERY_D-E=4",
        "REQUEST_QUERY_MAC=52:54:00:aa:bb:01",
        "REQUEST_QUERY_OK_1=6",
        f"REQUEST_RAW_QUERY={query}",
    ]
    assert not any(line.startswith(("X=", "Y=", "Z=")) for line in lines)


def test_generic_needs_a_generic_template() -> None:
    index = boot.BootIndex.build(_state((Group("g", "g", "gen", {"a": "1"}), Group("i", "i", "install", {"b": "1"}))))
    assert boot.answer_boot("generic", index, {"rendered-generic/group-g": b"x"}, {"a": "1"}, "").status == 200
    no = boot.answer_boot("generic", index, {}, {"b": "1"}, "")
    assert no.status == 404 and b"no generic template" in no.body


# -- stages and NoCloud ------------------------------------------------------------------------


def test_asset_stage_by_node_profile_then_by_any_profile() -> None:
    index = boot.BootIndex.build(_state((), (NODE,)))
    assert boot.asset_stage(index, NODE, "/assets/install/vmlinuz") == "kernel"
    assert boot.asset_stage(index, NODE, "/assets/install/initrd") == "initrd"
    assert boot.asset_stage(index, NODE, "/assets/disk/vmlinuz") == "asset"  # not this node's kernel
    assert boot.asset_stage(index, None, "/assets/disk/vmlinuz") == "kernel"
    assert boot.asset_stage(index, None, "/assets/other.iso") == "asset"


def test_node_for_client_by_mac_then_ip() -> None:
    index = boot.BootIndex.build(_state((), (NODE,)))
    assert boot.node_for_client(index, {}, "10.0.0.21") == NODE
    assert boot.node_for_client(index, {"mac": NODE.mac}, "10.9.9.9") == NODE
    assert boot.node_for_client(index, {}, "10.9.9.9") is None


def test_strip_revision() -> None:
    assert boot.strip_revision("/r/abc/assets/x") == ("abc", "/assets/x")
    assert boot.strip_revision("/r/abc") == ("abc", "/")
    assert boot.strip_revision("/assets/x") == (None, "/assets/x")


def test_cloud_init_content_types_and_optional_vendor_data() -> None:
    index = boot.BootIndex.build(_state((), (NODE,)))
    files = {
        f"cloud-init/{NODE.mac}/user-data": b"#cloud-config\n{}\n",
        f"cloud-init/{NODE.mac}/meta-data": b"instance-id: x\n",
    }
    user = boot.answer_cloud_init(index, files, "52-54-00-AA-BB-01", "user-data")
    assert (user.status, user.content_type, user.node) == (200, "text/cloud-config; charset=utf-8", NODE)
    meta = boot.answer_cloud_init(index, files, NODE.mac, "meta-data")
    assert meta.content_type.startswith("application/yaml")
    vendor = boot.answer_cloud_init(index, files, NODE.mac, "vendor-data")
    assert (vendor.status, vendor.body) == (200, b"")
    unknown = boot.answer_cloud_init(index, files, "52:54:00:00:00:09", "user-data")
    assert unknown.status == 404 and unknown.node is None
    assert boot.answer_cloud_init(index, files, NODE.mac, "network-config").status == 404
    assert boot.answer_cloud_init(index, files, "garbage", "user-data").status == 404


# -- who may have a node's own answers (its seed carries its report token) ---------------------

NO_IP = Node("node-2", "52:54:00:aa:bb:02", "install", "node-2", None)
OTHER_MAC = "52:54:00:00:00:77"
LEASES = {"10.0.0.50": NO_IP.mac, "10.0.0.51": OTHER_MAC, "10.0.0.21": NODE.mac}


@pytest.mark.parametrize(
    ("node", "address", "holder", "refused"),
    [
        (NODE, "10.0.0.21", None, None),  # its reserved address
        (NODE, "::ffff:10.0.0.21", None, None),  # the same, from a dual-stack socket
        (NODE, "10.0.0.99", None, "has the reserved address 10.0.0.21, and this request comes from 10.0.0.99"),
        (NODE, "10.0.0.50", LEASES, "has the reserved address 10.0.0.21"),  # even leased: not its address
        (NO_IP, "10.0.0.50", LEASES, None),  # leased to it by our DHCP server
        (NO_IP, "10.0.0.99", LEASES, None),  # nothing known of the address
        (NO_IP, "10.0.0.99", None, None),  # no DHCP server of ours
        (NO_IP, "10.0.0.51", LEASES, f"10.0.0.51 is leased to {OTHER_MAC}, not to node 'node-2'"),
        (NO_IP, "10.0.0.21", None, "10.0.0.21 is the reserved address of node 'node-1'"),
    ],
)
def test_client_refusal(node: Node, address: str, holder: dict[str, str] | None, refused: str | None) -> None:
    index = boot.BootIndex.build(_state((), (NODE, NO_IP)))
    got = boot.client_refusal(index, node, boot.Client(address, holder.get if holder is not None else None))
    if refused is None:
        assert got is None
    else:
        assert got is not None and refused in got


def test_a_nodes_script_and_seed_are_refused_to_another_machine_not_its_group_answers() -> None:
    index = boot.BootIndex.build(_state((Group("d", "d", "disk"),), (NODE,)))
    files = {"ipxe/node-1.ipxe": b"#!ipxe\nkernel x\n", "ipxe/group-d.ipxe": b"#!ipxe\nexit\n",
             f"cloud-init/{NODE.mac}/user-data": b"#cloud-config\n"}
    stranger = boot.Client("10.0.0.99")
    refused = boot.answer_boot("ipxe", index, files, {"mac": NODE.mac}, "", client=stranger)
    assert (refused.status, refused.refused, refused.stage, refused.node) == (403, True, "ipxe-script", NODE)
    assert b"kernel" not in refused.body
    assert boot.answer_boot("ipxe", index, files, {"mac": NODE.mac}, "", client=boot.Client("10.0.0.21")).status == 200
    assert boot.answer_boot("ipxe", index, files, {"mac": NODE.mac}, "").status == 200  # trust any client
    group = boot.answer_boot("ipxe", index, files, {"mac": "52:54:00:00:00:09"}, "", client=stranger)
    assert (group.status, group.body) == (200, b"#!ipxe\nexit\n")
    seed = boot.answer_cloud_init(index, files, NODE.mac, "user-data", stranger)
    assert (seed.status, seed.refused, seed.node) == (403, True, NODE) and b"#cloud-config" not in seed.body
    assert boot.answer_cloud_init(index, files, NODE.mac, "user-data", boot.Client("10.0.0.21")).status == 200


def test_stage_of_paths_answered_before_selection() -> None:
    assert [boot.stage_of(p) for p in ("/ipxe", "/grub", "/metadata", "/generic", "/boot.ipxe", "/boot.ipxe.0",
                                       "/assets/x", "/cloud-init/m/user-data", "/cloud-init/m/x", "/other")] == [
        "ipxe-script", "grub", "metadata", "generic", "ipxe-bootstrap", "ipxe-bootstrap",
        "asset", "user-data", "unknown-machine", "unknown-machine"]
