"""Two instances, one segment, one PostgreSQL store (issue 26 point 2), with real processes.

Two `netboot-reconcile run --store postgresql://... --instance a|b` daemons, each in its own
network namespace on one bridge (tests/dhcp_lab.Lab), serve the same repository; perfdhcp
(kea-admin) in a third namespace broadcasts hundreds of concurrent DORAs from distinct MACs, and
renewals, so that both instances answer every exchange. The store's boot events (stamped with
the instance) are the record of what each instance answered:
- no address is acknowledged to two MACs, and each MAC is offered and acknowledged one address,
  whichever instance answered;
- instance a killed with SIGKILL mid-storm: b answers every client of a storm run after it,
  renewals included;
- a started again (same state directory): it serves, and a storm with both adds no conflict;
- /status names every instance and the revision each serves, read from the store.
The PostgreSQL cluster is reached over its unix socket, which the namespaces share.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.dhcp_lab import Lab
from tests.integration.daemon_support import git, wait_for
from tests.pgcluster import PgCluster
from tests.repo_builder import BASE
from tests.support import ROOT, require_root, require_tool

ADDRESSES = {"a": "10.99.0.10", "b": "10.99.0.11"}
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
      pool: [10.99.1.0, 10.99.7.255]
      routers: [10.99.0.1]
      dns_servers: [10.99.0.1]
      lease_time: 600
      max_lease_time: 7200
"""


