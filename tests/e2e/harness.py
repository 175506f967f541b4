"""The e2e network and machines: a namespace with a bridge, a tap per VM, QEMU guests, an RA sender.

`Lab` makes one network namespace (unique name `nre2e-<hex>`) holding `br0` with the server
address (10.10.10.12/24 by default) and, per VM, a tap device enslaved to the bridge. Nothing is
created in the root namespace, so deleting the namespace removes the bridge and the taps; every
process the lab starts (daemon, QEMU, RA sender) is killed by `close()`, which the fixtures call
in a finalizer.

`Vm` runs `qemu-system-x86_64 -accel tcg` inside the namespace, serial console to a file:
- firmware "bios": SeaBIOS + the virtio NIC's iPXE option ROM (`-boot n`),
- firmware "uefi": `-machine q35`, OVMF pflash (a private copy of OVMF_VARS), the NIC's option ROM
  disabled (`romfile=`) so OVMF's own PXE boots: DHCP arch 7 -> TFTP ipxe.efi -> iPXE -> HTTP.
- firmware "uefi-secure": OVMF built with Secure Boot (SMM, `-machine q35,smm=on`, secure pflash) and
  variables enrolling Microsoft's keys (`OVMF_VARS_4M.ms.fd`): Secure Boot enforced, as on a
  stock PC, so only Microsoft-signed shims and what they trust run.
- firmware "uefi-http": OVMF with its PXE turned off through fw_cfg (`opt/org.tianocore/IPv4PXESupport`
  and `IPv6PXESupport` = n), so the NIC's first boot option is UEFI HTTP boot (IPv4): DHCP
  vendor class `HTTPClient`, arch 16, and the boot file fetched over HTTP, with no PXE time-out.
`-no-reboot` makes a guest's `poweroff -f` (and any reboot after a failure) end QEMU.

`ra.py` (run in the namespace) answers IPv6 router solicitations with an advertisement that has
neither M nor O set, so iPXE's IPv6 autoconfiguration finishes at once instead of waiting ~13 s.

Callers: `tests/e2e/conftest.py`, `bench/boot_storm.py`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
OVMF_SECURE_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
FIRMWARES = ("bios", "uefi", "uefi-secure", "uefi-http")
ROOT = Path(__file__).resolve().parents[2]


PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child before exec: own process group, and SIGKILL when the test process dies hard."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def sh(*args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check)


def _terminate(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Lab:
    """One namespace, one bridge holding the server address, taps for VMs, and what runs in there."""

    def __init__(self, server_cidr: str = "10.10.10.12/24", workdir: Path | None = None, ra: bool = True) -> None:
        self.suffix = secrets.token_hex(3)
        self.ns = f"nre2e-{self.suffix}"
        self.bridge = "br0"
        self.server_cidr = server_cidr
        self.server_ip = server_cidr.split("/", maxsplit=1)[0]
        self.workdir = workdir or Path(f"/tmp/{self.ns}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[Any]] = []
        self._taps = 0
        self._created = False
        try:
            sh("ip", "netns", "add", self.ns)
            self._created = True
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            self.ip("addr", "add", server_cidr, "dev", self.bridge)
            self.ip("link", "set", self.bridge, "up")
            if ra:
                log = (self.workdir / "ra.log").open("w")
                self.popen([sys.executable, str(Path(__file__).with_name("ra.py")), self.bridge],
                           stdout=log, stderr=subprocess.STDOUT)
        except BaseException:
            self.close()
            raise

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns, *args)

    def add_tap(self) -> str:
        self._taps += 1
        tap = f"tap{self._taps}"
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", self.bridge, "up")
        return tap

    def exec_args(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def run(self, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        return sh(*self.exec_args(cmd), timeout=timeout, check=check)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `cmd` in the namespace as the leader of its own process group (killed by close()).

        `ip netns exec` execs the command, so the parent-death signal set here reaches QEMU or the
        daemon itself: if pytest is killed outright, they die with it instead of holding the taps.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen(self.exec_args(cmd), preexec_fn=_child_setup, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
        _terminate(proc, grace)

    def http_get(self, url: str, timeout: float = 30) -> tuple[int, str]:
        """GET `url` from inside the namespace with curl; (status, body)."""
        proc = self.run("curl", "-s", "-m", str(int(timeout)), "-w", "\n%{http_code}", url, timeout=timeout + 10)
        body, _, code = proc.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                _terminate(proc)
        self.procs.clear()
        if self._created:
            # taps and the bridge live in the namespace: deleting it removes them
            sh("ip", "netns", "del", self.ns, check=False)
            self._created = False


@dataclass
class Vm:
    """One QEMU guest netbooting from the lab's bridge; serial console in `log`."""

    lab: Lab
    name: str
    mac: str
    firmware: str  # one of FIRMWARES
    memory: int = 512
    proc: subprocess.Popen[Any] | None = None
    log: Path = field(init=False)
    tap: str = field(init=False, default="")
    boots: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.firmware not in FIRMWARES:
            raise ValueError(self.firmware)
        self.log = self.lab.workdir / f"{self.name}.serial.log"

    def command(self) -> list[str]:
        nic = f"virtio-net-pci,netdev=n0,mac={self.mac}"
        cmd = [
            shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
            "-accel", "tcg", "-m", str(self.memory), "-smp", "1",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.log}",
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
        ]
        if self.firmware == "bios":
            cmd += ["-machine", "pc", "-boot", "n", "-device", nic]
        else:
            secure = self.firmware == "uefi-secure"
            vars_copy = self.lab.workdir / f"{self.name}.OVMF_VARS.fd"
            shutil.copyfile(OVMF_MS_VARS if secure else OVMF_VARS, vars_copy)
            if secure:
                cmd += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
            else:
                cmd += ["-machine", "q35"]
            if self.firmware == "uefi-http":
                cmd += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                        "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
            cmd += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECURE_CODE if secure else OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                "-device", f"{nic},romfile=,bootindex=1",
            ]
        return cmd

    def start(self) -> None:
        """Power on (a fresh serial log each time; the previous one is kept as `<name>.serial.<n>.log`)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        if not self.tap:
            self.tap = self.lab.add_tap()
        if self.log.exists():
            self.log.rename(self.log.with_name(f"{self.name}.serial.{self.boots}.log"))
        self.boots += 1
        self.log.write_bytes(b"")
        out = (self.lab.workdir / f"{self.name}.qemu.log").open("a")
        self.proc = self.lab.popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def serial(self) -> str:
        try:
            return self.log.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float, until: Callable[[str], bool] | None = None) -> str:
        """Wait until QEMU exits (or `until(serial)` holds); return the serial log. Raises on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.serial()
            if until is not None and until(text):
                return text
            if not self.running():
                return self.serial()
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} ({self.firmware}) did not finish in {timeout:.0f} s; serial log tail:\n"
                           + tail(self.serial()))

    def kill(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, 2)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


_REPORT = re.compile(r"E2E-REPORT-BEGIN\r?\n(.*?)\r?\nE2E-REPORT-END", re.S)


def serial_report(text: str) -> dict[str, Any] | None:
    """The JSON report the guest printed on its console (the same body it POSTs), or None."""
    m = _REPORT.search(text)
    if not m:
        return None
    doc: dict[str, Any] = json.loads(m.group(1).replace("\r", ""))
    return doc


_REPLY = re.compile(r"E2E-REPLY-BEGIN\r?\n(.*?)\r?\nE2E-REPLY-END", re.S)


def serial_reply(text: str) -> str | None:
    """What the server answered to the guest's report POST (the body), or None if it never posted."""
    m = _REPLY.search(text)
    return None if m is None else m.group(1).replace("\r", "").strip()
