"""UEFI HTTP Boot: OVMF's HTTPClient (arch 16) reaches the Linux callback through
`netboot-reconcile run` with no TFTP at all.

The daemon runs with `--no-tftp`. The guest is OVMF with its PXE turned off the way an operator
sets a machine's boot order to "UEFI HTTP first": QEMU's `-fw_cfg opt/org.tianocore/IPv4PXESupport=n`
(and IPv6) leaves the NIC (`bootindex=1`) with its HTTP boot options only, IPv4 first, so no PXE
attempt has to time out (`harness.Vm`, firmware "uefi-http"). DHCP (vendor class HTTPClient,
arch 16) -> option 60 echoed and `http://<server>/assets/ipxe/ipxe.efi` -> iPXE over HTTP ->
/boot.ipxe -> the node's script -> kernel and initrd over HTTP -> the busybox initramfs's report.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.assets import BootAssets, install_into
from tests.e2e.site import NodeSpec, Site, serving_site, site_files
from tests.e2e.test_netboot import assert_reply, assert_served, boot, boot_events, node_result

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(600)]

BOOT_TIMEOUT = 300  # seconds for one TCG boot on a loaded machine (a bound, not an expectation; ~45 s here)
NODES = [NodeSpec("hb-1", "52:54:00:e2:4b:01", "10.10.10.231")]


@pytest.fixture(scope="module")
def http_site(boot_assets: BootAssets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving_site(tmp_path_factory.mktemp("e2e-http"), NODES, lambda assets: install_into(boot_assets, assets),
                      lambda lab: site_files(lab.server_ip, lab.bridge, NODES), "e2e HTTP boot site",
                      daemon_args=("--no-tftp",)) as built:
        yield built


def test_uefi_http_boot_reaches_the_callback_without_tftp(http_site: Site) -> None:
    site, name = http_site, "hb-1"
    mac, revision = site.node(name).mac, site.good
    report, text = boot(site, name, "uefi-http", BOOT_TIMEOUT)
    assert_served(report, revision, mac)
    assert_reply(text, revision, name)
    node_result(site, revision, name, {"dhcp-ack", "ipxe-bootstrap", "ipxe-script", "kernel", "initrd"})
    events = boot_events(site, revision, mac)
    assert not [e for e in events if e[0] == "tftp"], events
    firmware = [d for stage, _, d in events if stage in ("dhcp-offer", "dhcp-ack") and d.get("arch") == 16]
    assert firmware, f"no DHCP answer to an HTTPClient (arch 16): {events}"
    assert all(str(d.get("filename", "")).startswith("http://10.10.10.12/assets/ipxe/") for d in firmware), firmware
    assert all(str(d.get("vendor_class", "")).startswith("HTTPClient") for d in firmware), firmware
    # the firmware never tried PXE (no PXE time-out before HTTP boot): only iPXE says PXEClient
    pxe = [d for stage, _, d in events if str(d.get("vendor_class") or "").startswith("PXEClient")
           and d.get("user_class") != "iPXE"]
    assert not pxe, f"the firmware tried PXE first: {pxe}"
