"""Does the embedded DHCP server send machines where our own listeners are? Warnings, not errors.

Called by the daemon each time it activates a generation (`listener_warnings`, and
`missing_boot_files`: boot files its TFTP server does not have); the warnings
are logged once per generation and shown in `/status` and `netboot-reconcile status`. Pure.

What a serving DHCP (mode full or proxy, and not `--no-dhcp`) tells clients (CONTRACT §4,
`core/bootfiles.py`): iPXE and UEFI HTTP boot fetch `http://<server.address>[:<http_port>]/...`,
PXE firmware fetches its boot file by TFTP from next-server `<server.address>`, port 69 (a PXE
ROM has no way to use another port). A listener covers that address when it is bound to it or
to a wildcard (`0.0.0.0`, `::`). The defaults (HTTP 127.0.0.1:8080, TFTP 127.0.0.1:6969) are
for trying the daemon on one machine and cover nothing a real client asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from reconciler.core.bootfiles import boot_table
from reconciler.core.model import Site

TFTP_PORT = 69
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class Listeners:
    """How the daemon was started: what it serves and where it listens."""

    dhcp: bool  # the embedded DHCP server is on (not --no-dhcp)
    http: tuple[str, int]  # --http-listen
    tftp: tuple[str, int] | None  # --tftp-listen; None with --no-tftp


def covers(host: str, address: IPv4Address) -> bool:
    """Whether a socket bound to `host` receives what clients send to `address`."""
    if host in WILDCARDS:
        return True
    try:
        return ip_address(host) == address
    except ValueError:
        return False  # a host name: not an address we can compare; say so rather than guess


def listener_warnings(site: Site, listeners: Listeners) -> tuple[str, ...]:
    """One line per listener the served DHCP points clients past; () when DHCP does not serve."""
    if not listeners.dhcp or site.dhcp_mode == "off":
        return ()
    out: list[str] = []
    address = site.server_address
    host, port = listeners.http
    if not covers(host, address) or port != site.http_port:
        wrong = " and ".join(
            part for part, bad in (
                (f"not on {address}", not covers(host, address)),
                (f"not on port {site.http_port}", port != site.http_port),
            ) if bad
        )
        out.append(
            f"DHCP ({site.dhcp_mode}) sends iPXE and UEFI HTTP boot clients to {site.server_url}/ "
            f"(server.address, server.http_port) but HTTP listens on {_show(host, port)} ({wrong}): "
            f"use --http-listen {address}:{site.http_port} (or 0.0.0.0:{site.http_port}), or change netboot.yaml"
        )
    if listeners.tftp is None:
        out.append(
            f"DHCP ({site.dhcp_mode}) sends PXE firmware to TFTP at {address}:{TFTP_PORT} (next-server) but TFTP "
            f"is off (--no-tftp): another TFTP server must answer there"
        )
    else:
        host, port = listeners.tftp
        if not covers(host, address) or port != TFTP_PORT:
            wrong = " and ".join(
                part for part, bad in (
                    (f"not on {address}", not covers(host, address)),
                    (f"not on port {TFTP_PORT}, the only one PXE firmware uses", port != TFTP_PORT),
                ) if bad
            )
            out.append(
                f"DHCP ({site.dhcp_mode}) sends PXE firmware to TFTP at {address}:{TFTP_PORT} (next-server) but "
                f"TFTP listens on {_show(host, port)} ({wrong}): use --tftp-listen {address}:{TFTP_PORT} "
                f"(or 0.0.0.0:{TFTP_PORT})"
            )
    return tuple(out)


def _show(host: str, port: int) -> str:
    host = host or "0.0.0.0"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def missing_boot_files(site: Site, files: Mapping[str, bytes], exists: Callable[[str], bool]) -> tuple[str, ...]:
    """One line per `boot_files` name PXE firmware asks our TFTP server for that it cannot serve:
    neither in the generation (`tftp/<name>`) nor in the TFTP root (`exists(name)`, the daemon's
    look at --tftp-root). Those machines get "file not found" and never reach iPXE."""
    rows: dict[str, list[str]] = {}
    for row in boot_table(site).rows:
        if row.transport == "tftp":
            rows.setdefault(row.filename, []).append(row.tag)
    return tuple(
        f"boot_files: {name!r} (for {', '.join(tags)} PXE clients) is not in the TFTP root nor in the generation: "
        f"those machines get 'file not found' ({_remedy(name)})"
        for name, tags in sorted(rows.items())
        if f"tftp/{name}" not in files and not exists(name)
    )


# What Debian's ipxe package installs in /usr/lib/ipxe (the default --tftp-root) that PXE firmware boots.
DEBIAN_IPXE = frozenset({"undionly.kpxe", "undionly.kkpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi"})


def _remedy(name: str) -> str:
    if name in DEBIAN_IPXE:
        return "install Debian's ipxe package, or set --tftp-root or boot_files"
    return f"Debian's ipxe package has no {name}: put it in --tftp-root, or set boot_files"
