"""The results store on real SQLite: schema versioning, reconcile history, batched boot events."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from reconciler.adapters import sqlrows
from reconciler.adapters.store import SCHEMA_VERSION, ReconcileRecord, ResultsStore, connect
from reconciler.core.model import BootEvent


def test_schema_is_versioned_and_reopening_keeps_history(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    store = ResultsStore(path)
    store.record_reconcile(ReconcileRecord("abc", "poll", "rejected", 1.0, 0.5, "1 error",
                                           ({"file": "nodes/a.yaml", "message": "bad"},)))
    store.record_reconcile(ReconcileRecord("def", "webhook", "applied", 2.0, 0.25))
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = ResultsStore(path)
    try:
        recent = again.recent_reconciles()
        assert [r.revision for r in recent] == ["def", "abc"]
        assert recent[1].findings[0]["file"] == "nodes/a.yaml"
        last = again.last_reconcile_of("abc")
        assert last is not None and last.result == "rejected"
    finally:
        again.close()
    assert connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # idempotent


def test_boot_events_are_batched_off_the_request_path(store_location: str) -> None:
    store = ResultsStore(store_location, flush_interval=0.05, batch_size=100)
    try:
        # Hold the store's lock as a stalled disk would: record() must still return at once.
        with store._lock:
            for i in range(250):
                store.record(BootEvent(float(i), "ipxe-script", "rev1", mac="52:54:00:aa:bb:01", detail={"i": i}))
        assert store.flush(10.0)
        events = store.boot_events(revision="rev1", mac="52:54:00:aa:bb:01")
        assert [e.detail["i"] for e in events] == list(range(250))
    finally:
        store.close()


def test_record_from_many_threads(store_location: str) -> None:
    store = ResultsStore(store_location)
    try:
        def work(n: int) -> None:
            for i in range(200):
                store.record(BootEvent(0.0, "tftp", "rev", mac=f"m{n}", detail={"i": i}))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.flush(10.0)
        assert len(store.boot_events(limit=10_000)) == 800
    finally:
        store.close()


def test_last_serving_revision_skips_refused_failed_and_local_disk_answers(store_location: str) -> None:
    store = ResultsStore(store_location)
    mac = "52:54:00:aa:bb:01"
    try:
        store.record(BootEvent(1.0, "user-data", "good", mac, detail={"status": 200}))
        store.record(BootEvent(2.0, "user-data", "refused", mac, detail={"status": 403, "refused": "wrong-client"}))
        store.record(BootEvent(3.0, "ipxe-script", "disk", mac, detail={"status": 200, "local_disk": "installed"}))
        store.record(BootEvent(4.0, "kernel", "cut", mac, detail={"via": "tftp", "result": "failed", "bytes": 4096}))
        assert store.flush(10.0)
        assert store.last_serving_revision(mac) == "good"
    finally:
        store.close()


def test_record_wakes_the_writer_once_per_batch_and_serialises_nothing(store_location: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """record() is an append: no Event.set() per event while the writer is already awake, no JSON."""
    store = ResultsStore(store_location, flush_interval=60.0, batch_size=100)
    sets: list[str] = []
    original_set = store._wake.set

    def counting_set() -> None:
        sets.append(threading.current_thread().name)
        original_set()

    monkeypatch.setattr(store._wake, "set", counting_set)
    dumps: list[str] = []
    real_json_text = sqlrows.json_text

    def counting_json_text(value: object) -> str:
        dumps.append(threading.current_thread().name)
        return real_json_text(value)

    monkeypatch.setattr(sqlrows, "json_text", counting_json_text)
    try:
        with store._lock:  # a stalled disk: the writer, once woken, waits in its insert
            for i in range(2000):
                store.record(BootEvent(float(i), "ipxe-script", "rev1", mac="52:54:00:aa:bb:01", detail={"i": i}))
            assert len(sets) <= 1, f"{len(sets)} wake-ups for 2000 events"
            assert "MainThread" not in dumps
        assert store.flush(10.0)
        assert len(dumps) == 2000 and set(dumps) == {"results-writer"}  # each row's JSON, on the writer
        events = store.boot_events(revision="rev1", limit=10_000)
        assert [e.detail["i"] for e in events] == list(range(2000))
    finally:
        store.close()


def test_flush_waits_for_events_queued_before_it_from_other_threads(store_location: str) -> None:
    store = ResultsStore(store_location, flush_interval=60.0, batch_size=10_000)
    seen: dict[int, tuple[bool, int]] = {}
    try:
        def work(n: int) -> None:
            for i in range(300):
                store.record(BootEvent(0.0, "tftp", "rev", mac=f"m{n}", detail={"i": i}))
            flushed = store.flush(10.0)
            seen[n] = (flushed, len(store.boot_events(mac=f"m{n}", limit=10_000)))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {n: (True, 300) for n in range(4)}
        assert len(store.boot_events(limit=10_000)) == 1200
    finally:
        store.close()
