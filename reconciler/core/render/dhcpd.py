"""dhcpd.conf for isc-dhcp-server: subnets, one `host` per node, the CONTRACT §4 boot decision.

The boot statements are the rows of `core.bootfiles` (the embedded server's own table), in order,
after the iPXE tests: vendor class prefix AND option 93.

Called by `render_generation`; for users who run `--dhcp off` next to their own dhcpd. Checked
by the real `dhcpd -t -cf` in tests/integration/test_render_peers.py.

Option 93 is declared `unsigned integer 16` and compared as ISC data (`00:07`). With
`unknown_clients: ignore` the boot statements live in the `group` that holds the host
declarations, so only known MACs get them; unknown machines still get an address from the pool.
With `boot` they are global. The machines whose profile overrides the site's `secure_boot`
(`other_chain`: their MACs) get the other chain's file from a branch just before the row's own,
matching `hardware` (type 1, Ethernet, then the MAC). Every value written here is an address, a MAC, a DNS label, a
validated domain or file name, or a URL made of those: nothing needs quoting beyond the
double quotes around strings.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.core.bootfiles import IPXE_USER_CLASS, boot_table
from reconciler.core.model import Node, Site
from reconciler.core.render import chunks


def _arch_test(codes: tuple[int, ...]) -> str:
    return " or ".join(f"option arch = {c >> 8:02x}:{c & 0xFF:02x}" for c in codes)


def _hardware_test(macs: Sequence[str]) -> str:
    return " or ".join(f"hardware = 01:{mac}" for mac in macs)


def _boot_block(site: Site, indent: str, other_chain: Sequence[str]) -> list[str]:
    table = boot_table(site)
    lines = [
        f"next-server {table.next_server};",
        f'if exists user-class and option user-class = "{IPXE_USER_CLASS}" {{',
        f'  filename "{table.ipxe_url}";',
        "  option ipxe.no-pxedhcp 1;",
        "} elsif exists ipxe-encap-opts {",
        f'  filename "{table.ipxe_url}";',
        "  option ipxe.no-pxedhcp 1;",
    ]
    for row in table.rows:
        vendor = f'substring (option vendor-class-identifier, 0, {len(row.vendor_class)}) = "{row.vendor_class}"'
        if row.other_chain and other_chain:
            lines.append(f"}} elsif exists arch and {vendor} and ({_arch_test(row.arches)})"
                         f" and ({_hardware_test(other_chain)}) {{")
            lines.append(f'  filename "{row.other_chain}";')
        lines.append(f"}} elsif exists arch and {vendor} and ({_arch_test(row.arches)}) {{")
        if row.echo_vendor_class:
            lines.append(f'  option vendor-class-identifier "{row.vendor_class}";')
        lines.append(f'  filename "{row.filename}";')
    lines.append("}")
    return [indent + line for line in lines]


def _host_text(node: Node) -> str:
    """A node's host block, indented inside the `group`. Run for every node at a first render, in
    the worker alone after the nodes' rendering: one string made, no list (str, not format(): an
    address's __format__ is Python calling __str__)."""
    address = "" if node.ip is None else "    fixed-address " + str(node.ip) + ";\n"
    return (f"  host {node.name} {{\n    hardware ethernet {node.mac};\n{address}"
            f'    option host-name "{node.hostname}";\n  }}')


def render(site: Site, nodes: Sequence[Node], revision: str, other_chain: Sequence[str] = (),
           cache: chunks.Chunks | None = None) -> bytes:
    """`other_chain`: the MACs that get `ArchBoot.other_chain` (`bootfiles.other_chain_macs`);
    `cache`: host blocks rendered at earlier commits (`render.chunks`)."""
    lines = [
        f"# Rendered by netboot-reconcile from revision {revision}; do not edit.",
        "# isc-dhcp-server configuration: check with `dhcpd -t -cf dhcpd.conf`.",
        "ddns-update-style none;",
        "authoritative;",
        "option arch code 93 = unsigned integer 16;",
        # iPXE's encapsulated options: no-pxedhcp (176) = 1 spares iPXE its ProxyDHCP wait.
        "option space ipxe;",
        "option ipxe-encap-opts code 175 = encapsulate ipxe;",
        "option ipxe.no-pxedhcp code 176 = unsigned integer 8;",
        "",
    ]
    for subnet in site.subnets:
        net = subnet.network
        lines.append(f"subnet {net.network_address} netmask {net.netmask} {{")
        if subnet.pool is not None:
            lines.append(f"  range {subnet.pool[0]} {subnet.pool[1]};")
        if subnet.routers:
            lines.append(f"  option routers {', '.join(map(str, subnet.routers))};")
        if subnet.dns_servers:
            lines.append(f"  option domain-name-servers {', '.join(map(str, subnet.dns_servers))};")
        if subnet.domain_name:
            lines.append(f'  option domain-name "{subnet.domain_name}";')
        lines += [
            f"  default-lease-time {subnet.lease_time};",
            f"  max-lease-time {subnet.max_lease_time};",
            "}",
            "",
        ]
    if site.unknown_clients == "boot":
        lines += ["# unknown_clients: boot -> every netbooting machine gets a boot answer",
                  *_boot_block(site, "", other_chain), ""]
        lines += ["group {"]
    else:
        lines += ["# unknown_clients: ignore -> boot answers only for the known hosts below", "group {"]
        lines += _boot_block(site, "  ", other_chain)
    lines += chunks.per_node(cache, "dhcpd", chunks.by_name(nodes), _host_text)
    lines += ["}", ""]
    return "\n".join(lines).encode()
