"""The e2e provisioning repository (a real git repository) and the daemon process serving it.

`SiteRepo` writes a small site (netboot.yaml on the lab subnet, one node file per VM, the
`e2e` profile booting the cached kernel + busybox initramfs with `ds=nocloud;s=...` and
`e2e.report=<report_url>`) and commits it with the `git` CLI; `commit()` applies edits and
returns the new sha.

`DaemonProcess` runs `netboot-reconcile run` inside the lab namespace (DHCP full mode on the
bridge, TFTP on :69, HTTP on :80), logs to `<workdir>/daemon.log`, and reads `/status` from
inside the namespace. `Site` bundles lab, repository, daemon and guests for the tests;
`serving_site` builds one (a module fixture's body) and tears it down.

Callers: `tests/e2e/conftest.py`, `bench/boot_storm.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import ROOT, Lab, Vm, tail

NETBOOT = ROOT / ".venv" / "bin" / "netboot-reconcile"
KERNEL_PATH = "/assets/e2e/vmlinuz"
INITRD_PATH = "/assets/e2e/initrd"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    mac: str
    ip: str


def node_specs(count: int, first_ip: int = 201) -> list[NodeSpec]:
    return [NodeSpec(f"vm-{i + 1}", f"52:54:00:e2:e0:{i + 1:02x}", f"10.10.10.{first_ip + i}") for i in range(count)]


def site_files(server_ip: str, bridge: str, nodes: list[NodeSpec], extra_args: tuple[str, ...] = ()) -> dict[str, str]:
    args = ["console=ttyS0", "panic=-1", "loglevel=4", '"ds=nocloud;s={{ cloud_init_url }}"',
            '"e2e.report={{ report_url }}"', *extra_args]
    files = {
        "netboot.yaml": f"""\
server:
  address: {server_ip}
  http_port: 80
dhcp:
  mode: full
  interface: {bridge}
  unknown_clients: ignore
  subnets:
    - subnet: 10.10.10.0/24
      pool: [10.10.10.100, 10.10.10.150]
      routers: [{server_ip}]
      dns_servers: [{server_ip}]
      lease_time: 600
      max_lease_time: 7200
