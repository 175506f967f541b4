"""Power through a Redfish BMC whose machine is real: sushy-tools' emulator (PyPI sushy-tools) with
its libvirt driver, over a libvirtd this test starts, powering a QEMU domain (TCG, one vCPU,
256 MiB, `nice -n 10`) whose NIC is a tap on the lab bridge, where a running
`netboot-reconcile run` serves DHCP, TFTP and HTTP.

The domain boots its (empty) disk first, as an installed machine would. sushy-tools' libvirt
driver keeps `Once` as `Continuous` (it rewrites the domain's boot order), so after the network
boot the boot source must be set back, else every later boot would netboot.

- `power vm-1 cycle --pxe-once`, with the credentials from a `--bmc-credentials` file, makes it
  netboot: SeaBIOS, the NIC's iPXE ROM, the daemon's DHCP, boot script, kernel and busybox
  initramfs, whose report reaches the daemon (its results say succeeded). After the cycle the
  Redfish target is Hdd again, the domain's defined boot order starts with its disk, and a plain
  `power vm-1 on` boots the disk (SeaBIOS says so on the serial console) and never asks the
  daemon for an address. `status`, `off` and `on` read and change the domain's real state.
- A rollout (`rollout: {power: true}`, a commit bumping `reinstall`): the daemon power-cycles the
  domain with a one-time PXE, it netboots the commit and reports, the rollout is done, and the
  daemon set the override back (Hdd, the disk first again).

Setup: tests/e2e/libvirt_lab.py (libvirtd under a subreaper, in the lab namespace, its own
directories), tests/redfish_support.py (the emulator, on the lab namespace's loopback where the
daemon and the CLI reach it; the Python binding is Debian's python3-libvirt, put on the
emulator's path alone).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.assets import BootAssets, install_into
from tests.e2e.harness import Lab, serial_report, tail
from tests.e2e.libvirt_lab import Libvirtd, domain_xml
from tests.e2e.site import DaemonProcess, NodeSpec, Site, SiteRepo, node_specs, site_files
from tests.e2e.test_netboot import BIOS_STAGES, assert_reply, assert_served, boot_events, node_result
from tests.redfish_support import Reader, boot_override, sushy_emulator
from tests.render_support import ROOT
from tests.support import write_bmc_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(1200)]

PASSWORD = "rf-libvirt-Pw-7x"  # the emulator's; looked for in every output
BOOT_TIMEOUT = 420  # seconds for one TCG netboot on the loaded 2-core machine (a bound, not an expectation)
BINDING = Path("/usr/lib/python3/dist-packages")


@dataclass
class Rig:
    """The lab, libvirtd with the domain vm-1 defined (off), the emulator on `port`, a repository
    whose vm-1 has that Redfish BMC, and the credentials file."""

    lab: Lab
    libvirtd: Libvirtd
    port: int
    spec: NodeSpec
    serial: Path
    files: dict[str, str]
    repo: SiteRepo
    creds: Path
    tmp: Path
    read: Reader

    def override(self) -> str:
        """The Redfish BootSourceOverrideTarget, as the emulator reports it."""
        return boot_override(self.port, PASSWORD, self.read)[0]

    def domstate(self) -> str:
        return self.libvirtd.virsh("domstate", "vm-1").stdout.strip()

    def boot_order(self) -> list[str]:
        """The defined (next start's) boot order: device kinds by their <boot order=...>, else <os><boot dev>."""
        defined = self.libvirtd.virsh("dumpxml", "--inactive", "vm-1").stdout
        found = re.findall(r"<(disk|interface) [^>]*>(?:(?!</\1>).)*?<boot order='(\d+)'/>", defined, re.S)
        return [kind for kind, _ in sorted(found, key=lambda f: int(f[1]))] or \
            re.findall(r"<boot dev='(\w+)'/>", defined)

    def daemon(self, *args: str) -> DaemonProcess:
        """`netboot-reconcile run` in the lab serving the repository's HEAD."""
        head = self.repo.git("rev-parse", "HEAD")
        daemon = DaemonProcess(self.lab, self.repo.path, self.tmp / "state", self.tmp / "assets")
        daemon.cmd += list(args)
        daemon.start()
        daemon.wait_status(lambda s: s.get("last_applied_revision") == head, timeout=60)
        return daemon

    def evidence(self, daemon: DaemonProcess) -> str:
        return (f"domain: {self.domstate()}; serial {self.serial}:\n{tail(_read(self.serial))}\n"
                f"daemon log:\n{tail(daemon.log_text())}\nemulator log:\n"
                f"{tail(_read(self.tmp / 'redfish' / 'log'), 20)}\n{self.libvirtd.diagnostics()}")


@pytest.fixture
def rig(boot_assets: BootAssets, tmp_path: Path) -> Iterator[Rig]:
    os.chmod(tmp_path, 0o755)
    lab = Lab(workdir=tmp_path)
    try:
        spec = node_specs(1)[0]
        install_into(boot_assets, tmp_path / "assets")
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
            env = {"PYTHONPATH": str(_binding_path(tmp_path / "libvirt-binding"))}
            read = _reader(lab)
            with sushy_emulator(tmp_path / "redfish", PASSWORD, ["--libvirt-uri", libvirtd.uri], env,
                                popen=lab.popen, read=read) as port:
                files = site_files(lab.server_ip, lab.bridge, [spec])
                files["nodes/vm-1.yaml"] += (f"bmc: {{driver: redfish, address: '127.0.0.1:{port}', "
                                             f"credentials: rf, verify_ca: '{tmp_path / 'redfish' / 'cert.pem'}'}}\n")
                repo = SiteRepo(tmp_path / "repo")
                repo.commit(files, "one node with a Redfish BMC")
                creds = tmp_path / "bmc-credentials.json"
                write_bmc_credentials(creds, "rf", PASSWORD)
                built = Rig(lab, libvirtd, port, spec, serial, files, repo, creds, tmp_path, read)
                assert built.domstate() == "shut off" and built.boot_order() == ["hd"]
                assert built.override() == "Hdd"
                yield built
        finally:
            libvirtd.close()
    finally:
        lab.close()


def _reader(lab: Lab) -> Reader:
    """The emulator's system read from inside the lab namespace (the password on stdin)."""
    def read(port: int, password: str) -> dict[str, object] | None:
        proc = subprocess.run(lab.exec_args([sys.executable, "-m", "tests.redfish_support", str(port)]),
                              input=password, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
        doc = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
        return dict(doc) if isinstance(doc, dict) else None
    return read


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


def _wait(what: str, done: Callable[[], object], timeout: float, evidence: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{evidence()}")
        time.sleep(1)


def _netbooted(rig: Rig, site: Site, revision: str) -> None:
    """vm-1 netbooted `revision` through the daemon (iPXE ROM, not its disk) and its report was taken."""
    text = _read(rig.serial)
    assert "Booting from ROM" in text and "Booting from Hard Disk" not in text, text[:2000]
    report = serial_report(text)
    assert report is not None, f"vm-1 powered off without reporting:\n{rig.evidence(site.daemon)}"
    assert report["status"] == "success" and report["mac"] == rig.spec.mac, report
    assert_served(report, revision, rig.spec.mac)
    assert_reply(text, revision, "vm-1")
    node_result(site, revision, "vm-1", BIOS_STAGES)


def test_redfish_libvirt_cycle_pxe_once_netboots_through_the_daemon_and_sets_the_boot_source_back(
        rig: Rig) -> None:
    daemon = rig.daemon()
    first = rig.repo.git("rev-parse", "HEAD")
    site = Site(rig.lab, rig.repo, daemon, [rig.spec], rig.files, good=first)
    outputs = []

    def power(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(rig.lab.exec_args([sys.executable, "-m", "reconciler", "power", "vm-1", *args,
                                                   "--repo", str(rig.repo.path), "--bmc-credentials", str(rig.creds),
                                                   "--timeout", "60"]),
                                cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
        outputs.append(result)
        return result

    result = power("status")
    assert (result.returncode, result.stdout) == (0, "vm-1: off\n"), result.stderr

    result = power("cycle", "--pxe-once")
    assert (result.returncode, result.stdout) == (0, "vm-1: on\n"), f"{result.stderr}\n{rig.evidence(daemon)}"
    # set back while the guest netboots: the defined boot order is the disk's again
    assert rig.override() == "Hdd"
    assert rig.boot_order()[0] == "disk", rig.boot_order()

    _wait("vm-1 to netboot, report and power itself off", lambda: rig.domstate() == "shut off", BOOT_TIMEOUT,
          lambda: rig.evidence(daemon))
    _netbooted(rig, site, first)
    acks = len([e for e in boot_events(site, first, rig.spec.mac) if e[0] == "dhcp-ack"])

    result = power("status")
    assert (result.returncode, result.stdout) == (0, "vm-1: off\n"), result.stderr

    # the boot source is back: a plain power-on boots the disk, not the network
    result = power("on")
    assert (result.returncode, result.stdout) == (0, "vm-1: on\n"), result.stderr
    assert rig.domstate() == "running"
    _wait("SeaBIOS to give up on the empty disk", lambda: "No bootable device" in _read(rig.serial), BOOT_TIMEOUT,
          lambda: rig.evidence(daemon))
    this_boot = _read(rig.serial).rsplit("SeaBIOS (version", 1)[-1]
    assert "Booting from Hard Disk" in this_boot and "Booting from ROM" not in this_boot, this_boot[-2000:]
    assert len([e for e in boot_events(site, first, rig.spec.mac) if e[0] == "dhcp-ack"]) == acks

    result = power("off")
    assert (result.returncode, result.stdout) == (0, "vm-1: off\n"), result.stderr
    assert rig.domstate() == "shut off"
    for out in outputs:
        assert PASSWORD not in out.stdout + out.stderr
    assert PASSWORD not in daemon.log_text()
    daemon.stop()


def test_a_rollout_through_redfish_libvirt_netboots_the_domain_and_sets_the_boot_source_back(rig: Rig) -> None:
    rollout = {"netboot.yaml": rig.files["netboot.yaml"] + "rollout: {max_in_flight: 1, power: true}\n"}
    first = rig.repo.commit(rollout, "a rollout policy")
    daemon = rig.daemon("--bmc-credentials", str(rig.creds))
    site = Site(rig.lab, rig.repo, daemon, [rig.spec], rig.files, good=first)
    assert rig.domstate() == "shut off" and not daemon.status().get("rollout")  # nothing to reinstall

    bump = rig.repo.commit({"nodes/vm-1.yaml": rig.files["nodes/vm-1.yaml"] + "reinstall: 1\n"}, "reinstall vm-1")

    def rollout_state() -> str:
        doc = daemon.status().get("rollout") or {}
        return str(doc.get("state")) if doc.get("revision") == bump else ""

    _wait("the rollout to finish", lambda: rollout_state() in ("done", "paused", "failed"), BOOT_TIMEOUT,
          lambda: f"rollout: {daemon.status().get('rollout')}\n{rig.evidence(daemon)}")
    assert rollout_state() == "done", daemon.status().get("rollout")
    _wait("vm-1 to power itself off after its report", lambda: rig.domstate() == "shut off", BOOT_TIMEOUT,
          lambda: rig.evidence(daemon))
    _netbooted(rig, site, bump)
    # the daemon set the override back once it saw vm-1 netboot (sushy-tools offers no target None)
    _wait("the boot override set back", lambda: rig.override() == "Hdd", 120,
          lambda: rig.evidence(daemon))
    assert rig.boot_order()[0] == "disk", rig.boot_order()
    log = daemon.log_text()
    assert PASSWORD not in log and "Traceback" not in log
    daemon.stop()


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
