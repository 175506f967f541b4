"""The DHCP boot decision of CONTRACT §4, as data the three config renderers write out.

Called by `render.dhcpd`, `render.kea` and `render.dnsmasq`, so the configs for external DHCP
servers give the same answers as each other and as the embedded server: iPXE (user class
`iPXE` or option 175) gets the `boot.ipxe` URL, UEFI HTTP boot gets option 60 `HTTPClient`
echoed and the UEFI iPXE binary as an http:// URL, PXE firmware gets the iPXE binary for its
architecture (option 93) over TFTP from next-server.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.model import Site

IPXE_USER_CLASS = "iPXE"
HTTP_CLIENT = "HTTPClient"
PXE_CLIENT = "PXEClient"


@dataclass(frozen=True)
class PxeArch:
    """A family of PXE client architectures (option 93) and the TFTP file they get."""

    tag: str
    codes: tuple[int, ...]
    filename: str


@dataclass(frozen=True)
class BootAnswers:
    ipxe_url: str
    http_boot_url: str
    next_server: str
    pxe: tuple[PxeArch, ...]
    known_only: bool  # unknown_clients: ignore -> boot answers for known MACs only


def boot_answers(site: Site) -> BootAnswers:
    files = site.boot_files
    return BootAnswers(
        ipxe_url=f"{site.server_url}/{files.ipxe_script}",
        http_boot_url=f"{site.server_url}/assets/ipxe/{files.uefi_x64}",
        next_server=str(site.server_address),
        pxe=(
            PxeArch("bios", (0,), files.bios),
            PxeArch("efi64", (6, 7, 9), files.uefi_x64),
            PxeArch("arm64", (10, 11), files.uefi_arm64),
        ),
        known_only=site.unknown_clients == "ignore",
    )
