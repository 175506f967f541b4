"""The results store: reconcile history and boot events in SQLite (WAL), `results.sqlite3`.

Called by the daemon (`record_reconcile` after every attempt, `recent_reconciles` for /status)
and, through the `core.events.EventSink` interface, by every server (`record(event)`).

`record()` never blocks the request path: it appends to a deque; one writer thread drains it
every `flush_interval` (~100 ms) or as soon as `batch_size` events are waiting, in one
transaction per batch. A full queue (the disk stalled) drops the oldest events and counts them.

The schema is versioned with `PRAGMA user_version`: `_MIGRATIONS[i]` takes a database from
version i to i+1, and `open` applies whatever is missing, in one transaction each. To extend
the schema (boot outcomes, ...), append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.core.model import BootEvent

log = logging.getLogger(__name__)

RESULTS_FILE = "results.sqlite3"

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: reconcile history and boot events
    """
    CREATE TABLE reconciles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        revision TEXT,
        trigger TEXT NOT NULL,
        result TEXT NOT NULL,          -- applied | invalid | failed
        reason TEXT NOT NULL DEFAULT '',
        findings TEXT NOT NULL DEFAULT '[]',  -- JSON list of core.findings.as_dict
        started REAL NOT NULL,
        duration REAL NOT NULL
    );
    CREATE INDEX reconciles_revision ON reconciles (revision);
    CREATE TABLE boot_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        stage TEXT NOT NULL,
        revision TEXT NOT NULL,
        mac TEXT,
        node TEXT,
        client TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX boot_events_revision_mac ON boot_events (revision, mac);
    CREATE INDEX boot_events_mac_time ON boot_events (mac, time);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class ReconcileRecord:
    """One reconcile attempt, as stored."""

    revision: str | None
    trigger: str
    result: str
    started: float
    duration: float
    reason: str = ""
    findings: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "trigger": self.trigger,
            "result": self.result,
            "reason": self.reason,
            "started": self.started,
            "duration_seconds": round(self.duration, 6),
            "findings": list(self.findings),
        }


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection with WAL, a busy timeout and the schema migrated to `SCHEMA_VERSION`."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations, each in its own transaction; return the resulting version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"results store schema {version} is newer than this program ({SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        script = _MIGRATIONS[version]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version += 1
    return version


def _statements(script: str) -> list[str]:
    # Our migrations hold no semicolons inside literals, so splitting is enough (and keeps each
    # migration inside one transaction, which executescript would not).
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class ResultsStore:
    """Reconcile history (synchronous, rare) and boot events (batched, frequent)."""

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval: float = 0.1,
        batch_size: int = 500,
        max_queue: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()  # one statement at a time on the shared connection
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._queue: collections.deque[BootEvent] = collections.deque(maxlen=max_queue)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._flushed = threading.Condition()
        self._written = 0
        self._enqueued = 0
        self.dropped = 0
        self._writer = threading.Thread(target=self._write_loop, name="results-writer", daemon=True)
        self._writer.start()

    # -- EventSink -------------------------------------------------------------------------

    def record(self, event: BootEvent) -> None:
        """Queue one boot event; never blocks on the disk."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)
        self._enqueued += 1
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event queued before this call is written; False on timeout."""
        target = self._enqueued
        self._wake.set()
        with self._flushed:
            return self._flushed.wait_for(lambda: self._written + self.dropped >= target or not self._writer.is_alive(),
                                          timeout)

    def _write_loop(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            batch: list[BootEvent] = []
            while self._queue:
                batch.append(self._queue.popleft())
            if batch:
                try:
                    self._insert_events(batch)
                except sqlite3.Error:
                    log.exception("boot events lost: %d", len(batch))
            with self._flushed:
                self._written += len(batch)
                self._flushed.notify_all()
            if self._closing.is_set() and not self._queue:
                return

    def _insert_events(self, batch: Sequence[BootEvent]) -> None:
        rows = [
            (e.time, e.stage, e.revision, e.mac, e.node, e.client, json.dumps(dict(e.detail), default=str))
            for e in batch
        ]
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT INTO boot_events (time, stage, revision, mac, node, client, detail) VALUES (?,?,?,?,?,?,?)",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def boot_events(self, revision: str | None = None, mac: str | None = None, limit: int = 1000) -> list[BootEvent]:
        where, args = [], []
        if revision is not None:
            where.append("revision = ?")
            args.append(revision)
        if mac is not None:
            where.append("mac = ?")
            args.append(mac)
        sql = "SELECT time, stage, revision, mac, node, client, detail FROM boot_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [BootEvent(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # -- reconciles --------------------------------------------------------------------------

    def record_reconcile(self, record: ReconcileRecord) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO reconciles (revision, trigger, result, reason, findings, started, duration) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    record.revision,
                    record.trigger,
                    record.result,
                    record.reason,
                    json.dumps(list(record.findings)),
                    record.started,
                    record.duration,
                ),
            )
            return int(cur.lastrowid or 0)

    def recent_reconciles(self, limit: int = 20) -> list[ReconcileRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, revision, trigger, result, reason, findings, started, duration "
                "FROM reconciles ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            ReconcileRecord(
                revision=r[1], trigger=r[2], result=r[3], reason=r[4], findings=tuple(json.loads(r[5])),
                started=r[6], duration=r[7], id=r[0],
            )
            for r in rows
        ]

    def last_reconcile_of(self, revision: str) -> ReconcileRecord | None:
        with self._lock:
            r = self._conn.execute(
                "SELECT id, revision, trigger, result, reason, findings, started, duration "
                "FROM reconciles WHERE revision = ? ORDER BY id DESC LIMIT 1",
                (revision,),
            ).fetchone()
        if r is None:
            return None
        return ReconcileRecord(
            revision=r[1], trigger=r[2], result=r[3], reason=r[4], findings=tuple(json.loads(r[5])),
            started=r[6], duration=r[7], id=r[0],
        )

    def close(self, timeout: float = 5.0) -> None:
        self._closing.set()
        self._wake.set()
        self._writer.join(timeout)
        with self._lock:
            self._conn.close()
