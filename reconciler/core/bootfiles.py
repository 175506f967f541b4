"""CONTRACT §4 as one table: which netbooting client gets which iPXE binary, and how.

The single source of the DHCP boot decision. Read by the embedded server's decider
(`protocol.dhcp_decide.choose_boot`, through its per-generation plan) and by the three config
renderers (`core.render.dhcpd`, `kea`, `dnsmasq`), so the embedded server and an external
dhcpd, Kea or dnsmasq give every client the same answer.

iPXE itself (user class `iPXE`, or option 175 present) always gets the `boot.ipxe` URL and is
checked before this table, so it is never handed an iPXE binary (no chainload loop). Every
other client is matched by its vendor class (option 60, by prefix) AND its architecture
(option 93, RFC 4578 and the IANA "Processor Architecture Types" registry):

| vendor class | arch | gets |
|---|---|---|
| PXEClient | 0 (x86 BIOS) | the BIOS binary over TFTP from next-server |
| PXEClient | 7, 9 (UEFI x64) | the x64 UEFI binary over TFTP; under `secure_boot` the signed shim |
| PXEClient | 6 (UEFI IA32) | the IA32 UEFI binary over TFTP, where `boot_files.uefi_ia32` names one |
| PXEClient | 10, 11 (UEFI ARM32/ARM64) | the arm64 UEFI binary over TFTP |
| HTTPClient | 16 (UEFI x64 HTTP boot) | option 60 `HTTPClient` echoed, the x64 UEFI binary as an http:// URL |
| HTTPClient | 15 (UEFI IA32 HTTP boot) | `HTTPClient` echoed, the IA32 binary as an http:// URL, where one is named |
| HTTPClient | 19 (UEFI ARM64 HTTP boot) | option 60 `HTTPClient` echoed, the arm64 UEFI binary as an http:// URL |

Secure Boot (`secure_boot: true` in netboot.yaml, or a profile's own `secure_boot`): UEFI x64
PXE clients get Debian's Microsoft-signed shim as `shimx64.efi`; shim asks the TFTP root for
`grubx64.efi` (whatever directory it came from), which is Debian's signed GRUB netboot image;
GRUB reads `/grub/grub.cfg` (`core.render.grub.secure_boot_files`). The TFTP server maps these
two names to `boot_files.shim_x64` and `grub_x64` (`signed_files`). A known machine whose
profile overrides the site's choice gets the other chain's file (`ArchBoot.other_chain`): from
the embedded server through its reservation, from dhcpd, Kea and dnsmasq through a branch, a
class or a tag that matches those machines' MACs (`other_chain_macs`).

UEFI HTTP boot (arch 16) keeps the iPXE URL under `secure_boot`: Debian's signed GRUB netboot
image, loaded by shim over HTTP, takes `(http,SERVER)/grub` as its prefix and has no http module
(Secure Boot forbids loading one), so it cannot read any configuration and stops at its prompt
(measured in QEMU: README, Secure Boot). Secure Boot firmware refuses the unsigned iPXE
("Access Denied") and goes on to its next boot option, PXE, where the signed chain works.

Any other combination gets no boot answer (an address only, in full mode): an x64 binary
would not run on another architecture, so 32-bit UEFI firmware (arch 6, 15) gets nothing until
the site names an IA32 build (Debian's ipxe package ships none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.core.asset_paths import IPXE_ASSETS
from reconciler.core.model import DesiredState, Profile, Site

IPXE_USER_CLASS = "iPXE"
PXE_CLIENT = "PXEClient"
HTTP_CLIENT = "HTTPClient"

Transport = Literal["tftp", "http"]

# Debian's `ipxe` package installs /usr/lib/ipxe/ipxe.efi and ipxe.lkrn as symlinks into
# /boot. These exact files (and nothing else outside the root) may be reached through a
# symlink that lives in the TFTP root, over TFTP and as /assets/ipxe/ over HTTP; every other
# symlink pointing out of the root is refused.
DEBIAN_IPXE_OUTSIDE = (Path("/boot/ipxe.efi"), Path("/boot/ipxe.lkrn"))

SHIM_NAME = "shimx64.efi"  # the name DHCP gives for the signed shim
GRUB_NAME = "grubx64.efi"  # the name shim asks the TFTP root for (fixed in shim)


@dataclass(frozen=True)
class ArchBoot:
    """One row: clients whose vendor class starts with `vendor_class` and whose first
    architecture is in `arches` get `filename` (a TFTP path, or an http:// URL for `http`)."""

    tag: str  # short lowercase name, used for dnsmasq tags and Kea class names
    vendor_class: str
    arches: tuple[int, ...]
    transport: Transport
    filename: str
    # The other boot chain's file for a machine whose profile overrides the site's
    # `secure_boot` (the shim where `filename` is iPXE, and iPXE where it is the shim); "" for a
    # row with one chain only.
    other_chain: str = ""

    @property
    def echo_vendor_class(self) -> bool:
        """UEFI HTTP boot only takes an offer that carries option 60 `HTTPClient`."""
        return self.transport == "http"


@dataclass(frozen=True)
class BootTable:
    """The boot answers of one site."""

    ipxe_url: str  # for iPXE, whatever its architecture
    next_server: str  # the TFTP server of the `tftp` rows
    rows: tuple[ArchBoot, ...]
    known_only: bool  # unknown_clients: ignore -> boot answers for known MACs only
    secure_boot: bool = False  # the site's choice: what `filename` of a two-chain row is

    def match(self, vendor_class: bytes, arch: int | None) -> ArchBoot | None:
        """The row for a (non-iPXE) client, or None: no boot answer."""
        if arch is None:
            return None
        for row in self.rows:
            if arch in row.arches and vendor_class.startswith(row.vendor_class.encode()):
                return row
        return None


def boot_table(site: Site) -> BootTable:
    files = site.boot_files
    http_base = site.server_url + IPXE_ASSETS
    efi64 = ArchBoot("efi64", PXE_CLIENT, (7, 9), "tftp", files.uefi_x64, SHIM_NAME)
    if site.secure_boot:
        efi64 = ArchBoot("efi64", PXE_CLIENT, (7, 9), "tftp", SHIM_NAME, files.uefi_x64)
    ia32: tuple[ArchBoot, ...] = ()
    if files.uefi_ia32:
        ia32 = (ArchBoot("efi32", PXE_CLIENT, (6,), "tftp", files.uefi_ia32),
                ArchBoot("httpia32", HTTP_CLIENT, (15,), "http", http_base + files.uefi_ia32))
    return BootTable(
        ipxe_url=f"{site.server_url}/{files.ipxe_script}",
        next_server=str(site.server_address),
        rows=(
            ArchBoot("bios", PXE_CLIENT, (0,), "tftp", files.bios),
            efi64,
            ArchBoot("arm64", PXE_CLIENT, (10, 11), "tftp", files.uefi_arm64),
            ArchBoot("httpx64", HTTP_CLIENT, (16,), "http", http_base + files.uefi_x64),
            ArchBoot("httparm64", HTTP_CLIENT, (19,), "http", http_base + files.uefi_arm64),
            *ia32,
        ),
        known_only=site.unknown_clients == "ignore",
        secure_boot=site.secure_boot,
    )


def profile_secure_boot(site: Site, profile: Profile | None) -> bool:
    """Whether a machine booting `profile` (None: no profile, an unknown machine) boots
    through the signed shim and GRUB."""
    if profile is not None and profile.secure_boot is not None:
        return profile.secure_boot
    return site.secure_boot


def uses_secure_boot(state: DesiredState) -> bool:
    """Whether any machine of this state may be handed the Secure Boot chain."""
    return state.site.secure_boot or any(p.secure_boot for p in state.profiles.values())


def other_chain_macs(state: DesiredState) -> tuple[str, ...]:
    """The MACs of the known machines whose profile's `secure_boot` differs from the site's:
    these get `ArchBoot.other_chain` (sorted, for byte-stable configs)."""
    site = state.site
    return tuple(sorted(node.mac for node in state.nodes
                        if profile_secure_boot(site, state.profiles.get(node.profile)) != site.secure_boot))


def signed_files(state: DesiredState) -> dict[str, str]:
    """TFTP name -> file on the server, for the Secure Boot chain's binaries (none when no
    machine uses it). Served from where the Debian packages install them, outside the root."""
    if not uses_secure_boot(state):
        return {}
    files = state.site.boot_files
    return {SHIM_NAME: files.shim_x64, GRUB_NAME: files.grub_x64}
