"""A private libvirtd in the lab namespace, for QEMU domains a Redfish emulator powers.

`Libvirtd(lab, workdir)` starts `/usr/sbin/libvirtd` (Debian libvirt-daemon-system) inside the
lab's network namespace, so its domains' NICs are the lab's taps, under tests/e2e/subreaper.py
(this machine's init does not reap orphans: libvirtd hangs on `virsh define` without it) and in
a mount namespace of its own where /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt and /var/log/libvirt are directories of `workdir`: the machine's libvirt
configuration and state are neither read nor touched. Its socket is `workdir/sock/libvirt-sock`
(`uri`). QEMU runs as root, TCG, without cgroups, namespaces or a security driver, under
`nice -n 10` (inherited from libvirtd). `close()` destroys the domains, stops libvirtd and kills
what it left; nothing keeps running.

`domain_xml` is a small BIOS guest (SeaBIOS + the virtio NIC's iPXE ROM, one vCPU, 256 MiB) with
an empty disk it boots first, the lab tap as NIC, its serial console in a file.

Caller: tests/e2e/test_power_redfish_libvirt.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Lab, sh, tail
from tests.support import require_tool

LIBVIRTD = Path("/usr/sbin/libvirtd")
SYSTEM_DIRS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
QEMU_CONF = """\
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = []
namespaces = []
stdio_handler = "file"
remember_owner = 0
"""


class Libvirtd:
    """libvirtd for one test, in `lab`'s namespace, its files in `workdir`."""

    def __init__(self, lab: Lab, workdir: Path, timeout: float = 120) -> None:
        if not LIBVIRTD.exists():
            pytest.fail(f"{LIBVIRTD} not found: apt-get install libvirt-daemon-system (scripts/test.sh installs it)")
        self.virsh_path = require_tool("virsh", "libvirt-clients")
        require_tool("unshare", "util-linux")
        self.lab = lab
        self.workdir = workdir
        self.sock = workdir / "sock" / "libvirt-sock"
        self.uri = f"qemu:///system?socket={self.sock}"
        self.log = workdir / "libvirtd.log"
        self._made: list[Path] = []
        binds = []
        for target in SYSTEM_DIRS:
            own = workdir / target.strip("/").replace("/", "-")
            own.mkdir(parents=True)
            binds.append(f"{own}:{target}")
            if not Path(target).exists():  # a mount point (libvirt-daemon-system makes all but /run/libvirt)
                Path(target).mkdir()
                self._made.append(Path(target))
        etc = workdir / "etc-libvirt"
        (etc / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.sock.parent}"\nlisten_tls = 0\nlisten_tcp = 0\nauth_unix_rw = "none"\n'
            f'log_outputs = "3:file:{self.log}"\n')
        (etc / "qemu.conf").write_text(QEMU_CONF)
        self.sock.parent.mkdir()
        out = (workdir / "libvirtd.out").open("wb")
        self.proc: subprocess.Popen[Any] = lab.popen(
            ["unshare", "--mount", "--propagation", "private", "nice", "-n", "10", sys.executable,
             str(Path(__file__).with_name("subreaper.py")), *binds, "--", str(LIBVIRTD), "--config",
             str(etc / "libvirtd.conf")], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"libvirtd exited {self.proc.returncode}: {self.diagnostics()}")
            if self.sock.exists() and self.virsh("version", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"libvirtd did not answer on {self.sock} in {timeout:.0f} s: {self.diagnostics()}")
            time.sleep(0.5)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = sh(self.virsh_path, "-c", self.uri, *args, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"virsh {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}\n"
                        f"{self.diagnostics()}")
        return proc

    def diagnostics(self) -> str:
        parts = []
        for path in (self.workdir / "libvirtd.out", self.log):
            with contextlib.suppress(OSError):
                parts.append(f"{path}:\n{tail(path.read_text(errors='replace'), 30)}")
        for qlog in sorted((self.workdir / "var-log-libvirt").glob("qemu/*.log")):
            parts.append(f"{qlog}:\n{tail(qlog.read_text(errors='replace'), 30)}")
        return "\n".join(parts)

    def close(self) -> None:
        if self.proc.poll() is None:
            listed = self.virsh("list", "--name", check=False, timeout=30).stdout.split()
            for name in listed:
                self.virsh("destroy", name, check=False, timeout=30)
        self.lab.stop(self.proc, grace=20)
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                made.rmdir()


def domain_xml(name: str, mac: str, tap: str, serial_log: Path, disk: Path, memory_mib: int = 256) -> str:
    """A BIOS guest that boots its (empty) disk unless told otherwise; `<on_reboot>destroy` makes a
    reboot end it, as the harness's `-no-reboot` does."""
    return f"""\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bios useserial='yes'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>{require_tool("qemu-system-x86_64", "qemu-system-x86")}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='no'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{serial_log}'/><target port='0'/></serial>
    <console type='file'><source path='{serial_log}'/><target type='serial' port='0'/></console>
  </devices>
</domain>
"""