""",
        "profiles/e2e.yaml": "name: e2e busybox\nboot:\n"
        f"  kernel: {KERNEL_PATH}\n  initrd: [{INITRD_PATH}]\n  args: [{', '.join(args)}]\n"
        "cloud_init: e2e\n",
        "cloud-init/e2e.yaml": "#cloud-config\nhostname: {{ hostname }}\n"
        "write_files:\n  - path: /etc/e2e-revision\n    content: \"{{ revision }}\"\n",
    }
    for node in nodes:
        files[f"nodes/{node.name}.yaml"] = f"mac: {node.mac}\nip: {node.ip}\nprofile: e2e\n"
    return files


LIVE_ASSETS = "/assets/live"
# Works with every cloud-init: before 23.2 plain `ds=nocloud;s=http://...` means dsmode=local and the
# user-data never runs (see README "The NoCloud seed argument").
LIVE_SEED_ARG = "ds=nocloud;s={{ cloud_init_url }};dsmode=net"
LIVE_MARKER = "E2E-CI"


def live_node_specs() -> list[NodeSpec]:
    return [NodeSpec("ci-1", "52:54:00:e2:c1:01", "10.10.10.221")]


# what runcmd prints on the serial console (tests/e2e/test_cloudinit.py reads it)
_REPORT_LINE = (f'echo "{LIVE_MARKER} hostname=$(hostname) marker=$(cat /etc/e2e-marker) '
                'iid=$(cat /run/cloud-init/.instance-id)" > /dev/ttyS0')


def live_user_data(marker: str) -> str:
    """The committed user-data of the live site: hostname, write_files, runcmd, phone_home, power_state.

    runcmd prints one line on the serial console (what the guest's cloud-init did), phone_home
    reports to the daemon, and power_state powers the guest off, which ends QEMU (-no-reboot).
    """
    return f"""\
#cloud-config
hostname: {{{{ hostname }}}}
write_files:
  - path: /etc/e2e-marker
    content: "{marker} {{{{ revision }}}}"
runcmd:
  - [sh, -c, '{_REPORT_LINE}']
phone_home:
  url: "{{{{ server_url }}}}/report/phone-home/{{{{ mac }}}}"
  post: [instance_id, hostname, fqdn]
  tries: 5
power_state:
  mode: poweroff
  delay: now
  condition: true
"""


def live_site_files(server_ip: str, bridge: str, nodes: list[NodeSpec]) -> dict[str, str]:
    """The site of `site_files` with a `live` profile: kernel + initrd, root image fetched by live-boot."""
    files = site_files(server_ip, bridge, [])
    args = ["boot=live", f'"fetch={{{{ server_url }}}}{LIVE_ASSETS}/filesystem.squashfs"', "console=ttyS0",
            f'"{LIVE_SEED_ARG}"']
    del files["profiles/e2e.yaml"], files["cloud-init/e2e.yaml"]
    files["profiles/live.yaml"] = (
        "name: Debian live with cloud-init\nboot:\n"
        f"  kernel: {LIVE_ASSETS}/vmlinuz\n  initrd: [{LIVE_ASSETS}/initrd.img]\n  args: [{', '.join(args)}]\n"
        "cloud_init: live\n"
    )
    files["cloud-init/live.yaml"] = live_user_data("gitops-1")
    for node in nodes:
        files[f"nodes/{node.name}.yaml"] = f"mac: {node.mac}\nip: {node.ip}\nprofile: live\n"
    return files


class SiteRepo:
    """A git work tree the daemon follows (`--repo <path>`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        env = {"GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
               "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
               "PATH": "/usr/bin:/bin", "HOME": str(self.path)}
        proc = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {proc.stderr}")
        return proc.stdout.strip()

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Write (or, for None, delete) `files`, commit, return the new HEAD sha."""
        for rel, text in files.items():
            target = self.path / rel
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


class DaemonProcess:
    """`netboot-reconcile run` in the lab namespace, serving DHCP, TFTP and HTTP on the bridge."""

    def __init__(self, lab: Lab, repo: Path, state_dir: Path, assets_dir: Path, interval: float = 2.0) -> None:
        self.lab = lab
        self.state_dir = state_dir
        self.log = lab.workdir / "daemon.log"
        ip = lab.server_ip
        self.base = f"http://{ip}"
        self.cmd = [
            str(NETBOOT), "run", "--repo", str(repo), "--state-dir", str(state_dir),
            "--http-listen", f"{ip}:80", "--tftp-listen", f"{ip}:69",
            "--dhcp-interface", lab.bridge, "--assets-dir", str(assets_dir),
            "--interval", str(interval),
        ]
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, timeout: float = 120) -> None:
        out = self.log.open("a")
        self.proc = self.lab.popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"netboot-reconcile exited {self.proc.returncode}:\n{tail(self.log_text())}")
            code, _ = self.lab.http_get(f"{self.base}/healthz", timeout=5)
            if code == 200:
                return
            time.sleep(0.5)
        raise TimeoutError(f"netboot-reconcile not healthy after {timeout} s:\n{tail(self.log_text())}")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def status(self) -> dict[str, Any]:
        code, body = self.lab.http_get(f"{self.base}/status", timeout=10)
        if code != 200:
            raise RuntimeError(f"/status answered {code}: {body[:500]}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def wait_status(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
            except (RuntimeError, ValueError):
                last = {}
            if last and predicate(last):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"/status never matched in {timeout} s; last: {json.dumps(last)[:2000]}\n"
                           f"{tail(self.log_text())}")

    def results(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`netboot-reconcile results --state-dir ... --format json [args]` (run outside the namespace)."""
        return subprocess.run([str(NETBOOT), "results", "--state-dir", str(self.state_dir), "--format", "json", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc, grace=15)


@dataclass
class Site:
    """One lab, its git repository and daemon, the nodes, and the guests booted so far (tests share it)."""

    lab: Lab
    repo: SiteRepo
    daemon: DaemonProcess
    nodes: list[NodeSpec]
    files: dict[str, str]
    vms: dict[str, Vm] = field(default_factory=dict)
    good: str = ""  # the last commit expected to be served

    def vm(self, name: str, firmware: str) -> Vm:
        if name not in self.vms:
            spec = next(n for n in self.nodes if n.name == name)
            self.vms[name] = Vm(self.lab, name, spec.mac, firmware)
        return self.vms[name]

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def evidence(self, lines: int = 40) -> str:
        """The last lines of every guest's serial console (this boot's) and of the daemon's log:
        what a failing e2e test shows (tests/e2e/conftest.py adds it to every failure)."""
        parts = [f"{vm.name} ({vm.firmware}) serial console {vm.log}, last lines:\n{tail(vm.serial(), lines)}"
                 for vm in self.vms.values()]
        parts.append(f"daemon log {self.daemon.log}, last lines:\n{tail(self.daemon.log_text(), lines)}")
        return "\n\n".join(parts)


@contextmanager
def serving_site(work: Path, nodes: list[NodeSpec], install: Callable[[Path], object],
                 files_for: Callable[[Lab], dict[str, str]], message: str,
                 daemon_args: tuple[str, ...] = ()) -> Iterator[Site]:
    """A lab in `work`: assets installed by `install(assets_dir)`, `files_for(lab)` committed with
    `message`, `netboot-reconcile run [daemon_args]` serving that commit. Closing the lab kills the
    daemon, the guests and the RA sender; deleting the namespace removes the bridge and taps."""
    os.chmod(work, 0o755)
    lab = Lab(workdir=work)
    try:
        assets_dir = work / "assets"
        install(assets_dir)
        files = files_for(lab)
        repo = SiteRepo(work / "repo")
        first = repo.commit(files, message)
        daemon = DaemonProcess(lab, repo.path, work / "state", assets_dir)
        daemon.cmd.extend(daemon_args)
        daemon.start()
        daemon.wait_status(lambda s: s.get("last_applied_revision") == first, timeout=60)
        yield Site(lab, repo, daemon, nodes, files, good=first)
    finally:
        lab.close()
