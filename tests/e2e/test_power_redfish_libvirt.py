"""`netboot-reconcile power` through a Redfish BMC whose machine is real: sushy-tools' emulator
(PyPI sushy-tools) with its libvirt driver, over a libvirtd this test starts, powering a QEMU
domain (TCG, one vCPU, 256 MiB, `nice -n 10`) whose NIC is a tap on the lab bridge, where a
running `netboot-reconcile run` serves DHCP, TFTP and HTTP.

The domain boots its (empty) disk first, as an installed machine would. `power vm-1 cycle
--pxe-once`, with the credentials from a `--bmc-credentials` file, makes it netboot: SeaBIOS, the
NIC's iPXE ROM, the daemon's DHCP, boot script, kernel and busybox initramfs, whose report reaches
the daemon (its results say succeeded). sushy-tools' libvirt driver keeps `Once` as `Continuous`
(it rewrites the domain's boot order), so the boot source must be set back, else every later
boot would netboot: after the cycle the Redfish target is Hdd again, the domain's defined boot
order starts with its disk, and a plain `power vm-1 on` boots the disk (SeaBIOS says so on the
serial console) and never asks the daemon for an address. `status`, `off` and `on` read and
change the domain's real state (`virsh domstate`).

Setup: tests/e2e/libvirt_lab.py (libvirtd under a subreaper, in the lab namespace, its own
directories), tests/redfish_support.py (the emulator, on the root namespace's loopback; the
Python binding is Debian's python3-libvirt, put on the emulator's path alone).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.assets import BootAssets, install_into
from tests.e2e.harness import Lab, serial_report, tail
from tests.e2e.libvirt_lab import Libvirtd, domain_xml
from tests.e2e.site import DaemonProcess, Site, SiteRepo, node_specs, site_files
from tests.e2e.test_netboot import BIOS_STAGES, assert_reply, assert_served, boot_events, node_result
from tests.redfish_support import boot_override, sushy_emulator
from tests.render_support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(1200)]

PASSWORD = "rf-libvirt-Pw-7x"  # the emulator's; looked for in every output
BOOT_TIMEOUT = 420  # seconds for one TCG netboot on the loaded 2-core machine (a bound, not an expectation)
BINDING = Path("/usr/lib/python3/dist-packages")


@pytest.fixture
def lab(boot_assets: BootAssets, tmp_path: Path) -> Iterator[Lab]:
    os.chmod(tmp_path, 0o755)
    built = Lab(workdir=tmp_path)
    try:
        yield built
    finally:
        built.close()


def _binding_path(d: Path) -> Path:
    """A directory holding only Debian's libvirt binding (python3-libvirt), for the emulator's path."""
    modules = sorted(BINDING.glob("libvirt*.py")) + sorted(BINDING.glob("libvirtmod*.so"))
    if not any(m.name == "libvirt.py" for m in modules):
        pytest.fail(f"libvirt's Python binding not found in {BINDING}: apt-get install python3-libvirt "
                    "(scripts/test.sh installs it)")
    d.mkdir()
    for module in modules:
        (d / module.name).symlink_to(module)
    return d


def _power(repo: Path, creds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "power", "vm-1", *args, "--repo", str(repo),
                           "--bmc-credentials", str(creds), "--timeout", "60"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)


def _wait(what: str, done: object, timeout: float, evidence: object) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{evidence()}")  # type: ignore[operator]
        time.sleep(1)


def test_redfish_libvirt_cycle_pxe_once_netboots_through_the_daemon_and_sets_the_boot_source_back(
        lab: Lab, boot_assets: BootAssets, tmp_path: Path) -> None:
    spec = node_specs(1)[0]
    assets_dir = tmp_path / "assets"
    install_into(boot_assets, assets_dir)
    serial = tmp_path / "vm-1.serial.log"
    disk = tmp_path / "vm-1.disk.raw"
    with disk.open("wb") as fh:
        fh.truncate(1 << 20)  # empty: nothing bootable on it
    tap = lab.add_tap()
    libvirtd = Libvirtd(lab, tmp_path / "libvirt")
    try:
        xml = tmp_path / "vm-1.xml"
        xml.write_text(domain_xml("vm-1", spec.mac, tap, serial, disk))
        libvirtd.virsh("define", str(xml))

        def domstate() -> str:
            return libvirtd.virsh("domstate", "vm-1").stdout.strip()

        def boot_order() -> list[str]:
            """The defined (next start's) boot order: device kinds by their <boot order=...>."""
            defined = libvirtd.virsh("dumpxml", "--inactive", "vm-1").stdout
            found = re.findall(r"<(disk|interface) [^>]*>(?:(?!</\1>).)*?<boot order='(\d+)'/>", defined, re.S)
            return [kind for kind, _ in sorted(found, key=lambda f: int(f[1]))] or \
                re.findall(r"<boot dev='(\w+)'/>", defined)

        assert domstate() == "shut off" and boot_order() == ["hd"]

        emulator_env = {"PYTHONPATH": str(_binding_path(tmp_path / "libvirt-binding"))}
        with sushy_emulator(tmp_path / "redfish", PASSWORD, ["--libvirt-uri", libvirtd.uri], emulator_env) as port:
            assert boot_override(port, PASSWORD)[0] == "Hdd"
            files = site_files(lab.server_ip, lab.bridge, [spec])
            files["nodes/vm-1.yaml"] += f"bmc: {{driver: redfish, address: '127.0.0.1:{port}', credentials: rf}}\n"
            repo = SiteRepo(tmp_path / "repo")
            first = repo.commit(files, "one node with a Redfish BMC")
            daemon = DaemonProcess(lab, repo.path, tmp_path / "state", assets_dir)
            daemon.start()
            daemon.wait_status(lambda s: s.get("last_applied_revision") == first, timeout=60)
            site = Site(lab, repo, daemon, [spec], files, good=first)
            creds = tmp_path / "bmc-credentials.json"
            creds.write_text(json.dumps({"rf": {"username": "admin", "password": PASSWORD}}))
            creds.chmod(0o600)

            def evidence() -> str:
                return (f"domain: {domstate()}; serial {serial}:\n{tail(_read(serial))}\n"
                        f"daemon log:\n{tail(daemon.log_text())}\nemulator log:\n"
                        f"{tail(_read(tmp_path / 'redfish' / 'log'), 20)}\n{libvirtd.diagnostics()}")

            outputs = []
            result = _power(repo.path, creds, "status")
            outputs.append(result)
            assert (result.returncode, result.stdout) == (0, "vm-1: off\n"), result.stderr

            result = _power(repo.path, creds, "cycle", "--pxe-once")
            outputs.append(result)
            assert (result.returncode, result.stdout) == (0, "vm-1: on\n"), f"{result.stderr}\n{evidence()}"
            # set back while the guest netboots: the defined boot order is the disk's again
            assert boot_override(port, PASSWORD)[0] == "Hdd"
            assert boot_order()[0] == "disk", boot_order()

            _wait("vm-1 to netboot, report and power itself off", lambda: domstate() == "shut off",
                  BOOT_TIMEOUT, evidence)
            text = _read(serial)
            assert "Booting from ROM" in text and "Booting from Hard Disk" not in text, text[:2000]  # the NIC's iPXE
            report = serial_report(text)
            assert report is not None, f"vm-1 powered off without reporting:\n{evidence()}"
            assert report["status"] == "success" and report["mac"] == spec.mac, report
            assert_served(report, first, spec.mac)
            assert_reply(text, first, "vm-1")
            node_result(site, first, "vm-1", BIOS_STAGES)
            acks = len([e for e in boot_events(site, first, spec.mac) if e[0] == "dhcp-ack"])

            result = _power(repo.path, creds, "status")
            outputs.append(result)
            assert (result.returncode, result.stdout) == (0, "vm-1: off\n"), result.stderr

            # the boot source is back: a plain power-on boots the disk, not the network
            result = _power(repo.path, creds, "on")
            outputs.append(result)
            assert (result.returncode, result.stdout) == (0, "vm-1: on\n"), result.stderr
            assert domstate() == "running"
            _wait("SeaBIOS to give up on the empty disk", lambda: "No bootable device" in _read(serial),
                  BOOT_TIMEOUT, evidence)
            this_boot = _read(serial).rsplit("SeaBIOS (version", 1)[-1]
            assert "Booting from Hard Disk" in this_boot and "Booting from ROM" not in this_boot, this_boot[-2000:]
            assert len([e for e in boot_events(site, first, spec.mac) if e[0] == "dhcp-ack"]) == acks

            result = _power(repo.path, creds, "off")
            outputs.append(result)
            assert (result.returncode, result.stdout) == (0, "vm-1: off\n"), result.stderr
            assert domstate() == "shut off"
            for out in outputs:
                assert PASSWORD not in out.stdout + out.stderr
            assert PASSWORD not in daemon.log_text()
            daemon.stop()
    finally:
        libvirtd.close()


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
