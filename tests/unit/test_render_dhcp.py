"""What the rendered DHCP configs give a machine: its address, its name and its boot file."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from reconciler.core.model import DesiredState, UnknownClients
from reconciler.core.render import render_generation
from reconciler.protocol import dhcp as d
from reconciler.protocol.dhcp_decide import choose_boot, plan_dhcp
from tests.dhcp_fixtures import client_message
from tests.render_support import DB_1, example_state, secure_override_state


def _ignore_state() -> DesiredState:
    state = example_state()
    return dataclasses.replace(state, site=dataclasses.replace(state.site, unknown_clients="ignore"))


def test_dhcpd_host_block_gives_the_mac_its_address_and_name() -> None:
    conf = render_generation(example_state())["dhcpd.conf"].decode()
    block = re.search(r"host node-1 \{(.*?)\}", conf, re.S)
    assert block is not None
    assert block.group(1).split() == [
        "hardware", "ethernet", "52:54:00:aa:bb:01;", "fixed-address", "10.10.10.201;",
        "option", "host-name", '"node-1";',
    ]  # fmt: skip
    assert "range 10.10.10.20 10.10.10.200;" in conf
    assert "option routers 10.10.10.254;" in conf


# ---------------------------------------------------------------- boot decision, by meaning
#
# Each rendered config is read back as its server would evaluate it, for every kind of client,
# and must give exactly what the embedded server's decider gives (CONTRACT §4): the same file
# or URL, and option 60 `HTTPClient` echoed exactly when the decider echoes it.


@dataclasses.dataclass(frozen=True)
class Client:
    vendor: bytes | None
    arch: int | None
    user_class: bytes | None = None
    opt175: bool = False
    mac: str = "52:54:00:00:00:01"  # a machine no node declares, unless a test says otherwise


Answer = tuple[str, str | None] | None  # (boot file or URL, option 60 sent back) or no boot answer

ARCHES = (None, 0, 1, 6, 7, 9, 10, 11, 12, 15, 16, 18, 19, 20)
CLIENTS = [
    Client(None if kind is None else (kind if arch is None else f"{kind}:Arch:{arch:05d}:UNDI:003000").encode(),
           arch, user_class, opt175)
    for kind in (None, "PXEClient", "HTTPClient")
    for arch in ARCHES
    for user_class, opt175 in ((None, False), (b"iPXE", False), (None, True))
]


def decider_answer(state: DesiredState, client: Client) -> Answer:
    options: dict[int, bytes] = {}
    if client.vendor is not None:
        options[d.OPT_VENDOR_CLASS] = client.vendor
    if client.arch is not None:
        options[d.OPT_CLIENT_ARCH] = client.arch.to_bytes(2, "big")
    if client.user_class is not None:
        options[d.OPT_USER_CLASS] = client.user_class
    if client.opt175:
        options[d.OPT_IPXE_ENCAP] = b""
    plan = plan_dhcp(state)
    reservation = plan.reservations.get(client.mac)
    own_chain = reservation.secure_boot if reservation is not None else None
    boot = choose_boot(client_message(d.DISCOVER, client.mac, options=options), plan, own_chain)
    if boot is None:
        return None
    return boot.filename, boot.vendor_class.decode() if boot.vendor_class is not None else None


def dhcpd_answer(conf: str, client: Client) -> Answer:
    """Walk the global if/elsif chain the way dhcpd evaluates it: the first true branch."""
    vendor = client.vendor or b""
    branch: re.Match[str] | None
    for branch in re.finditer(r"^(?:if|\} elsif) (.*?) \{\n(.*?)(?=^\})", conf, re.S | re.M):
        test, body = branch.group(1), branch.group(2)
        if test == 'exists user-class and option user-class = "iPXE"':
            hit = client.user_class == b"iPXE"
        elif test == "exists ipxe-encap-opts":
            hit = client.opt175
        else:
            found = re.fullmatch(r'exists arch and substring \(option vendor-class-identifier, 0, (\d+)\) = "(\w+)"'
                                 r" and \(([^()]*)\)(?: and \(((?:hardware = 01:[0-9a-f:]+(?: or )?)+)\))?", test)
            assert found is not None, test
            arches = {int(a.replace(":", ""), 16) for a in re.findall(r"option arch = ([0-9a-f:]+)", found.group(3))}
            macs = re.findall(r"hardware = 01:([0-9a-f:]+)", found.group(4) or "")
            hit = (client.arch is not None and client.arch in arches
                   and vendor[: int(found.group(1))] == found.group(2).encode()
                   and (not macs or client.mac in macs))
        if hit:
            filename = re.search(r'filename "(.*?)";', body)
            echo = re.search(r'option vendor-class-identifier "(.*?)";', body)
            assert filename is not None
            return filename.group(1), echo.group(1) if echo else None
    return None


def _kea_test(expr: str, client: Client, matched: set[str]) -> bool:
    """One class test of the Kea expression subset the renderer writes, evaluated for `client`."""
    vendor = client.vendor or b""
    expr = re.sub(r"option\[77\]\.hex == 0x([0-9a-f]+)",
                  lambda m: str(client.user_class == bytes.fromhex(m.group(1))), expr)
    expr = expr.replace("option[175].exists", str(client.opt175))
    expr = re.sub(r"substring\(option\[60\]\.hex,0,(\d+)\) == 0x([0-9a-f]+)",
                  lambda m: str(vendor[: int(m.group(1))] == bytes.fromhex(m.group(2))), expr)
    expr = re.sub(r"option\[93\]\.hex == 0x([0-9a-f]{4})",
                  lambda m: str(client.arch == int(m.group(1), 16)), expr)
    expr = re.sub(r"member\('(\w+)'\)", lambda m: str(m.group(1) in matched), expr)
    expr = re.sub(r"pkt4\.mac == 0x([0-9a-f]{12})", lambda m: str(client.mac.replace(":", "") == m.group(1)), expr)
    assert set(re.findall(r"[^\s()]+", expr)) <= {"True", "False", "and", "or", "not"}, expr
    return bool(eval(expr))  # only True/False/and/or/not and parentheses, checked above


def kea_answer(conf: dict[str, Any], client: Client, known: bool = False) -> Answer:
    """Evaluate each client class test in order, as Kea does after the reservation lookup."""
    matched = {"KNOWN"} if known else set()
    booting = []
    for klass in conf["client-classes"]:
        if _kea_test(klass["test"], client, matched):
            matched.add(klass["name"])
            if "boot-file-name" in klass:
                booting.append(klass)
    assert len(booting) <= 1, [c["name"] for c in booting]
    if not booting:
        return None
    echo = [o["data"] for o in booting[0].get("option-data", []) if o["name"] == "vendor-class-identifier"]
    return str(booting[0]["boot-file-name"]), echo[0] if echo else None


def dnsmasq_answer(conf: str, client: Client, known: bool = False) -> Answer:
    """Set the tags dnsmasq would set, then find the dhcp-boot (and option 60) lines that match."""
    vendor = (client.vendor or b"").decode()
    tags = {"known"} if known else set()
    for line in conf.splitlines():
        key, _, value = line.partition("=")
        fields = value.split(",")
        if key == "dhcp-userclass":
            hit = client.user_class == fields[1].encode()
        elif key == "dhcp-vendorclass":
            hit = fields[1] in vendor  # dnsmasq matches the vendor class as a substring
        elif key == "dhcp-match" and fields[1:] == ["175"]:
            hit = client.opt175
        elif key == "dhcp-match" and fields[1] == "option:client-arch":
            hit = client.arch == int(fields[2])
        elif key == "dhcp-mac":
            hit = client.mac == fields[1]
        else:
            continue
        if hit:
            tags.add(fields[0].removeprefix("set:"))

    def matches(fields: list[str]) -> list[str] | None:
        wanted = [f.removeprefix("tag:") for f in fields if f.startswith("tag:")]
        ok = all((w[1:] not in tags) if w.startswith("!") else (w in tags) for w in wanted)
        return fields[len(wanted):] if ok else None

    boots = [rest for line in conf.splitlines() if line.startswith("dhcp-boot=")
             if (rest := matches(line.removeprefix("dhcp-boot=").split(","))) is not None]
    echoes = [rest for line in conf.splitlines() if line.startswith("dhcp-option-force=")
              if (rest := matches(line.removeprefix("dhcp-option-force=").split(","))) is not None
              and rest[0] == "option:vendor-class"]
    assert len(boots) <= 1 and len(echoes) <= 1, (boots, echoes)
    if not boots:
        assert not echoes
        return None
    return boots[0][0], echoes[0][1] if echoes else None


@pytest.mark.parametrize("secure_boot", [False, True])
def test_every_config_gives_every_client_what_the_embedded_server_gives(secure_boot: bool) -> None:
    state = example_state()
    if secure_boot:  # UEFI x64 PXE gets the signed shim from every server alike
        state = dataclasses.replace(state, site=dataclasses.replace(state.site, secure_boot=True))
    files = render_generation(state)
    dhcpd = files["dhcpd.conf"].decode()
    dhcpd_boot = dhcpd[: dhcpd.index("group {")]  # unknown_clients: boot -> the global chain
    kea = json.loads(files["kea-dhcp4.conf"])["Dhcp4"]
    dnsmasq = files["dnsmasq.conf"].decode()
    for client in CLIENTS:
        expected = decider_answer(state, client)
        assert dhcpd_answer(dhcpd_boot, client) == expected, ("dhcpd", client)
        assert kea_answer(kea, client) == expected, ("kea", client)
        assert dnsmasq_answer(dnsmasq, client) == expected, ("dnsmasq", client)


@pytest.mark.parametrize("site_secure", [False, True])
@pytest.mark.parametrize("unknown_clients", ["boot", "ignore"])
def test_a_profiles_secure_boot_reaches_its_machines_from_every_config(site_secure: bool,
                                                                      unknown_clients: UnknownClients) -> None:
    """A profile overriding the site's `secure_boot`: its machines get the other chain from dhcpd,
    Kea and dnsmasq as from the embedded server; every other machine keeps the site's (fails on
    the old code: the external configs gave the site's choice to all)."""
    state = secure_override_state(site_secure)
    state = dataclasses.replace(state, site=dataclasses.replace(state.site, unknown_clients=unknown_clients))
    files = render_generation(state)
    dhcpd = files["dhcpd.conf"].decode()
    # the boot chain: global with `boot`, inside the hosts' group (indented) with `ignore`
    dhcpd_boot = (dhcpd[: dhcpd.index("group {")] if unknown_clients == "boot"
                  else re.sub(r"^  ", "", dhcpd[dhcpd.index("group {"):], flags=re.M))
    kea = json.loads(files["kea-dhcp4.conf"])["Dhcp4"]
    dnsmasq = files["dnsmasq.conf"].decode()
    other, plain = DB_1, "52:54:00:aa:bb:01"
    uefi = Client(b"PXEClient:Arch:00007:UNDI:003016", 7)
    want = {other: "ipxe.efi" if site_secure else "shimx64.efi", plain: "shimx64.efi" if site_secure else "ipxe.efi"}
    for mac, filename in want.items():
        assert decider_answer(state, dataclasses.replace(uefi, mac=mac)) == (filename, None)
    for client in [dataclasses.replace(c, mac=mac) for c in CLIENTS for mac in (plain, other)]:
        expected = decider_answer(state, client)
        assert dhcpd_answer(dhcpd_boot, client) == expected, ("dhcpd", client)
        assert kea_answer(kea, client, known=True) == expected, ("kea", client)
        assert dnsmasq_answer(dnsmasq, client, known=True) == expected, ("dnsmasq", client)


