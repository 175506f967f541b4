"""What the rendered DHCP configs give a machine: its address, its name and its boot file."""

from __future__ import annotations

import dataclasses
import json
import re

from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from tests.render_support import example_state


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
    assert "range 10.10.10.10 10.10.10.200;" in conf
    assert "option routers 10.10.10.254;" in conf


def test_dhcpd_boot_decision() -> None:
    conf = render_generation(example_state())["dhcpd.conf"].decode()
    assert 'option user-class = "iPXE" {\n  filename "http://10.10.10.12/boot.ipxe";' in conf
    assert "(option arch = 00:00) {\n  filename \"undionly.kpxe\";" in conf
    assert "(option arch = 00:06 or option arch = 00:07 or option arch = 00:09) {\n  filename \"ipxe.efi\";" in conf
    assert "(option arch = 00:0a or option arch = 00:0b) {\n  filename \"snp.efi\";" in conf
    assert 'option vendor-class-identifier "HTTPClient";\n  filename "http://10.10.10.12/assets/ipxe/ipxe.efi";' in conf
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
    assert subnet["pools"] == [{"pool": "10.10.10.10 - 10.10.10.200"}]
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


def test_dnsmasq_hosts_and_boot_tags() -> None:
    lines = render_generation(_ignore_state())["dnsmasq.conf"].decode().splitlines()
    assert "dhcp-host=52:54:00:aa:bb:01,10.10.10.201,node-1" in lines
    assert "dhcp-boot=tag:known,tag:ipxe,http://10.10.10.12/boot.ipxe" in lines
    assert "dhcp-boot=tag:known,tag:bios,tag:!ipxe,tag:!httpclient,undionly.kpxe,,10.10.10.12" in lines
    assert "dhcp-userclass=set:ipxe,iPXE" in lines and "dhcp-match=set:ipxe,175" in lines


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
