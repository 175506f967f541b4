"""dnsmasq.conf fragment with dhcpd.conf's meaning: ranges, `dhcp-host` per node, boot by tags.

Called by `render_generation`; checked by the real `dnsmasq --test -C` in the integration
tests. The boot lines are the rows of `core.bootfiles` (CONTRACT §4, the embedded server's
table): tags `ipxe` (user class `iPXE` or option 175), `pxeclient` / `httpclient` (vendor
class) and one per architecture row (option 93); each `dhcp-boot` needs its row's vendor and
architecture tags and `tag:!ipxe`, so at most one matches. The machines whose profile
overrides the site's `secure_boot` get tag `otherchain` (`dhcp-mac`): a row with two chains has
one `dhcp-boot` for them and one with `tag:!otherchain` for the rest.
With `unknown_clients: ignore` every boot line also needs `tag:known` (dnsmasq sets it for MACs
with a `dhcp-host` line): unknown machines still get an address, never a boot answer.
dnsmasq has no maximum lease time; the subnet's lease_time is written on the range.
Every value here is an address, a MAC, a DNS label, a validated name or a URL of those (no
commas or spaces can occur).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from reconciler.core.bootfiles import HTTP_CLIENT, IPXE_USER_CLASS, PXE_CLIENT, boot_table
from reconciler.core.model import Node, Site
from reconciler.core.render import chunks

_VENDOR_TAGS = {PXE_CLIENT: "pxeclient", HTTP_CLIENT: "httpclient"}
# A dhcp-host field dnsmasq takes for something other than a name (dnsmasq(8), --dhcp-host):
# `ignore`, a lease time (`infinite`, `deprecated`, digits with an optional s/m/h/d/w unit).
_KEYWORD = re.compile(r"(?i)ignore|infinite|deprecated|[0-9]+[smhdw]?")


def reads_as_keyword(name: str) -> bool:
    """Whether dnsmasq reads `name` in a dhcp-host line as a keyword or lease time, not a name."""
    return _KEYWORD.fullmatch(name) is not None


OTHER_CHAIN_TAG = "otherchain"


def _host_text(node: Node) -> str:
    address = "," + str(node.ip) if node.ip is not None else ""  # str(): format() of an address is slower
    if reads_as_keyword(node.hostname):
        # dnsmasq has no quoting: the name would be read as `ignore` or a lease time.
        return (f"# {node.name}: hostname {node.hostname!r} left out, dnsmasq reads it as a keyword\n"
                f"dhcp-host={node.mac}{address}")
    return f"dhcp-host={node.mac}{address},{node.hostname}"


def render(site: Site, nodes: Sequence[Node], revision: str, other_chain: Sequence[str] = (),
           cache: chunks.Chunks | None = None) -> bytes:
    """`other_chain`: the MACs that get `ArchBoot.other_chain` (`bootfiles.other_chain_macs`);
    `cache`: host lines rendered at earlier commits (`render.chunks`)."""
    table = boot_table(site)
    known = "tag:known," if table.known_only else ""
    lines = [
        f"# Rendered by netboot-reconcile from revision {revision}; do not edit.",
        "# dnsmasq configuration fragment: check with `dnsmasq --test -C dnsmasq.conf`.",
    ]
    if site.interface:
        lines.append(f"interface={site.interface}")
    for index, subnet in enumerate(site.subnets):
        tag = f"net{index}"
        net = subnet.network
        if subnet.pool is not None:
            lines.append(f"dhcp-range=set:{tag},{subnet.pool[0]},{subnet.pool[1]},{net.netmask},{subnet.lease_time}")
        else:
            lines.append(f"dhcp-range=set:{tag},{net.network_address},static,{net.netmask},{subnet.lease_time}")
        if subnet.routers:
            lines.append(f"dhcp-option=tag:{tag},option:router,{','.join(map(str, subnet.routers))}")
        if subnet.dns_servers:
            lines.append(f"dhcp-option=tag:{tag},option:dns-server,{','.join(map(str, subnet.dns_servers))}")
        if subnet.domain_name:
            lines.append(f"dhcp-option=tag:{tag},option:domain-name,{subnet.domain_name}")
    lines += [
        f"dhcp-userclass=set:ipxe,{IPXE_USER_CLASS}",
        "dhcp-match=set:ipxe,175",
        *(f"dhcp-vendorclass=set:{tag},{vendor}" for vendor, tag in _VENDOR_TAGS.items()),
    ]
    for row in table.rows:
        lines += [f"dhcp-match=set:{row.tag},option:client-arch,{code}" for code in row.arches]
    lines += [f"dhcp-mac=set:{OTHER_CHAIN_TAG},{mac}" for mac in other_chain]
    lines += [
        f"dhcp-boot={known}tag:ipxe,{table.ipxe_url}",
        # iPXE's no-pxedhcp (175.176 = 1) spares it the ProxyDHCP wait.
        "dhcp-option=tag:ipxe,encap:175,176,1b",
    ]
    for row in table.rows:
        tags = f"{known}tag:{_VENDOR_TAGS[row.vendor_class]},tag:{row.tag},tag:!ipxe"
        if row.echo_vendor_class:
            lines.append(f"dhcp-option-force={tags},option:vendor-class,{row.vendor_class}")
        chains = [(tags, row.filename)]
        if row.other_chain and other_chain:
            chains = [(f"{tags},tag:{OTHER_CHAIN_TAG}", row.other_chain),
                      (f"{tags},tag:!{OTHER_CHAIN_TAG}", row.filename)]
        for line_tags, filename in chains:
            if row.transport == "tftp":
                lines.append(f"dhcp-boot={line_tags},{filename},,{table.next_server}")
            else:
                lines.append(f"dhcp-boot={line_tags},{filename}")
    lines += chunks.per_node(cache, "dnsmasq", chunks.by_name(nodes), _host_text)
    lines.append("")
    return "\n".join(lines).encode()