@pytest.mark.parametrize(
    ("client", "answer"),
    [
        (Client(b"PXEClient:Arch:00000:UNDI:002001", 0), ("undionly.kpxe", None)),
        (Client(b"PXEClient:Arch:00007:UNDI:003016", 7), ("ipxe.efi", None)),
        (Client(b"PXEClient:Arch:00011:UNDI:003016", 11), ("snp.efi", None)),
        (Client(b"HTTPClient:Arch:00016:UNDI:003001", 16), ("http://10.10.10.12/assets/ipxe/ipxe.efi", "HTTPClient")),
        (Client(b"HTTPClient:Arch:00019:UNDI:003001", 19), ("http://10.10.10.12/assets/ipxe/snp.efi", "HTTPClient")),
        (Client(b"HTTPClient:Arch:00018:UNDI:003001", 18), None),  # ARM32 HTTP: no binary for it
        (Client(b"PXEClient:Arch:00016:UNDI:003001", 16), None),  # an HTTP arch over PXE
        (Client(b"PXEClient:Arch:00007:UNDI:003016", 7, b"iPXE"), ("http://10.10.10.12/boot.ipxe", None)),
        (Client(b"HTTPClient:Arch:00019:UNDI:003001", 19, None, True), ("http://10.10.10.12/boot.ipxe", None)),
    ],
)
def test_contract_answers_in_every_format(client: Client, answer: Answer) -> None:
    state = example_state()
    files = render_generation(state)
    dhcpd = files["dhcpd.conf"].decode()
    assert decider_answer(state, client) == answer
    assert dhcpd_answer(dhcpd[: dhcpd.index("group {")], client) == answer
    assert kea_answer(json.loads(files["kea-dhcp4.conf"])["Dhcp4"], client) == answer
    assert dnsmasq_answer(files["dnsmasq.conf"].decode(), client) == answer


