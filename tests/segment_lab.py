"""One DHCP segment served by whole `netboot-reconcile run` processes, each in its own network
namespace on one bridge (tests/dhcp_lab.Lab), and perfdhcp broadcasting from a client namespace.

No tests here. Used by tests/integration/test_two_instances.py and bench/scale_out.py. The
repository is tests/repo_builder.BASE with the segment's netboot.yaml (10.99.0.0/16, a pool of
64,762 addresses, DHCP on eth0, `server.address` on the first instance's host). A PostgreSQL store
is reached over its unix socket, which the namespaces share.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.dhcp_lab import Lab
from tests.integration.daemon_support import git, wait_for
from tests.repo_builder import BASE
from tests.support import ROOT

HOSTS = {"a": "10.99.0.10", "b": "10.99.0.11", "kea": "10.99.0.12"}
CLIENT = "10.99.0.2"
NETBOOT = """\
server:
  address: 10.99.0.10
  http_port: 8080
dhcp:
  mode: full
  interface: eth0
  unknown_clients: ignore
  subnets:
    - subnet: 10.99.0.0/16
      pool: [10.99.1.0, 10.99.254.250]
      routers: [10.99.0.1]
      dns_servers: [10.99.0.1]
      lease_time: 600
      max_lease_time: 7200
"""
POOL = ("10.99.1.0", "10.99.254.250")


def make_repo(path: Path) -> Path:
    for rel, text in {**BASE, "netboot.yaml": NETBOOT}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text.replace("10.10.10.", "10.99.0."))
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one segment")
    return path


class Segment:
    """The bridge, a namespace per host in HOSTS and the client's; daemons started by name."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = make_repo(tmp / "repo")
        self.lab = Lab(server_cidr="10.99.0.1/16")
        self.procs: dict[str, subprocess.Popen[str]] = {}
        for i, (name, address) in enumerate(HOSTS.items()):
            self.lab.add_host(name, f"02:00:00:00:0a:{i + 1:02x}", f"{address}/16")
        self.client = self.lab.add_host("c", "02:00:00:00:0c:01", f"{CLIENT}/16")

    def start(self, name: str, store: str | None, timeout: float = 60) -> None:
        """`netboot-reconcile run` on host `name` (--store `store`, else SQLite in its state dir)."""
        state = self.tmp / f"state-{name}"
        log = open(self.tmp / f"daemon-{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        store_args = ["--store", store] if store else []
        self.procs[name] = self.lab.popen(
            self.lab.hosts[name], sys.executable, "-m", "reconciler", "run", "--repo", str(self.repo),
            "--state-dir", str(state), *store_args, "--instance", name, "--no-tftp", "--no-worker",
            "--http-listen", f"{HOSTS[name]}:8080", "--dhcp-interface", "eth0",
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: (self.status(name) or {}).get("last_applied_revision") is not None,
                 f"instance {name} to serve\n{self.log(name)[-3000:]}", timeout=timeout)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self, name: str) -> str:
        path = self.tmp / f"daemon-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def status(self, name: str) -> dict[str, Any] | None:
        out = self.lab.run(self.client, "curl", "-s", "-m", "3", f"http://{HOSTS[name]}:8080/status")
        try:
            doc: dict[str, Any] = json.loads(out.stdout)
        except ValueError:
            return None
        return doc

    def perfdhcp(self, seconds: int, rate: int, clients: int, seed: int, renew: int = 0) -> dict[str, int]:
        """perfdhcp broadcasting DORAs (and renewals) on the segment; its counts per exchange kind."""
        cmd = ["perfdhcp", "-4", "-l", "eth0", "-r", str(rate), "-R", str(clients), "-p", str(seconds),
               "-s", str(seed), "-d", "2", "-W", "2000000", "-b", f"mac=02:{seed % 256:02x}:00:00:00:00"]
        if renew:
            cmd += ["-f", str(renew)]
        result = self.lab.run(self.client, *cmd, "all", timeout=seconds + 60)
        sent = [int(x) for x in re.findall(r"sent packets: (\d+)", result.stdout)]
        drops = [int(x) for x in re.findall(r"drops: (\d+)", result.stdout)]
        if not sent or not drops:
            raise RuntimeError(f"perfdhcp said nothing countable:\n{result.stdout}\n{result.stderr}")
        return {"discovers": sent[0], "requests": sent[1] if len(sent) > 1 else 0,
                "renews": sent[2] if len(sent) > 2 else 0, "dropped": sum(drops),
                "dora_dropped": sum(drops[:2])}

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name)
        self.lab.close()
