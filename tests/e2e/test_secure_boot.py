"""Secure Boot, enforced: OVMF's Secure Boot firmware with Microsoft's keys netboots through
`netboot-reconcile run` to Debian's signed shim, Debian's signed GRUB and a Debian-signed kernel.

The lab (one per module): `secure_boot: true` in netboot.yaml; the daemon serves DHCP, TFTP and
HTTP on a bridge in a network namespace. Guests run `OVMF_CODE_4M.secboot.fd` with
`OVMF_VARS_4M.ms.fd` (`-machine q35,smm=on`, secure pflash: `harness.Vm`, firmware
"uefi-secure"): DHCP arch 7 -> TFTP shimx64.efi (shim-signed) -> TFTP grubx64.efi
(grub-efi-amd64-signed's grubnetx64) -> TFTP /grub/grub.cfg -> grub.cfg-<mac> -> kernel and initrd
over TFTP -> the e2e busybox initramfs (tests/e2e/assets.py) fetches its NoCloud seed over HTTP
and reports to /report/<mac>.
- sb-1 boots the Debian cloud kernel as Debian signed it: it must reach the report.
- sb-3 is a machine without Secure Boot (plain OVMF) whose profile says `secure_boot: false`: it
  keeps iPXE (DHCP ipxe.efi over TFTP, then HTTP) on the same site.
- sb-2 boots the same kernel with its signature removed (`sbattach --remove`, sbsigntool): GRUB
  refuses it ("bad shim signature") and waits at its menu; the test stops the guest itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.assets import BootAssets, install_into
from tests.e2e.harness import OVMF_MS_VARS, OVMF_SECURE_CODE, tail
from tests.e2e.site import KERNEL_PATH, NodeSpec, Site, serving_site, site_files
from tests.e2e.test_netboot import assert_reply, assert_served, boot, boot_events, node_result
from tests.support import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(600)]

BOOT_TIMEOUT = 300  # seconds: a bound for a loaded CI machine, not an expectation (50-70 s here: shim, GRUB,
#                     a 14 MB kernel over TFTP at blksize 1024, Linux, all TCG)
REFUSAL_TIMEOUT = 240  # seconds for GRUB to say it refuses the unsigned kernel (25-40 s here); a bound
UNSIGNED_PATH = "/assets/e2e/vmlinuz-unsigned"
SIGNED_FILES = (
    (Path("/usr/lib/shim/shimx64.efi.signed"), "shim-signed"),
    (Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"), "grub-efi-amd64-signed"),
    (OVMF_SECURE_CODE, "ovmf"),
    (OVMF_MS_VARS, "ovmf"),
)
NODES = [NodeSpec("sb-1", "52:54:00:e2:5b:01", "10.10.10.221"), NodeSpec("sb-2", "52:54:00:e2:5b:02", "10.10.10.222"),
         NodeSpec("sb-3", "52:54:00:e2:5b:03", "10.10.10.223")]


def unsigned_copy(kernel: Path, target: Path) -> None:
    """`target`: `kernel` with its Authenticode signature removed (sbattach --remove)."""
    shutil.copyfile(kernel, target)
    proc = subprocess.run(["sbattach", "--remove", str(target)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, f"sbattach --remove {target}: {proc.stderr}"
    check = subprocess.run(["sbverify", "--list", str(target)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert "No signature table present" in check.stdout + check.stderr, check.stdout + check.stderr


def secure_site_files(server_ip: str, bridge: str) -> dict[str, str]:
    files = site_files(server_ip, bridge, NODES)
    files["netboot.yaml"] += "secure_boot: true\n"
    files["profiles/unsigned.yaml"] = files["profiles/e2e.yaml"].replace(KERNEL_PATH, UNSIGNED_PATH).replace(
        "name: e2e busybox", "name: e2e busybox, unsigned kernel")
    files["nodes/sb-2.yaml"] = files["nodes/sb-2.yaml"].replace("profile: e2e", "profile: unsigned")
    files["profiles/ipxe.yaml"] = files["profiles/e2e.yaml"] + "secure_boot: false\n"
    files["nodes/sb-3.yaml"] = files["nodes/sb-3.yaml"].replace("profile: e2e", "profile: ipxe")
    return files


@pytest.fixture(scope="module")
def secure_site(boot_assets: BootAssets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_tool("sbattach", "sbsigntool")
    for path, package in SIGNED_FILES:
        if not path.exists():
            pytest.fail(f"{path} not found: apt-get install {package} (scripts/test.sh installs it)")

    def install(assets_dir: Path) -> None:
        install_into(boot_assets, assets_dir)
        unsigned_copy(boot_assets.kernel, assets_dir / UNSIGNED_PATH.removeprefix("/assets/"))

    with serving_site(tmp_path_factory.mktemp("e2e-secure"), NODES, install,
                      lambda lab: secure_site_files(lab.server_ip, lab.bridge),
                      "e2e Secure Boot site: a signed and an unsigned kernel") as built:
        yield built


def _failure(site: Site, name: str, text: str, why: str) -> str:
    vm = site.vms[name]
    return (f"{name} (uefi-secure): {why}; serial log {vm.log}:\n{tail(text)}\n"
            f"daemon log:\n{tail(site.daemon.log_text())}")


def tftp_files(site: Site, revision: str, mac: str) -> list[str]:
    """The files the machine fetched over TFTP at `revision` (kernel and initrd are their own stages)."""
    return [str(detail.get("file", "")) for stage, _, detail in boot_events(site, revision, mac)
            if stage == "tftp" or detail.get("via") == "tftp"]


def test_signed_kernel_boots_through_shim_and_signed_grub(secure_site: Site) -> None:
    site, name = secure_site, "sb-1"
    mac, revision = site.node(name).mac, site.good
    report, text = boot(site, name, "uefi-secure", BOOT_TIMEOUT)
    assert_served(report, revision, mac)
    assert_reply(text, revision, name)
    entry = node_result(site, revision, name, {"dhcp-ack", "tftp", "kernel", "initrd", "meta-data", "user-data"})
    assert entry["outcome"] == "succeeded"
    stages = {(e[0], e[2].get("via")) for e in boot_events(site, revision, mac)}
    assert {("kernel", "tftp"), ("initrd", "tftp")} <= stages, stages
    files = tftp_files(site, revision, mac)
    for want in ("shimx64.efi", "grubx64.efi", "/grub/grub.cfg", f"/grub/grub.cfg-{mac}",
                 f"/r/{revision}/assets/e2e/vmlinuz", f"/r/{revision}/assets/e2e/initrd"):
        assert any(f.lstrip("/") == want.lstrip("/") for f in files), (want, files)
    dhcp = [d for stage, _, d in boot_events(site, revision, mac) if stage in ("dhcp-offer", "dhcp-ack")]
    assert any(d.get("filename") == "shimx64.efi" and d.get("arch") == 7 for d in dhcp), dhcp


def test_unsigned_kernel_is_refused_by_the_signed_grub(secure_site: Site) -> None:
    site, name = secure_site, "sb-2"
    mac, revision = site.node(name).mac, site.good
    vm = site.vm(name, "uefi-secure")
    vm.start()
    try:
        text = vm.wait(REFUSAL_TIMEOUT, until=lambda t: "bad shim signature" in t or "E2E: init started" in t)
    except TimeoutError:
        text = vm.serial()
    finally:
        vm.kill()
    assert "E2E: init started" not in text, _failure(site, name, text, "the unsigned kernel ran under Secure Boot")
    assert "bad shim signature" in text, _failure(site, name, text, "GRUB never said it refused the kernel")
    files = tftp_files(site, revision, mac)
    assert any(f.lstrip("/") == f"r/{revision}/assets/e2e/vmlinuz-unsigned" for f in files), files
    assert not [e for e in boot_events(site, revision, mac) if e[0] == "report"]
    proc = site.daemon.results("--commit", revision, "--node", name)
    assert proc.returncode == 0, proc.stderr
    outcomes = [n["outcome"] for c in json.loads(proc.stdout)["commits"] for n in c["nodes"] if n["node"] == name]
    assert outcomes and "succeeded" not in outcomes, outcomes


def test_a_profile_without_secure_boot_keeps_ipxe_on_a_secure_site(secure_site: Site) -> None:
    site, name = secure_site, "sb-3"
    mac, revision = site.node(name).mac, site.good
    report, _ = boot(site, name, "uefi", BOOT_TIMEOUT)
    assert_served(report, revision, mac)
    node_result(site, revision, name, {"dhcp-ack", "tftp", "ipxe-script", "kernel", "initrd"})
    files = tftp_files(site, revision, mac)
    assert "ipxe.efi" in [f.lstrip("/") for f in files] and not any("shim" in f or "grub" in f for f in files), files