@dataclass
class Segment:
    lab: Lab
    url: str
    repo: Path
    tmp: Path
    client: str
    procs: dict[str, subprocess.Popen[str]]

    def start(self, name: str) -> None:
        state = self.tmp / f"state-{name}"
        log = open(self.tmp / f"daemon-{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        self.procs[name] = self.lab.popen(
            self.lab.hosts[name], sys.executable, "-m", "reconciler", "run", "--repo", str(self.repo),
            "--state-dir", str(state), "--store", self.url, "--instance", name, "--no-tftp", "--no-worker",
            "--http-listen", f"{ADDRESSES[name]}:8080", "--dhcp-interface", "eth0",
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: (self.status(name) or {}).get("last_applied_revision") is not None,
                 f"instance {name} to serve\n{self.log(name)[-3000:]}", timeout=60)

    def log(self, name: str) -> str:
        return (self.tmp / f"daemon-{name}.log").read_text(errors="replace")

    def status(self, name: str) -> dict[str, Any] | None:
        out = self.lab.run(self.client, "curl", "-s", "-m", "3", f"http://{ADDRESSES[name]}:8080/status")
        try:
            doc: dict[str, Any] = json.loads(out.stdout)
        except ValueError:
            return None
        return doc

    def storm(self, seconds: int, rate: int, clients: int, seed: int, renew: int = 0) -> dict[str, int]:
        """perfdhcp broadcasting DORAs (and renewals) to both instances; its counts."""
        cmd = ["perfdhcp", "-4", "-l", "eth0", "-r", str(rate), "-R", str(clients), "-p", str(seconds),
               "-s", str(seed), "-d", "2", "-W", "2000000", "-b", f"mac=02:{seed:02x}:00:00:00:00"]
        if renew:
            cmd += ["-f", str(renew)]
        result = self.lab.run(self.client, *cmd, "all", timeout=seconds + 60)
        sent = [int(x) for x in re.findall(r"sent packets: (\d+)", result.stdout)]
        drops = [int(x) for x in re.findall(r"drops: (\d+)", result.stdout)]
        assert sent and drops, result.stdout + result.stderr
        return {"discovers": sent[0], "requests": sent[1], "renews": sent[2] if len(sent) > 2 else 0,
                "dropped": sum(drops), "output": len(result.stdout)}

    def answers(self) -> list[tuple[str, str, str, str]]:
        """(instance, stage, mac, ip) of every OFFER and ACK the instances recorded."""
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT instance, stage, mac, detail::jsonb->>'ip' FROM boot_events "
                "WHERE stage IN ('dhcp-offer', 'dhcp-ack') AND mac IS NOT NULL ORDER BY id").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def conflicts(answers: list[tuple[str, str, str, str]]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Addresses acknowledged to more than one MAC; MACs offered or acknowledged more than one address."""
    macs_of: dict[str, set[str]] = {}
    ips_of: dict[str, set[str]] = {}
    for _, stage, mac, ip in answers:
        if stage == "dhcp-ack":
            macs_of.setdefault(ip, set()).add(mac)
        ips_of.setdefault(mac, set()).add(ip)
    return ({ip: m for ip, m in macs_of.items() if len(m) > 1}, {mac: i for mac, i in ips_of.items() if len(i) > 1})


@pytest.fixture
def segment(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[Segment]:
    require_root()
    require_tool("perfdhcp", "kea-admin")
    require_tool("curl", "curl")
    repo = tmp_path / "repo"
    for rel, text in {**BASE, "netboot.yaml": NETBOOT}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text.replace("10.10.10.", "10.99.0."))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two instances")
    lab = Lab(server_cidr="10.99.0.1/16")
    seg = Segment(lab, pg_cluster.create_database(), repo, tmp_path, "", {})
    try:
        for name in ("a", "b"):
            lab.add_host(name, f"02:00:00:00:0a:{ord(name):02x}", f"{ADDRESSES[name]}/16")
        seg.client = lab.add_host("c", "02:00:00:00:0c:01", f"{CLIENT}/16")
        yield seg
    finally:
        for proc in seg.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        lab.close()


def test_two_instances_share_leases_survive_a_sigkill_and_resume_without_conflicts(segment: Segment) -> None:
    seg = segment
    seg.start("a")
    seg.start("b")
    # Both serve the same commit, and each says so for both (read from the store).
    revision = seg.status("a")["last_applied_revision"]  # type: ignore[index]
    for name in ("a", "b"):
        instances = {i["name"]: i["revision"] for i in seg.status(name)["instances"]}  # type: ignore[index]
        assert instances == {"a": revision, "b": revision}, instances

    # 1. Both answer a storm of DORAs from 300 distinct MACs.
    first = seg.storm(seconds=6, rate=50, clients=300, seed=1)
    answers = seg.answers()
    assert {i for i, *_ in answers} == {"a", "b"}, "both instances answered"
    assert conflicts(answers) == ({}, {})
    assert first["dropped"] <= first["discovers"] // 20, first  # a loaded machine may lose a few

    # 2. a killed with SIGKILL in the middle of a storm with renewals: no conflict, and then b
    # alone answers every client of a new storm, renewals included.
    killer = subprocess.Popen(["sh", "-c", f"sleep 3; kill -9 {seg.procs['a'].pid}"])
    seg.storm(seconds=7, rate=50, clients=400, seed=2, renew=10)
    killer.wait()
    assert seg.procs["a"].wait(10) == -signal.SIGKILL
    before = len(seg.answers())
    after = seg.storm(seconds=5, rate=40, clients=200, seed=3, renew=10)
    assert after["dropped"] == 0 and after["renews"] > 0, after
    answers = seg.answers()
    assert conflicts(answers) == ({}, {})
    alone = answers[before:]
    assert {i for i, *_ in alone} == {"b"} and len(alone) >= 2 * after["discovers"]  # an OFFER and an ACK each

    # 3. a comes back (same state directory, same store): both answer again, without conflicts.
    seg.start("a")
    before = len(seg.answers())
    seg.storm(seconds=5, rate=50, clients=300, seed=4)
    answers = seg.answers()
    assert {i for i, *_ in answers[before:]} == {"a", "b"}
    assert conflicts(answers) == ({}, {})
    seen = time.time()
    instances = {i["name"]: i for i in seg.status("b")["instances"]}  # type: ignore[index]
    assert set(instances) == {"a", "b"} and instances["a"]["revision"] == revision
    assert instances["a"]["seen"] <= seen
