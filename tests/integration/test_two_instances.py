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

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pgcluster import PgCluster
from tests.segment_lab import Segment
from tests.support import require_root, require_tool


def recorded(url: str) -> list[tuple[str, str, str, str]]:
    """(instance, stage, mac, ip) of every OFFER and ACK the instances recorded, in order."""
    with psycopg.connect(url) as conn:
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
def segment(tmp_path: Path) -> Iterator[Segment]:
    require_root()
    require_tool("perfdhcp", "kea-admin")
    require_tool("curl", "curl")
    seg = Segment(tmp_path)
    try:
        yield seg
    finally:
        seg.close()


def test_two_instances_share_leases_survive_a_sigkill_and_resume_without_conflicts(
        segment: Segment, pg_cluster: PgCluster) -> None:
    seg = segment
    url = pg_cluster.create_database()
    seg.start("a", url)
    seg.start("b", url)
    # Both serve the same commit, and each says so for both (read from the store).
    revision = seg.status("a")["last_applied_revision"]  # type: ignore[index]
    for name in ("a", "b"):
        instances = {i["name"]: i["revision"] for i in seg.status(name)["instances"]}  # type: ignore[index]
        assert instances == {"a": revision, "b": revision}, instances

    # 1. Both answer a storm of DORAs from 300 distinct MACs.
    first = seg.perfdhcp(seconds=6, rate=50, clients=300, seed=1)
    answers = recorded(url)
    assert {i for i, *_ in answers} == {"a", "b"}, "both instances answered"
    assert conflicts(answers) == ({}, {})
    assert first["dropped"] <= first["discovers"] // 20, first  # a loaded machine may lose a few

    # 2. a killed with SIGKILL in the middle of a storm with renewals: no conflict, and then b
    # alone answers every client of a new storm, renewals included.
    killer = subprocess.Popen(["sh", "-c", f"sleep 3; kill -9 {seg.procs['a'].pid}"])
    seg.perfdhcp(seconds=7, rate=50, clients=400, seed=2, renew=10)
    killer.wait()
    assert seg.procs["a"].wait(10) == -signal.SIGKILL
    before = len(recorded(url))
    after = seg.perfdhcp(seconds=5, rate=40, clients=200, seed=3, renew=10)
    assert after["dropped"] == 0 and after["renews"] > 0, after
    answers = recorded(url)
    assert conflicts(answers) == ({}, {})
    alone = answers[before:]
    assert {i for i, *_ in alone} == {"b"} and len(alone) >= 2 * after["discovers"]  # an OFFER and an ACK each

    # 3. a comes back (same state directory, same store): both answer again, without conflicts.
    seg.start("a", url)
    before = len(recorded(url))
    seg.perfdhcp(seconds=5, rate=50, clients=300, seed=4)
    answers = recorded(url)
    assert {i for i, *_ in answers[before:]} == {"a", "b"}
    assert conflicts(answers) == ({}, {})
    instances = {i["name"]: i for i in seg.status("b")["instances"]}  # type: ignore[index]
    assert set(instances) == {"a", "b"} and instances["a"]["revision"] == revision
