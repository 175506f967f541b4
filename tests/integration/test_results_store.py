"""The results store's boot-results side on real SQLite: migration from a shipped v1 file, durable
report writes, installs remembered across a restart, unfinished installs; and the report app's
acceptance of a pool address our DHCP server leased to the node (a node without `ip`)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from reconciler.adapters.store import SCHEMA_VERSION, ReconcileRecord, ResultsReader, ResultsStore
from reconciler.core.model import BootEvent
from reconciler.core.outcomes import Target
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers.http_results import ReportApp, ResultsRecorder, make_results_apps
from tests.integration.daemon_support import wait_for
from tests.pgcluster import PgCluster
from tests.repo_builder import snapshot

MAC = "52:54:00:aa:bb:01"
V1 = """
CREATE TABLE reconciles (id INTEGER PRIMARY KEY AUTOINCREMENT, revision TEXT, trigger TEXT NOT NULL,
  result TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', findings TEXT NOT NULL DEFAULT '[]',
  started REAL NOT NULL, duration REAL NOT NULL);
CREATE INDEX reconciles_revision ON reconciles (revision);
CREATE TABLE boot_events (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, stage TEXT NOT NULL,
  revision TEXT NOT NULL, mac TEXT, node TEXT, client TEXT, detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX boot_events_revision_mac ON boot_events (revision, mac);
CREATE INDEX boot_events_mac_time ON boot_events (mac, time);
PRAGMA user_version = 1;
"""


# What migration 9 -> 10 (sites) added, taken away to make an older version's shape.
UNDO_10 = """
    DROP TABLE revision_sites; DROP INDEX node_plans_site_open; ALTER TABLE node_plans DROP COLUMN site;
    ALTER TABLE boot_events DROP COLUMN site; ALTER TABLE instances DROP COLUMN site;
"""


def test_a_v1_store_is_migrated_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    conn.execute("INSERT INTO boot_events (time, stage, revision, mac, detail) VALUES (1.0, 'kernel', 'r1', ?, '{}')",
                 (MAC,))
    conn.commit()
    conn.close()
    store = ResultsStore(path)
    try:
        assert store.boot_events(revision="r1")[0].stage == "kernel"
        store.record_revision("r1", 10.0, [Target("node-1", MAC, "install", True, 0)])
        store.record_revision("r1", 99.0, [])  # first application wins
        assert store.revisions() == [("r1", 10.0)]
        assert store.targets(["r1"]) == {"r1": [Target("node-1", MAC, "install", True, 0)]}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    # Events by revision are found through the index on the revision alone (version 3), the
    # history of a machine through (mac, time): neither query reads the whole table.
    by_revision = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM boot_events WHERE revision = 'r1'").fetchall()
    assert "INDEX boot_events_revision " in str(by_revision[-1][-1]) + " "
    by_mac = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM boot_events WHERE mac = ? ORDER BY time", (MAC,)).fetchall()
    assert "INDEX boot_events_mac_time" in str(by_mac[-1][-1])
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "boot_events_revision_mac" not in indexes


def test_a_v4_store_gets_plan_runs_and_commit_facts_and_its_old_revisions_keep_their_results(tmp_path: Path) -> None:
    """Versions 5 and 6 (issue 24): what each revision declares becomes runs of revisions declaring
    a node the same way (a row per change, not per node per commit); rows from before plans (plan
    '') each stay a plan of their own, so no carry-over is invented for them."""
    path = tmp_path / "results.sqlite3"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)  # back to version 4's shape, with two revisions recorded by it
    conn.executescript(UNDO_10 + """
        DROP TABLE commits; DROP TABLE node_plans; DROP TABLE instances;
        ALTER TABLE boot_events DROP COLUMN instance; ALTER TABLE reconciles DROP COLUMN instance;
        CREATE TABLE revision_nodes (revision TEXT NOT NULL, node TEXT NOT NULL, mac TEXT NOT NULL,
          profile TEXT NOT NULL, install_once INTEGER NOT NULL, reinstall INTEGER NOT NULL,
          PRIMARY KEY (revision, node));
        CREATE INDEX revision_nodes_mac ON revision_nodes (mac);
        PRAGMA user_version = 4;
    """)
    for i, rev in enumerate(("r0", "r1")):
        conn.execute("INSERT INTO revisions VALUES (?, ?)", (rev, 10.0 + i))
        conn.execute("INSERT INTO revision_nodes VALUES (?, 'node-1', ?, 'install', 0, 0)", (rev, MAC))
    conn.execute("INSERT INTO boot_events (time, stage, revision, mac, node, detail) "
                 "VALUES (10.5, 'kernel', 'r0', ?, 'node-1', '{\"status\": 200}')", (MAC,))
    conn.commit()
    conn.close()
    store = ResultsStore(path)
    try:
        old = Target("node-1", MAC, "install", False, 0, "")
        assert store.targets(["r0", "r1"]) == {"r0": [old], "r1": [old]}
        assert [(s.first_revision, s.key) for s in store.runs(["r0", "r1"])] == [
            ("r0", "revision:r0"), ("r1", "revision:r1")]
        plan = Target("node-1", MAC, "install", False, 0, "p" * 16)
        store.record_revision("r2", 20.0, [plan, Target("node-2", "52:54:00:aa:bb:02", "install", False, 0, "q" * 16)])
        store.record_revision("r3", 21.0, [plan])  # node-1 as before (its run goes on), node-2 removed
        assert store.targets(["r2", "r3"])["r3"] == [plan] and len(store.targets(["r2"])["r2"]) == 2
        assert [(s.first_revision, s.last_revision, s.count) for s in store.node_revisions("node-1")] == [
            ("r2", "r3", 2), ("r1", "r1", 1), ("r0", "r0", 1)]
        assert store.target_page("r3", 10, 0) == ([plan], 1)
        assert store.target_page("r2", 1, 1)[1] == 2
        store.record_reconcile(ReconcileRecord("r4", "poll", "rejected", 30.0, 0.1, "bad yaml",
                                               ({"file": "nodes/x.yaml", "line": 2, "message": "oops"},),
                                               subject="break it", author="Ann <a@x>", committed=29.0))
        events, plans = store.events_with_plans([MAC])
        assert [e.revision for e in events] == ["r0"] and plans == {}  # r0's plan is unknown
        commits = store.commits()
        assert [(c.revision, c.state("r3"), c.subject) for c in commits][:2] == [
            ("r4", "rejected", "break it"), ("r3", "applied", "")]
        assert commits[0].findings[0]["file"] == "nodes/x.yaml" and store.commit_count() == 5
    finally:
        store.close()


def test_a_v6_store_says_rejected_where_it_recorded_invalid(tmp_path: Path) -> None:
    """Version 7 (issue 24, one vocabulary): reconciles an older daemon recorded as 'invalid' read
    as `rejected` in /status's history and in the commit list, as new ones are written (fails on the
    old code: the history said invalid while results, /api and /ui said rejected)."""
    path = tmp_path / "results.sqlite3"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)  # back to version 6's shape
    conn.executescript(UNDO_10 + "DROP TABLE instances; ALTER TABLE boot_events DROP COLUMN instance; "
                       "ALTER TABLE reconciles DROP COLUMN instance; PRAGMA user_version = 6;")
    conn.execute("INSERT INTO reconciles (revision, trigger, result, reason, findings, started, duration) "
                 "VALUES ('r1', 'poll', 'invalid', '1 error(s)', '[]', 5.0, 0.1)")
    conn.execute("INSERT INTO reconciles (revision, trigger, result, reason, findings, started, duration) "
                 "VALUES ('r0', 'poll', 'applied', '', '[]', 1.0, 0.1)")
    conn.commit()
    conn.close()
    reader = ResultsReader(path)
    try:
        assert [(r.revision, r.result) for r in reader.recent_reconciles()] == [("r0", "applied"), ("r1", "rejected")]
        assert next((c.revision, str(c.state(None))) for c in reader.commits()) == ("r1", "rejected")
    finally:
        reader.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM reconciles WHERE result = 'invalid'").fetchone()[0] == 0


def test_lease_upkeep_recorded_by_an_older_version_is_dropped_and_boots_are_kept(tmp_path: Path) -> None:
    """Before version 4 every DHCP ACK was a boot event, renewals included. The rows are those
    the DHCP server wrote (client: ciaddr if set, else the source address)."""
    path = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V1)

    def ack(client: str, message: str, ip: str | None, **extra: object) -> tuple[str, str]:
        return client, json.dumps({"message": message, "arch": None, "ip": ip, **extra})

    kept = {
        "selecting": ack("0.0.0.0", "REQUEST", "10.0.0.5"),
        "relayed": ack("10.1.0.1", "REQUEST", "10.1.0.50"),
        "proxy": ack("10.0.0.9", "REQUEST", None, proxy=True),
        "proxy-inform": ack("10.0.0.9", "INFORM", None, proxy=True),
        "pxe-discovery": ack("10.0.0.5", "REQUEST", "10.0.0.5", vendor_class="PXEClient:Arch:00007:UNDI:003000"),
        "ipxe": ack("10.0.0.5", "REQUEST", "10.0.0.5", user_class="iPXE"),
        "uefi-http": ack("10.0.0.5", "REQUEST", "10.0.0.5", vendor_class="HTTPClient:Arch:00016"),
    }
    dropped = {
        "renewing": ack("10.0.0.5", "REQUEST", "10.0.0.5"),
        "rebinding": ack("10.1.0.50", "REQUEST", "10.1.0.50", vendor_class="udhcp 1.36.1"),
        "inform": ack("10.0.0.7", "INFORM", "0.0.0.0"),
        "not-ipxe": ack("10.0.0.8", "REQUEST", "10.0.0.8", user_class="iPXE-like,other", vendor_class="pxeclient"),
    }
    for i, (client, detail) in enumerate([*kept.values(), *dropped.values()]):
        conn.execute("INSERT INTO boot_events (time, stage, revision, mac, client, detail) "
                     "VALUES (?, 'dhcp-ack', 'r1', ?, ?, ?)", (float(i), MAC, client, detail))
    for stage in ("dhcp-offer", "kernel"):
        conn.execute("INSERT INTO boot_events (time, stage, revision, mac, client, detail) VALUES "
                     "(9.0, ?, 'r1', ?, '10.0.0.5', ?)", (stage, MAC, json.dumps({"message": "REQUEST",
                                                                               "ip": "10.0.0.5"})))
    conn.commit()
    conn.close()
    store = ResultsStore(path)
    try:
        left = store.boot_events(revision="r1")
    finally:
        store.close()
    assert sorted((e.client, json.dumps(dict(e.detail))) for e in left if e.stage == "dhcp-ack") == sorted(
        (client, json.dumps(json.loads(detail))) for client, detail in kept.values())
    assert sorted(e.stage for e in left if e.stage != "dhcp-ack") == ["dhcp-offer", "kernel"]


def test_a_store_the_migration_left_mostly_free_is_compacted(tmp_path: Path) -> None:
    """Version 4 drops the lease upkeep, most of an old store: the file is given back to the
    file system (VACUUM), not only left free inside for later rows."""
    path = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    renewal = json.dumps({"message": "REQUEST", "ip": "10.0.0.5", "pad": "x" * 400})
    conn.executemany("INSERT INTO boot_events (time, stage, revision, mac, client, detail) "
                     "VALUES (?, 'dhcp-ack', 'r1', ?, '10.0.0.5', ?)", [(float(i), MAC, renewal) for i in range(5000)])
    conn.execute("INSERT INTO boot_events (time, stage, revision, mac, client, detail) "
                 "VALUES (9999.0, 'kernel', 'r1', ?, '10.0.0.5', '{}')", (MAC,))
    conn.commit()
    conn.close()
    before = path.stat().st_size
    store = ResultsStore(path)
    try:
        assert [e.stage for e in store.boot_events(revision="r1")] == ["kernel"]
    finally:
        store.close()
    assert path.stat().st_size * 20 < before, (before, path.stat().st_size)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    conn.close()


def test_durable_reports_installs_and_unfinished_installs(store_location: str) -> None:
    path = store_location
    store = ResultsStore(path, flush_interval=60.0)  # the batch writer will not run on its own here
    now = time.time()
    try:
        store.record(BootEvent(now - 10, "kernel", "r2", MAC, "node-1", "10.0.0.5", {"status": 200}))
        store.record_durable(BootEvent(now, "report", "r1", MAC, "node-1", "10.0.0.5", {"status": "success"}),
                             install=("node-1", MAC, 0))
        # the durable write is there at once, for another connection, before any batch flush
        other = ResultsReader(path)
        assert [e.stage for e in other.boot_events(mac=MAC)] == ["report"]
        other.close()
        assert store.is_installed("node-1", MAC, 0) and not store.is_installed("node-1", MAC, 1)
        assert store.unfinished_revisions(now, 3600.0) == {"r2"}  # flushes the queued kernel first
        assert store.unfinished_revisions(now + 7200, 3600.0) == set()
        assert store.last_serving_revision(MAC) == "r2"
    finally:
        store.close()
    again = ResultsStore(path)
    try:
        assert again.is_installed("node-1", MAC, 0)  # remembered across a restart
    finally:
        again.close()


def call(app: ReportApp, path: str, client: str, doc: dict[str, Any]) -> tuple[str, Any]:
    body = json.dumps(doc).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "REMOTE_ADDR": client,
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    status: list[str] = []
    out = b"".join(app(environ, lambda s, h: status.append(s)))
    return status[0], json.loads(out)


def test_a_node_without_ip_reports_from_the_address_we_leased_it(store_location: str) -> None:
    state = validate(snapshot({"nodes/node-1.yaml": f"mac: {MAC}\nprofile: install\n"}, revision="r" * 40)).state
    assert state is not None
    holder = GenerationHolder()
    holder.swap(Generation(state.revision, state, render_generation(state)))
    store = ResultsStore(store_location)
    registry = CollectorRegistry()
    leases = {"10.10.10.57": MAC}
    app = ReportApp(holder, ResultsRecorder(store, registry), b"k" * 32, registry, leases.get)
    try:
        status, doc = call(app, f"/report/{MAC}", "10.10.10.57", {"status": "success", "message": "pool"})
        assert status.startswith("200") and doc["revision"] == "r" * 40, doc
        status, doc = call(app, f"/report/{MAC}", "10.10.10.58", {"status": "success"})
        assert status.startswith("403"), doc
        status, _ = call(app, "/report/nonsense", "10.10.10.57", {})
        assert status.startswith("404")
        assert [e.detail["message"] for e in store.boot_events(mac=MAC)] == ["pool"]
        assert store.is_installed("node-1", MAC, 0)
    finally:
        store.close()


def test_generations_of_unfinished_installs_are_not_collected(tmp_path: Path) -> None:
    from reconciler.daemon import Daemon, Result
    from reconciler.settings import Settings
    from tests.integration.test_results import MACS, commit, make_repo, node_yaml

    repo = make_repo(tmp_path / "repo")
    settings = Settings(repo=str(repo), state_dir=tmp_path / "state", watch=False, keep_generations=1,
                        boot_timeout=3600.0)
    clock = [time.time()]
    daemon = Daemon(settings, renderer=render_generation, clock=lambda: clock[0])
    daemon.open()
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        first = daemon.holder.current().revision  # type: ignore[union-attr]
        assert daemon.store is not None
        daemon.store.record(BootEvent(clock[0], "kernel", first, MACS["node-1"], "node-1", None, {"status": 200}))
        revisions = [first]
        for i in (1, 2):
            (repo / "nodes/node-2.yaml").write_text(node_yaml("node-2", reinstall=i))
            revisions.append(commit(repo, f"bump {i}"))
            assert daemon.reconcile_once() is Result.APPLIED
        stored = daemon.artifacts.stored()
        assert first in stored and revisions[1] not in stored  # node-1 is still installing `first`
        assert daemon.holder.get(first) is not None  # and /r/<first>/... still answers
        clock[0] += 3601  # the install timed out: nothing holds `first` any more
        (repo / "nodes/node-2.yaml").write_text(node_yaml("node-2", reinstall=3))
        commit(repo, "bump 3")
        assert daemon.reconcile_once() is Result.APPLIED
        assert first not in daemon.artifacts.stored()
    finally:
        daemon.shutdown()


def test_a_storm_of_events_is_stored_whole_in_order_and_exact(store_location: str) -> None:
    # More events than one write chunk holds, queued faster than the writer drains them;
    # detail values of every JSON kind, and one JSON cannot hold (written as its str()).
    store = ResultsStore(store_location)
    sent = [
        BootEvent(time=1_764_000_000.123456 + i / 7, stage="dhcp-ack" if i % 2 else "tftp", revision=f"rev{i % 3}",
                  mac=f"52:54:00:00:{i >> 8:02x}:{i & 0xff:02x}", node=f"n{i}" if i % 5 else None,
                  client="10.99.0.2",
                  detail={"i": i, "ok": i % 2 == 0, "ratio": i / 3, "none": None, "list": [i, "x"],
                          "text": f"ü\"{i}\\", "path": Path("/x")})
        for i in range(1000)
    ]
    for event in sent:
        store.record(event)
    assert store.flush(10.0)
    stored = store.boot_events(limit=5000)
    store.close()
    assert store.dropped == 0
    assert stored == [
        BootEvent(e.time, e.stage, e.revision, e.mac, e.node, e.client, {**e.detail, "path": "/x"}) for e in sent
    ]


def test_the_results_writer_runs_below_the_packet_threads(store_location: str) -> None:
    store = ResultsStore(store_location)
    try:
        store.record(BootEvent(time=1.0, stage="tftp", revision="r", mac=None, node=None, client="10.0.0.1"))
        assert store.flush(5.0)  # the writer has started and set its own priority
        writer = store._writer.native_id
        assert writer is not None
        # SCHED_IDLE: any waking thread of normal policy (the packet threads) preempts it at once.
        assert os.sched_getscheduler(writer) == os.SCHED_IDLE
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
    finally:
        store.close()


def test_a_value_json_cannot_hold_loses_no_event(store_location: str) -> None:
    # SQLite's JSON parser refuses NaN: one such value must not take its batch down with it.
    store = ResultsStore(store_location)
    for i in range(300):
        detail = {"duration": float("nan") if i == 7 else 0.5, "n": [float("inf")] if i == 9 else i}
        store.record(BootEvent(time=float(i), stage="tftp", revision="r", mac=None, node=None, client="10.0.0.1",
                               detail=detail))
    assert store.flush(5.0)
    stored = store.boot_events(limit=1000)
    store.close()
    assert len(stored) == 300
    assert stored[7].detail == {"duration": "nan", "n": 7}
    assert stored[9].detail == {"duration": 0.5, "n": ["inf"]}
    assert stored[8].detail == {"duration": 0.5, "n": 8}


def test_rows_handed_over_in_batches_keep_their_order_and_a_full_queue_counts_what_it_drops(
        store_location: str) -> None:
    # A writer that sleeps until flushed: the queue (100 places) overflows deterministically.
    store = ResultsStore(store_location, flush_interval=3600, batch_size=10_000, max_queue=100)
    rows = [(float(i), "dhcp-offer", "rev", f"52:54:00:00:00:{i:02x}", None, "10.99.0.9", {"i": i})
            for i in range(120)]
    try:
        store.record_rows(rows[:60])
        store.record(BootEvent(*rows[60]))
        store.record_rows(rows[61:])
        assert store.dropped == 20  # the oldest 20 made room
        assert store.flush(10.0)
        stored = store.boot_events(limit=500)
    finally:
        store.close()
    # The flush marker took a place too: one more of the oldest went.
    assert store.dropped == 21
    assert stored == [BootEvent(*row) for row in rows[21:]]


def test_the_recorder_counts_a_batch_by_stage_and_remembers_what_served_each_machine(store_location: str) -> None:
    store = ResultsStore(store_location)
    registry = CollectorRegistry()
    recorder = ResultsRecorder(store, registry)
    other = "52:54:00:aa:bb:02"
    try:
        recorder.record_rows([
            (1.0, "dhcp-discover", "r1", MAC, "n1", "0.0.0.0", {}),
            (1.1, "dhcp-offer", "r1", MAC, "n1", "0.0.0.0", {}),
            (1.2, "dhcp-discover", "r1", other, None, "0.0.0.0", {}),
            (2.0, "kernel", "r1", MAC, "n1", "10.99.0.5", {"status": 200}),
            (2.1, "kernel", "r2", other, None, "10.99.0.6", {"status": 404}),
        ])
        recorder.record(BootEvent(3.0, "dhcp-discover", "r2", other, None, "0.0.0.0"))
        assert store.flush(10.0)
        assert [(e.stage, e.mac) for e in store.boot_events()] == [
            ("dhcp-discover", MAC), ("dhcp-offer", MAC), ("dhcp-discover", other), ("kernel", MAC),
            ("kernel", other), ("dhcp-discover", other)]
        assert recorder.serving_revision(MAC) == "r1"
        assert recorder.serving_revision(other) is None  # a 404 served nothing
    finally:
        store.close()
    count = registry.get_sample_value
    assert count("netboot_boot_events_total", {"stage": "dhcp-discover"}) == 3
    assert count("netboot_boot_events_total", {"stage": "dhcp-offer"}) == 1
    assert count("netboot_boot_events_total", {"stage": "kernel"}) == 2


def test_events_the_store_let_go_are_counted_in_metrics(store_location: str) -> None:
    store = ResultsStore(store_location, flush_interval=3600, batch_size=10_000, max_queue=10)
    registry = CollectorRegistry()
    make_results_apps(holder=GenerationHolder(), recorder=ResultsRecorder(store, registry), registry=registry,
                      secret=b"k" * 32)
    try:
        assert registry.get_sample_value("netboot_boot_events_dropped_total") == 0
        store.record_rows([(float(i), "tftp", "rev", None, None, "10.99.0.9", {}) for i in range(25)])
        assert registry.get_sample_value("netboot_boot_events_dropped_total") == 15
    finally:
        store.close()


def test_an_install_reported_to_one_instance_is_known_to_the_other(pg_cluster: PgCluster) -> None:
    """Install-once state is shared: a machine that reported its install to instance a is not sent
    the installer again by instance b (the two share one PostgreSQL store)."""
    url = pg_cluster.create_database()
    a, b = ResultsStore(url, instance="a"), ResultsStore(url, instance="b")
    try:
        assert not b.is_installed("node-1", MAC, 0)
        a.record_durable(BootEvent(time.time(), "report", "r1", MAC, "node-1", "10.0.0.5", {"status": "success"}),
                         install=("node-1", MAC, 0))
        wait_for(lambda: b.is_installed("node-1", MAC, 0), "b to learn a's install")
        assert not b.is_installed("node-1", MAC, 1)
        assert {e.stage for e in b.boot_events(mac=MAC)} == {"report"}
    finally:
        a.close()
        b.close()