def test_dhcpd_tftp_answers_name_next_server() -> None:
    conf = render_generation(example_state())["dhcpd.conf"].decode()
    assert "\nnext-server 10.10.10.12;" in conf  # unknown_clients: boot -> global


def test_dhcpd_unknown_clients_ignore_keeps_boot_inside_the_host_group() -> None:
    conf = render_generation(_ignore_state())["dhcpd.conf"].decode()
    group = conf[conf.index("group {") :]
    assert "\n  next-server 10.10.10.12;" in group and 'filename "undionly.kpxe"' in group
    assert "filename" not in conf[: conf.index("group {")]


def test_kea_reservations_and_classes() -> None:
    conf = json.loads(render_generation(_ignore_state())["kea-dhcp4.conf"])["Dhcp4"]
    (subnet,) = conf["subnet4"]
    assert {"hw-address": "52:54:00:aa:bb:01", "hostname": "node-1", "ip-address": "10.10.10.201"} in subnet[
        "reservations"
    ]
    assert subnet["pools"] == [{"pool": "10.10.10.20 - 10.10.10.200"}]
    classes = {c["name"]: c for c in conf["client-classes"]}
    assert classes["NETBOOT_IPXE"]["boot-file-name"] == "http://10.10.10.12/boot.ipxe"
    assert classes["NETBOOT_PXE_EFI64"]["boot-file-name"] == "ipxe.efi"
    assert classes["NETBOOT_PXE_EFI64"]["next-server"] == "10.10.10.12"
    assert all("member('KNOWN')" in c["test"] for c in classes.values())
    assert "option[93].hex == 0x0007" in classes["NETBOOT_PXE_EFI64"]["test"]


