"""PostgreSQL stopped and started under load (issue 26 point 1): a daemon on `--store` keeps
serving, says Degraded naming the store (and netboot_store_up 0 in /metrics), queues what it
records, and recovers without a restart.

A cluster of its own (tests/pgcluster.py) so that stopping it disturbs no other test. Load: a
thread netbooting node-1 over HTTP again and again (/boot.ipxe, /ipxe, kernel, initrd, seeds:
each request a boot event). While PostgreSQL is down a commit is applied too: the reconcile is
recorded once it is back. At the end every event of every request answered is in the store.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg

from reconciler.daemon import Result
from tests.integration.daemon_support import wait_for
from tests.integration.test_results import IPS, MACS, Site, node_yaml, post_json, results_json, simulate_netboot
from tests.pgcluster import PgCluster
from tests.segment_lab import Segment
from tests.support import require_root, require_tool


def test_postgresql_stopped_and_started_under_load(tmp_path: Path) -> None:
    cluster = PgCluster(prefix="nbr-pg-outage-")
    try:
        url = cluster.create_database("results")
        site = Site(tmp_path, store=url)
        try:
            rounds = [0]
            stop = threading.Event()
            failures: list[BaseException] = []

            def load() -> None:
                try:
                    while not stop.is_set():
                        simulate_netboot(site.port, "node-1", site.sha)
                        rounds[0] += 1
                except BaseException as exc:  # reported by the test thread
                    failures.append(exc)

            worker = threading.Thread(target=load)
            worker.start()
            wait_for(lambda: rounds[0] >= 3, "some boots before the outage")
            history = site.daemon.status()["reconciles"]  # as a monitoring scrape reads it
            assert history
            cluster.stop()
            status = wait_for(lambda: (s := site.daemon.status())["condition"] == "Degraded" and s,
                              "/status Degraded while PostgreSQL is down")
            assert status["reason"] == "StoreUnreachable" and "postgresql://postgres@/results" in status["message"]
            assert status["reconciles"] == history, "the last history read is still shown"
            assert b'netboot_store_up{store="results"} 0.0' in site.get("/metrics").body
            during = rounds[0]
            wait_for(lambda: rounds[0] >= during + 5, "boots served while PostgreSQL is down")
            sha = site.apply({"nodes/node-2.yaml": node_yaml("node-2", reinstall=1)}, "during the outage")
            assert site.daemon.holder.current().revision == sha  # type: ignore[union-attr]
            assert site.daemon.status()["condition"] == "Degraded"
            cluster.start()
            wait_for(lambda: site.daemon.status()["condition"] == "Ready",
                     "/status Ready again once PostgreSQL answers, without a restart", timeout=30)
            assert b'netboot_store_up{store="results"} 1.0' in site.get("/metrics").body
            stop.set()
            worker.join(30)
            assert not failures, failures
            site.flush()
            assert site.daemon.store is not None and site.daemon.store.dropped == 0
            with psycopg.connect(url) as conn:
                kernels = conn.execute("SELECT count(*) FROM boot_events WHERE stage = 'kernel'").fetchone()
            assert kernels is not None and kernels[0] == rounds[0]  # one kernel fetch a round, none lost
            doc = results_json(url)
            assert any(c["revision"] == sha for c in doc["commits"])  # the deferred reconcile, written
            assert site.daemon.reconcile_once() in (Result.UNCHANGED, Result.APPLIED)
        finally:
            site.close()
    finally:
        cluster.close()


def test_postgresql_stopped_under_dhcp_load_known_clients_are_answered_new_ones_wait(tmp_path: Path) -> None:
    """Two instances sharing PostgreSQL, perfdhcp broadcasting; PostgreSQL stopped: every DORA of
    the 20 machines that hold leases is answered from memory (0 lost), machines without one get no
    address (no instance can make it safe), /status Degraded on both; started again: the new ones
    are served, without a restart of either instance."""
    require_root()
    require_tool("perfdhcp", "kea-admin")
    require_tool("curl", "curl")
    cluster = PgCluster(prefix="nbr-pg-dhcp-outage-")
    seg = Segment(tmp_path)
    try:
        url = cluster.create_database("results")
        seg.start("a", url)
        seg.start("b", url)
        known = seg.perfdhcp(seconds=4, rate=50, clients=20, seed=21)  # 200 DORAs: every one of the 20 leased
        assert known["dora_dropped"] <= known["discovers"] // 20, known
        cluster.stop()
        for name in ("a", "b"):
            wait_for(lambda name=name: (seg.status(name) or {}).get("reason") == "StoreUnreachable",  # type: ignore[misc]
                     f"{name} Degraded while PostgreSQL is down")
        again = seg.perfdhcp(seconds=3, rate=30, clients=20, seed=21)
        assert again["dora_dropped"] == 0 and again["discovers"] > 0, again
        strangers = seg.perfdhcp(seconds=2, rate=20, clients=20, seed=22)
        assert strangers["dora_dropped"] >= strangers["discovers"], strangers  # no new address while down
        cluster.start()
        for name in ("a", "b"):
            wait_for(lambda name=name: (seg.status(name) or {}).get("condition") == "Ready",  # type: ignore[misc]
                     f"{name} Ready again", timeout=30)
        served = seg.perfdhcp(seconds=3, rate=20, clients=20, seed=23)
        assert served["dora_dropped"] <= served["discovers"] // 20, served
    finally:
        seg.close()
        cluster.close()


def test_reports_and_status_while_postgresql_is_down_are_answered_from_memory(tmp_path: Path) -> None:
    """PostgreSQL stopped (the daemon has seen it: Degraded): a report from a machine this
    instance never served (no serving revision in memory) is answered 503 at once, as documented
    (the machine retries), not with a server error from reading the store for its serving
    revision; /status answers from memory with what the daemon serves. Started again: the same
    report is accepted for the revision served."""
    cluster = PgCluster(prefix="nbr-pg-report-outage-")
    try:
        url = cluster.create_database("results")
        site = Site(tmp_path, store=url)
        try:
            cluster.stop()
            wait_for(lambda: site.daemon.status()["condition"] == "Degraded", "/status Degraded")
            assert site.daemon.store is not None and site.daemon.store.problem is not None
            for _ in range(3):
                reply = post_json(site.port, f"/report/{MACS['node-2']}", {"status": "success"}, IPS["node-2"])
                assert (reply.status, json.loads(reply.body)) == (503, {"error": "could not store the report"})
            status = site.daemon.status()
            assert status["generation"]["revision"] == site.sha and status["reason"] == "StoreUnreachable"
            cluster.start()
            wait_for(lambda: site.daemon.status()["condition"] == "Ready", "Ready again", timeout=30)
            reply = post_json(site.port, f"/report/{MACS['node-2']}", {"status": "success"}, IPS["node-2"])
            assert reply.status == 200 and json.loads(reply.body)["revision"] == site.sha, reply
        finally:
            site.close()
    finally:
        cluster.close()