def test_kea_node_without_address_is_a_global_reservation() -> None:
    state = example_state()
    state = dataclasses.replace(state, nodes=(dataclasses.replace(state.nodes[0], ip=None), *state.nodes[1:]))
    conf = json.loads(render_generation(state)["kea-dhcp4.conf"])["Dhcp4"]
    assert conf["reservations"] == [{"hw-address": state.nodes[0].mac, "hostname": state.nodes[0].hostname}]


def test_dnsmasq_hosts() -> None:
    lines = render_generation(_ignore_state())["dnsmasq.conf"].decode().splitlines()
    assert "dhcp-host=52:54:00:aa:bb:01,10.10.10.201,node-1" in lines


def test_unknown_clients_ignore_boots_known_macs_only_in_kea_and_dnsmasq() -> None:
    state = _ignore_state()
    files = render_generation(state)
    kea = json.loads(files["kea-dhcp4.conf"])["Dhcp4"]
    dnsmasq = files["dnsmasq.conf"].decode()
    for client in CLIENTS:
        expected = decider_answer(state, client)  # choose_boot: the answer for a known MAC
        assert kea_answer(kea, client, known=True) == expected, ("kea", client)
        assert dnsmasq_answer(dnsmasq, client, known=True) == expected, ("dnsmasq", client)
        assert kea_answer(kea, client, known=False) is None, ("kea", client)
        assert dnsmasq_answer(dnsmasq, client, known=False) is None, ("dnsmasq", client)


def test_ipxe_gets_no_pxedhcp_in_every_format() -> None:
    """175.176 = 1, as the embedded server sends: iPXE skips its ProxyDHCP wait (~3 s a boot)."""
    files = render_generation(example_state())
    dhcpd = files["dhcpd.conf"].decode()
    assert "option ipxe.no-pxedhcp code 176 = unsigned integer 8;" in dhcpd
    ipxe_branch = dhcpd.split('option user-class = "iPXE" {', 1)[1].split("}", 1)[0]
    assert "option ipxe.no-pxedhcp 1;" in ipxe_branch
    kea = json.loads(files["kea-dhcp4.conf"])["Dhcp4"]
    assert {"name": "no-pxedhcp", "code": 176, "space": "ipxe", "type": "uint8"} in kea["option-def"]
    ipxe_class = next(c for c in kea["client-classes"] if c["name"] == "NETBOOT_IPXE")
    assert {"name": "no-pxedhcp", "space": "ipxe", "data": "1"} in ipxe_class["option-data"]
    assert "dhcp-option=tag:ipxe,encap:175,176,1b" in files["dnsmasq.conf"].decode().splitlines()
