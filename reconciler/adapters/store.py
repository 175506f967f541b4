"""The results store: reconcile history and boot events in SQLite (WAL), `results.sqlite3`, or in
PostgreSQL (`--store postgresql://...`, shared by several instances), over `adapters.sqldb`.

Called by the daemon (`record_reconcile` after every attempt, `recent_reconciles` for /status)
and, through the `core.events.EventSink` interface, by every server (`record(event)`, or
`record_rows(rows)` for a batch).

Recording never blocks the request path: it appends to a deque (and wakes the writer only when
a batch is waiting and the writer sleeps); one writer thread drains it every `flush_interval`
(~100 ms) or as soon as `batch_size` events are waiting, and serialises and inserts them in one
transaction per batch. Batches are large on purpose: the index by MAC takes each row at its
machine's place, so a commit rewrites about a page per machine in it, whatever the batch size
(at 100k rows, 500-row batches cost 20 us a row, 10,000-row ones 9). A full queue (the disk
stalled) drops the oldest events and counts them.

The schema is versioned (SQLite: `PRAGMA user_version`; PostgreSQL: the `schema_version` table):
`_MIGRATIONS[i]` takes a database from version i to i+1, and `open_database` applies whatever is
missing, in one transaction each (on PostgreSQL under the writers' lock, so instances starting
together migrate once), then compacts a SQLite file the migrations left mostly free. To extend
the schema, APPEND a migration, for both engines: one SQL text when it is portable (write
`DOUBLE PRECISION` for times, PostgreSQL's REAL is 4 bytes; no `rowid`, `json_extract`,
`INSERT OR ...`), else `Dialects(sqlite=..., postgresql=...)`. Never edit one that has shipped.
PostgreSQL stores begin with the schema SQLite reached at version 6 (0 -> 1; steps 1 -> 6 are
SQLite's history). The store tests run on both engines (tests/integration/conftest.py).

When PostgreSQL cannot be reached (`sqldb.StoreUnreachable`) the instance goes on serving:
events stay queued (bounded, the oldest dropped and counted), reconcile records and revisions
wait in a bounded list, `problem` says why (the daemon's /status is Degraded with it), and the
writer retries every `RETRY_SECONDS` until the server answers again. Meanwhile nothing else tries
it: reads (/status, the dashboard, a report's serving revision) and durable writes (reports)
raise StoreUnreachable at once, instead of each waiting for a connect that fails (up to
libpq's connect_timeout, 3 s, when the server's host does not answer); the writer's own read of
the installs others recorded is the probe that finds the store back when nothing is queued.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.adapters import sqldb, sqlrows
from reconciler.adapters.sqldb import Database, StoreUnreachable
from reconciler.adapters.threads import yield_to_packet_threads
from reconciler.core import outcomes, rollout
from reconciler.core.events import EventRow, row_of
from reconciler.core.model import BootEvent

if TYPE_CHECKING:
    from reconciler.adapters.pginstance import InstanceClaim

log = logging.getLogger(__name__)

RESULTS_FILE = "results.sqlite3"
RETRY_SECONDS = 1.0  # the writer's retry interval while PostgreSQL is unreachable
INSTALLS_REFRESH = 2.0  # how often an instance on a shared store reads the installs others recorded
INSTALLS_SKEW = 300.0  # reach back this far for them (clocks of the instances' hosts differ)
DEFERRED_MAX = 1000  # reconcile records and revisions kept while it is
PLAN_ROWS = 2048  # node_plans rows per INSERT: 9 x 2,048 parameters, under SQLite's default limit (32,766)


@dataclass(frozen=True)
class Dialects:
    """A migration whose SQL differs between the engines ("": nothing to do on that one)."""

    sqlite: str
    postgresql: str


Migration = str | Dialects

# PostgreSQL's first step: the schema of SQLite's versions 1 to 6 at once. `rowid` is a column
# here (SQLite's implicit one, which the queries of revisions and node_plans use).
_PG_V6 = """
CREATE TABLE reconciles (
    id BIGSERIAL PRIMARY KEY,
    revision TEXT,
    trigger TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    findings TEXT NOT NULL DEFAULT '[]',
    started DOUBLE PRECISION NOT NULL,
    duration DOUBLE PRECISION NOT NULL
);
CREATE INDEX reconciles_revision ON reconciles (revision);
CREATE TABLE boot_events (
    id BIGSERIAL PRIMARY KEY,
    time DOUBLE PRECISION NOT NULL,
    stage TEXT NOT NULL,
    revision TEXT NOT NULL,
    mac TEXT,
    node TEXT,
    client TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX boot_events_revision ON boot_events (revision);
CREATE INDEX boot_events_mac_time ON boot_events (mac, time);
CREATE INDEX boot_events_time ON boot_events (time);
CREATE TABLE revisions (
    rowid BIGSERIAL UNIQUE,
    revision TEXT PRIMARY KEY,
    applied DOUBLE PRECISION NOT NULL
);
CREATE TABLE installs (
    node TEXT NOT NULL,
    mac TEXT NOT NULL,
    reinstall INTEGER NOT NULL,
    revision TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node, mac, reinstall)
);
CREATE TABLE commits (
    revision TEXT PRIMARY KEY,
    subject TEXT NOT NULL DEFAULT '',
    author TEXT NOT NULL DEFAULT '',
    committed DOUBLE PRECISION
);
CREATE TABLE node_plans (
    rowid BIGSERIAL PRIMARY KEY,
    node TEXT NOT NULL,
    mac TEXT NOT NULL,
    profile TEXT NOT NULL,
    install_once INTEGER NOT NULL,
    reinstall INTEGER NOT NULL,
    plan TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT
);
CREATE INDEX node_plans_mac ON node_plans (mac, first_seq);
CREATE INDEX node_plans_node ON node_plans (node, first_seq);
CREATE INDEX node_plans_open ON node_plans (last_seq, node);
CREATE INDEX node_plans_first ON node_plans (first_seq);
"""

_MIGRATIONS: tuple[Migration, ...] = (
    # 0 -> 1: reconcile history and boot events
    Dialects(sqlite="""
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
    """, postgresql=_PG_V6),
    # 1 -> 2: boot results (issue 8): what each applied revision targets, and installs done
    Dialects(sqlite="""
    CREATE TABLE revisions (
        revision TEXT PRIMARY KEY,
        applied REAL NOT NULL           -- first time it was served
    );
    CREATE TABLE revision_nodes (
        revision TEXT NOT NULL,
        node TEXT NOT NULL,
        mac TEXT NOT NULL,
        profile TEXT NOT NULL,
        install_once INTEGER NOT NULL,
        reinstall INTEGER NOT NULL,
        PRIMARY KEY (revision, node)
    );
    CREATE INDEX revision_nodes_mac ON revision_nodes (mac);
    CREATE TABLE installs (
        node TEXT NOT NULL,
        mac TEXT NOT NULL,
        reinstall INTEGER NOT NULL,
        revision TEXT NOT NULL,
        time REAL NOT NULL,
        PRIMARY KEY (node, mac, reinstall)
    );
    CREATE INDEX boot_events_time ON boot_events (time);
    """, postgresql=""),
    # 2 -> 3: events by revision through an index on the revision alone. Rows of the revision
    # being served land at the end of its range (rowid order) instead of at each MAC's place
    # in (revision, mac): every commit rewrote a page per machine, 30 -> 14 us a row at 100k
    # rows. A query by revision and MAC reads the revision's rows (or the MAC's, by mac_time).
    Dialects(sqlite="""
    DROP INDEX boot_events_revision_mac;
    CREATE INDEX boot_events_revision ON boot_events (revision);
    """, postgresql=""),
    # 3 -> 4: lease upkeep is no boot (`protocol.dhcp_decide.is_upkeep`), and is no longer
    # recorded. Drop the ACKs recorded for it before: a RENEWING/REBINDING REQUEST (its client
    # address, taken from ciaddr, is the address acknowledged) and an INFORM (ciaddr set, as
    # RFC 2131 asks), outside ProxyDHCP and not from firmware or iPXE. A month of renewals from
    # 100 machines was 900k rows: `results` took 19-25 s.
    Dialects(sqlite="""
    DELETE FROM boot_events
    WHERE stage = 'dhcp-ack' AND json_extract(detail, '$.proxy') IS NULL
      AND (json_extract(detail, '$.message') = 'INFORM'
           OR (json_extract(detail, '$.message') = 'REQUEST' AND client = json_extract(detail, '$.ip')))
      AND coalesce(json_extract(detail, '$.vendor_class'), '') NOT GLOB 'PXEClient*'
      AND coalesce(json_extract(detail, '$.vendor_class'), '') NOT GLOB 'HTTPClient*'
      AND ',' || coalesce(json_extract(detail, '$.user_class'), '') || ',' NOT GLOB '*,iPXE,*';
    """, postgresql=""),
    # 4 -> 5 (issue 24): outcomes follow what a machine boots, not the commit hash. Each node's
    # boot plan digest at each applied revision (`core.bootplan`; '' for rows written before:
    # their revision stands for their plan), looked up by (mac, revision) for every event read;
    # and what the daemon knows of each commit it saw (subject, author, commit time).
    Dialects(sqlite="""
    ALTER TABLE revision_nodes ADD COLUMN plan TEXT NOT NULL DEFAULT '';
    DROP INDEX revision_nodes_mac;
    CREATE INDEX revision_nodes_mac_revision ON revision_nodes (mac, revision);
    CREATE TABLE commits (
        revision TEXT PRIMARY KEY,
        subject TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT '',
        committed REAL
    );
    """, postgresql=""),
    # 5 -> 6 (issue 24, fleet scale): what each applied revision declares, as runs of consecutive
    # applied revisions declaring a node the same (mac, profile, install-once, reinstall, plan),
    # by `revisions.rowid` (the order of application). At 10,000 nodes and 1,000 commits a row per
    # node per revision was 10M rows; runs are a row per node per change. A plan of '' (recorded
    # before plans) never joins a run: each such revision is a plan of its own.
    Dialects(sqlite="""
    CREATE TABLE node_plans (
        node TEXT NOT NULL,
        mac TEXT NOT NULL,
        profile TEXT NOT NULL,
        install_once INTEGER NOT NULL,
        reinstall INTEGER NOT NULL,
        plan TEXT NOT NULL,
        first_seq INTEGER NOT NULL,    -- revisions.rowid of the first revision of the run
        last_seq INTEGER               -- of its last one; NULL: the newest revision declares it so
    );
    INSERT INTO node_plans (node, mac, profile, install_once, reinstall, plan, first_seq, last_seq)
    WITH seqs AS (
        SELECT rowid AS seq, revision, row_number() OVER (ORDER BY applied, rowid) AS k FROM revisions
    ), declared AS (
        SELECT n.node, n.mac, n.profile, n.install_once, n.reinstall, n.plan, s.seq,
               s.k - row_number() OVER (
                   PARTITION BY n.node, n.mac, n.profile, n.install_once, n.reinstall, n.plan,
                                CASE WHEN n.plan = '' THEN n.revision END
                   ORDER BY s.k) AS island
        FROM revision_nodes n JOIN seqs s ON s.revision = n.revision
    )
    SELECT node, mac, profile, install_once, reinstall, plan, min(seq), max(seq) FROM declared
    GROUP BY node, mac, profile, install_once, reinstall, plan, island;
    UPDATE node_plans SET last_seq = NULL WHERE last_seq = (SELECT max(rowid) FROM revisions);
    DROP TABLE revision_nodes;
    CREATE INDEX node_plans_mac ON node_plans (mac, first_seq);
    CREATE INDEX node_plans_node ON node_plans (node, first_seq);
    CREATE INDEX node_plans_open ON node_plans (last_seq, node);
    CREATE INDEX node_plans_first ON node_plans (first_seq);
    """, postgresql=""),
    # 6 -> 7 (issue 24, one vocabulary): a reconcile of an invalid revision is `rejected`, the word
    # /status's history, `results`, /api and /ui use for it (it was recorded as 'invalid').
    """
    UPDATE reconciles SET result = 'rejected' WHERE result = 'invalid';
    """,
    # 7 -> 8 (issue 26): several instances on one store. Each event and reconcile names the
    # instance (`--instance`) that recorded it; `instances` holds what each serves (/status).
    """
    ALTER TABLE boot_events ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    ALTER TABLE reconciles ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        revision TEXT,
        since DOUBLE PRECISION,
        seen DOUBLE PRECISION NOT NULL
    );
    """,
    # 8 -> 9 (issue 28): rollouts, one row per commit that started one: the `core.rollout.Rollout`
    # value as JSON (its nodes' states and why, the pause), rewritten at each of its transitions.
    # IF NOT EXISTS: tests take a current store back to an older version to replay a migration.
    """
    CREATE TABLE IF NOT EXISTS rollouts (
        revision TEXT PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rollouts_created ON rollouts (created);
    """,
    # 9 -> 10 (issue 26, sites): one store for every site. Events, node plans and instances name
    # their site (`--site`, '' without); what each site applied is in revision_sites, so two sites
    # applying one commit each record their own nodes (a revision's seq is its first application).
    """
    ALTER TABLE boot_events ADD COLUMN site TEXT NOT NULL DEFAULT '';
    ALTER TABLE node_plans ADD COLUMN site TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN site TEXT NOT NULL DEFAULT '';
    CREATE TABLE revision_sites (
        revision TEXT NOT NULL,
        site TEXT NOT NULL,
        PRIMARY KEY (revision, site)
    );
    INSERT INTO revision_sites (revision, site) SELECT revision, '' FROM revisions;
    CREATE INDEX node_plans_site_open ON node_plans (site, last_seq);
    """,
    # 10 -> 11 (issue 28 with issue 26): a rollout is one site's (its instance reinstalls that
    # site's nodes): two sites applying one commit each keep their own rollout of it.
    """
    CREATE TABLE rollouts_by_site (
        site TEXT NOT NULL,
        revision TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (site, revision)
    );
    INSERT INTO rollouts_by_site (site, revision, created, updated, doc)
        SELECT '', revision, created, updated, doc FROM rollouts;
    DROP TABLE rollouts;
    ALTER TABLE rollouts_by_site RENAME TO rollouts;
    CREATE INDEX rollouts_site_created ON rollouts (site, created);
    """,
    # 11 -> 12 (issue 25, a commit's cost follows the change): each site's open runs of node_plans
    # (last_seq NULL) carry a stamp, set anew by every write that changes them. A store that wrote
    # them last knows them without reading them back (`ResultsStore._write_revision`); another
    # instance of the site that wrote since has changed the stamp, and they are read again.
    # IF NOT EXISTS: tests take a current store back to an older version to replay a migration.
    """
    CREATE TABLE IF NOT EXISTS plan_stamps (
        site TEXT PRIMARY KEY,
        stamp TEXT NOT NULL
    );
    """,
    # 12 -> 13: a store knows its site's open runs still hold while the site's count of applied
    # revisions is the one it left (every write of runs records a revision first, whatever version
    # of this program wrote it); 12's plan_stamps, which only that version set, is no longer read.
    """
    CREATE INDEX IF NOT EXISTS revision_sites_site ON revision_sites (site);
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
    subject: str = ""  # the commit's, when the source knows it (first line of its message)
    author: str = ""
    committed: float | None = None
    instance: str = ""  # the instance that made the attempt (`--instance`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "revision": self.revision,
            "trigger": self.trigger,
            "result": self.result,
            "reason": self.reason,
            "started": self.started,
            "duration_seconds": round(self.duration, 6),
            "findings": list(self.findings),
        }


@dataclass(frozen=True)
class InstanceRecord:
    """An instance writing to the store: what it serves since when, and when it was last heard of."""

    name: str
    revision: str | None
    since: float | None
    seen: float
    site: str = ""  # the site it serves (--site); "" without sites

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "site": self.site, "revision": self.revision, "since": self.since,
                "seen": self.seen}


def connect(path: Path | str) -> sqlite3.Connection:
    """A SQLite connection with WAL, a busy timeout and the schema migrated to `SCHEMA_VERSION`."""
    db = sqldb.SqliteDb(str(path))
    migrate(db)
    return db.conn


def open_database(store: Path | str) -> Database:
    """The store at `store` (a PostgreSQL URL, or a SQLite path), its schema migrated."""
    db = sqldb.open_db(str(store))
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _script(migration: Migration, dialect: sqldb.Dialect) -> str:
    if isinstance(migration, str):
        return migration
    return migration.sqlite if dialect == "sqlite" else migration.postgresql


def _version(db: Database) -> int:
    if db.dialect == "sqlite":
        return int(db.rows("PRAGMA user_version")[0][0])
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = db.rows("SELECT version FROM schema_version")
    return int(rows[0][0]) if rows else 0


def _set_version(db: Database, version: int) -> None:
    if db.dialect == "sqlite":
        db.execute(f"PRAGMA user_version = {version}")
    else:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def migrate(db: Database) -> int:
    """Apply the missing migrations, each in its own transaction; return the resulting version."""
    if db.dialect == "postgresql":
        with db.transaction(writer=True):  # two instances starting at once: one creates the table
            _version(db)
    version = _version(db)
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"results store schema {version} is newer than this program ({SCHEMA_VERSION})")
    migrated = version < SCHEMA_VERSION
    while version < SCHEMA_VERSION:
        with db.transaction(writer=True):
            version = _version(db)  # PostgreSQL: another instance may have migrated meanwhile
            if version >= SCHEMA_VERSION:
                break
            for statement in _statements(_script(_MIGRATIONS[version], db.dialect)):
                db.execute(statement)
            _set_version(db, version + 1)
        version += 1
    if migrated and isinstance(db, sqldb.SqliteDb):
        _give_back_free_space(db.conn)
    return version


def _give_back_free_space(conn: sqlite3.Connection) -> None:
    """After migrations, VACUUM a file that is mostly free pages: 3 -> 4 deletes the lease
    upkeep, nearly all of an old store (a 308 MB file kept 320 KB of rows). SQLite only reuses
    free pages; VACUUM copies the live ones, so it takes about as long as they are large (2 ms
    there). Another connection reading at that moment holds it off: the pages are then reused."""
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if free * 4 < pages:
        return
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError as exc:
        log.info("results store: not compacted after its migration (%s); its %d free pages will be reused", exc, free)
        return
    log.info("results store: compacted after its migration, %d -> %d pages", pages,
             int(conn.execute("PRAGMA page_count").fetchone()[0]))


def _statements(script: str) -> list[str]:
    # Our migrations hold no semicolons inside literals, so splitting is enough (and keeps each
    # migration inside one transaction, which executescript would not).
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


_EVENT_COLUMNS = "time, stage, revision, mac, node, client, detail"
_TARGET_COLUMNS = "revision, node, mac, profile, install_once, reinstall, plan"
_PLAN_COLUMNS = "node, mac, profile, install_once, reinstall, plan"


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _event(r: Sequence[Any]) -> BootEvent:
    return BootEvent(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))


def _target(r: Sequence[Any]) -> outcomes.Target:
    """A Target from `_TARGET_COLUMNS` (its revision first)."""
    return outcomes.Target(r[1], r[2], r[3], bool(r[4]), int(r[5]), r[6])


def _plan_target(r: Sequence[Any]) -> outcomes.Target:
    """A Target from `_PLAN_COLUMNS`."""
    return outcomes.Target(r[0], r[1], r[2], bool(r[3]), int(r[4]), r[5])


# The runs of node_plans (n) holding revisions.rowid `seq`.
_HOLDS = "n.first_seq <= {seq} AND (n.last_seq IS NULL OR n.last_seq >= {seq})"
_RUN_COLUMNS = (", ".join("n." + c for c in _PLAN_COLUMNS.split(", "))
                + ", n.first_seq, n.last_seq, f.revision, f.applied")


# Every commit seen: its reconciles (first seen, latest result) and its first application, if any.
_COMMITS = """
WITH seen AS (
    SELECT revision, min(started) AS first, max(id) AS last FROM reconciles
    WHERE revision IS NOT NULL GROUP BY revision
), every AS (
    SELECT revision FROM seen UNION SELECT revision FROM revisions
)
SELECT every.revision, coalesce(seen.first, v.applied), v.applied, coalesce(r.result, ''), coalesce(r.reason, ''),
       coalesce(r.findings, '[]'), coalesce(c.subject, ''), coalesce(c.author, ''), c.committed
FROM every
LEFT JOIN seen ON seen.revision = every.revision
LEFT JOIN revisions v ON v.revision = every.revision
LEFT JOIN reconciles r ON r.id = seen.last
LEFT JOIN commits c ON c.revision = every.revision
"""


_STRANGERS = (
    "SELECT e.time, e.stage, e.revision, e.mac, e.node, e.client, e.detail FROM boot_events e "
    "JOIN revisions v ON v.revision = e.revision WHERE e.revision IN ({marks}){only} AND e.mac IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM node_plans n WHERE n.mac = e.mac AND n.first_seq <= v.rowid "
    "AND (n.last_seq IS NULL OR n.last_seq >= v.rowid)) ORDER BY e.time, e.id"
)
_UNKNOWN = (
    "SELECT mac, max(time), count(*), coalesce(max({vendor_class}), ''), "
    "       (SELECT stage FROM boot_events l WHERE l.mac = e.mac ORDER BY time DESC LIMIT 1) "
    "FROM boot_events e WHERE time >= ? AND mac IS NOT NULL{only} "
    "AND mac NOT IN (SELECT n.mac FROM node_plans n JOIN revisions v ON v.revision = ? "
    "WHERE n.first_seq <= v.rowid AND (n.last_seq IS NULL OR n.last_seq >= v.rowid)) "
    "GROUP BY mac ORDER BY 2 DESC LIMIT ?"
)


def _span(r: Sequence[Any]) -> outcomes.PlanSpan:
    """A PlanSpan from `_RUN_COLUMNS` (and, for a node's history, its last revision and length)."""
    return outcomes.PlanSpan(
        target=_plan_target(r), first_seq=int(r[6]), last_seq=None if r[7] is None else int(r[7]),
        first_revision=r[8], since=float(r[9]),
        last_revision=r[10] if len(r) > 10 else None, count=int(r[11]) if len(r) > 11 else 0,
    )


def _commit(r: Sequence[Any]) -> outcomes.CommitInfo:
    return outcomes.CommitInfo(
        revision=r[0], seen=float(r[1]), applied=None if r[2] is None else float(r[2]), result=r[3], reason=r[4],
        findings=tuple(json.loads(r[5])), subject=r[6], author=r[7], committed=r[8],
    )


class ResultsQueries:
    """Read-side queries over one connection (`self._conn`, guarded by `self._lock`).

    Shared by the daemon's `ResultsStore` and by `ResultsReader`, which `netboot-reconcile
    results` opens on the file directly, without a daemon.
    """

    _db: Database
    _lock: threading.Lock
    _site: str | None = None  # one site's view (`for_site`); None: every site

    def _only(self, column: str) -> tuple[str, tuple[Any, ...]]:
        """`AND <column> = ?` and its argument in one site's view; nothing in the view of all."""
        return ("", ()) if self._site is None else (f" AND {column} = ?", (self._site,))

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.rows(sql, args)

    def revisions(self, limit: int = 50, offset: int = 0) -> list[tuple[str, float]]:
        """Applied revisions, newest first: (revision, first served time)."""
        site = () if self._site is None else (self._site,)  # one site's view: those it applied
        where = " WHERE revision IN (SELECT revision FROM revision_sites WHERE site = ?)" if site else ""
        return [(r[0], float(r[1])) for r in self._rows(
            f"SELECT revision, applied FROM revisions{where} ORDER BY applied DESC, rowid DESC LIMIT ? OFFSET ?",  # noqa: S608
            (*site, limit, offset))]

    def commits(self, limit: int = 50, offset: int = 0) -> list[outcomes.CommitInfo]:
        """Every commit the daemon saw (applied, superseded, rejected, failed), newest first."""
        return [_commit(r) for r in self._rows(_COMMITS + " ORDER BY 2 DESC, 1 LIMIT ? OFFSET ?", (limit, offset))]

    def commit_count(self) -> int:
        return int(self._rows(
            "SELECT count(*) FROM (SELECT revision FROM reconciles WHERE revision IS NOT NULL "
            "UNION SELECT revision FROM revisions) AS seen")[0][0])

    def commit_info(self, revision: str) -> outcomes.CommitInfo | None:
        rows = self._rows(_COMMITS + " WHERE every.revision = ?", (revision,))
        return _commit(rows[0]) if rows else None

    def target_page(self, revision: str, limit: int, offset: int) -> tuple[list[outcomes.Target], int]:
        """One page of the nodes `revision` declares, by name, and how many it declares."""
        seq = self._seq(revision)
        if seq is None:
            return [], 0
        where = "n.last_seq IS NULL" if seq == self._newest_seq() else _HOLDS.format(seq="?")
        args: tuple[Any, ...] = () if "?" not in where else (seq, seq)
        only, site = self._only("n.site")
        where, args = where + only, (*args, *site)
        cols = ", ".join("n." + c for c in _PLAN_COLUMNS.split(", "))
        rows = self._rows(f"SELECT {cols} FROM node_plans n WHERE {where} ORDER BY n.node LIMIT ? OFFSET ?",  # noqa: S608
                          (*args, limit, offset))
        total = self._rows(f"SELECT count(*) FROM node_plans n WHERE {where}", args)[0][0]  # noqa: S608
        return [_plan_target(r) for r in rows], int(total)

    def _seq(self, revision: str) -> int | None:
        rows = self._rows("SELECT rowid FROM revisions WHERE revision = ?", (revision,))
        return int(rows[0][0]) if rows else None

    def _newest_seq(self) -> int | None:
        rows = self._rows("SELECT max(rowid) FROM revisions")
        return None if rows[0][0] is None else int(rows[0][0])

    def runs(self, revisions: Iterable[str]) -> list[outcomes.PlanSpan]:
        """The runs of every node declared by any of `revisions` that hold one of them."""
        seqs = self.seqs(revisions)
        if not seqs:
            return []
        low, high = min(seqs.values()), max(seqs.values())
        only, site = self._only("n.site")
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM node_plans n JOIN revisions f ON f.rowid = n.first_seq "  # noqa: S608
                          f"WHERE n.first_seq <= ? AND (n.last_seq IS NULL OR n.last_seq >= ?){only}",
                          (high, low, *site))
        return [_span(r) for r in rows]

    def seqs(self, revisions: Iterable[str]) -> dict[str, int]:
        """Each applied revision's place in the order of application (revisions.rowid)."""
        out: dict[str, int] = {}
        for chunk in _chunks(list(revisions)):
            rows = self._rows(f"SELECT revision, rowid FROM revisions WHERE revision IN ({_marks(chunk)})",  # noqa: S608
                              chunk)
            out.update((r[0], int(r[1])) for r in rows)
        return out

    def events_with_plans(
        self, macs: Iterable[str] | None, boots_only: bool = False
    ) -> tuple[list[BootEvent], dict[tuple[str, str], str]]:
        """The machines' events at every revision (None: every machine's), in time order, and the
        plan digest each (revision, mac) they name served that machine (where recorded).
        `boots_only`: without DHCP events (they decide no outcome)."""
        sql = (f"SELECT {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))}, n.plan "  # noqa: S608
               "FROM boot_events e LEFT JOIN revisions v ON v.revision = e.revision "
               f"LEFT JOIN node_plans n ON n.mac = e.mac AND {_HOLDS.format(seq='v.rowid')} ")
        if boots_only:
            sql += "AND e.stage NOT LIKE 'dhcp-%' "
        rows: list[Any] = []
        if macs is None:
            only, site = self._only("e.site")
            where = "WHERE e.mac IS NOT NULL" + (" AND e.stage NOT LIKE 'dhcp-%'" if boots_only else "") + only
            rows = self._rows(sql + where + " ORDER BY e.time, e.id", site)
        else:
            extra = " AND e.stage NOT LIKE 'dhcp-%'" if boots_only else ""
            for chunk in _chunks(sorted(set(macs))):
                rows += self._rows(sql + f"WHERE e.mac IN ({_marks(chunk)}){extra} ORDER BY e.time, e.id", chunk)
            rows.sort(key=lambda r: r[0])
        plans = {(r[2], r[3]): r[7] for r in rows if r[7]}
        return [_event(r) for r in rows], plans

    def revision_like(self, prefix: str) -> list[str]:
        """Full revisions starting with `prefix` (applied ones, then any seen in events)."""
        like = prefix.replace("%", "").replace("_", "") + "%"
        found = [r[0] for r in self._rows("SELECT revision FROM revisions WHERE revision LIKE ?", (like,))]
        if not found:
            found = [r[0] for r in self._rows(
                "SELECT DISTINCT revision FROM boot_events WHERE revision LIKE ? LIMIT 10", (like,))]
        return found

    def targets(self, revisions: Iterable[str]) -> dict[str, list[outcomes.Target]]:
        """The nodes each revision declares."""
        revs = list(revisions)
        out: dict[str, list[outcomes.Target]] = {r: [] for r in revs}
        only, site = self._only("n.site")
        for revision, seq in self.seqs(revs).items():
            cols = ", ".join("n." + c for c in _PLAN_COLUMNS.split(", "))
            sql = f"SELECT {cols} FROM node_plans n WHERE {_HOLDS.format(seq='?')}{only} ORDER BY n.node"  # noqa: S608
            out[revision] = [_plan_target(r) for r in self._rows(sql, (seq, seq, *site))]
        return out

    def events_of(self, revisions: Iterable[str]) -> list[BootEvent]:
        """Every boot event stamped with one of `revisions`, in time order."""
        out: list[BootEvent] = []
        only, site = self._only("site")
        for chunk in _chunks(list(revisions)):
            sql = f"SELECT {_EVENT_COLUMNS} FROM boot_events WHERE revision IN ({_marks(chunk)}){only}"  # noqa: S608
            out += [_event(r) for r in self._rows(sql + " ORDER BY time, id", (*chunk, *site))]
        return out

    def stranger_events(self, revisions: Iterable[str]) -> list[BootEvent]:
        """Events stamped with one of `revisions` from machines that revision does not declare, in time order."""
        out: list[BootEvent] = []
        only, site = self._only("e.site")
        for chunk in _chunks(list(revisions)):
            rows = self._rows(_STRANGERS.format(marks=_marks(chunk), only=only), (*chunk, *site))
            out += [_event(r) for r in rows]
        out.sort(key=lambda e: e.time)
        return out

    def events_of_node(self, mac: str, node: str | None = None, limit: int = 5000) -> list[BootEvent]:
        """A machine's events (by MAC, or by node name where the MAC was not known), oldest first."""
        inner = ("SELECT * FROM boot_events WHERE mac = ? OR (mac IS NULL AND node = ?) "
                 "ORDER BY time DESC, id DESC LIMIT ?")
        sql = f"SELECT {_EVENT_COLUMNS} FROM ({inner}) AS recent ORDER BY time, id"  # noqa: S608
        rows = self._rows(sql, (mac, node or "", limit))
        return [_event(r) for r in rows]

    def events_since(self, since: float) -> list[BootEvent]:
        return [_event(r) for r in self._rows(
            f"SELECT {_EVENT_COLUMNS} FROM boot_events WHERE time >= ? ORDER BY time, id", (since,))]  # noqa: S608

    def node_revisions(self, node: str) -> list[outcomes.PlanSpan]:
        """The runs of applied revisions declaring `node` the same way, newest first."""
        rows = self._rows(f"SELECT {_RUN_COLUMNS}, l.revision, "  # noqa: S608
                          "(SELECT count(*) FROM revisions c WHERE c.rowid BETWEEN n.first_seq "
                          " AND coalesce(n.last_seq, (SELECT max(rowid) FROM revisions))) "
                          "FROM node_plans n JOIN revisions f ON f.rowid = n.first_seq "
                          "LEFT JOIN revisions l ON l.rowid = coalesce(n.last_seq, (SELECT max(rowid) FROM revisions)) "
                          "WHERE n.node = ? ORDER BY n.first_seq DESC", (node,))
        return [_span(r) for r in rows]

    def last_serving_revision(self, mac: str) -> str | None:
        """The revision that last served this machine an install step (script, kernel, seed), if any.

        Refused requests (status 4xx), failed TFTP transfers and local-disk scripts served no
        install step (`outcomes.delivered`)."""
        stages = sorted(outcomes.SERVING_STAGES)
        sql = f"SELECT {_EVENT_COLUMNS} FROM boot_events WHERE mac = ? AND stage IN ({_marks(stages)})"  # noqa: S608
        rows = self._rows(sql + " AND revision != '' ORDER BY time DESC, id DESC LIMIT 20", (mac, *stages))
        for row in rows:
            event = _event(row)
            if outcomes.delivered(event) and not outcomes.is_local_disk(event):
                return event.revision
        return None

    def installs(self) -> list[tuple[str, str, int, str, float]]:
        """(node, mac, reinstall, revision, time) of every reported successful install."""
        return [(r[0], r[1], int(r[2]), r[3], float(r[4])) for r in self._rows(
            "SELECT node, mac, reinstall, revision, time FROM installs ORDER BY time")]

    def boot_events(self, revision: str | None = None, mac: str | None = None, limit: int = 1000) -> list[BootEvent]:
        where, args = [], []
        if revision is not None:
            where.append("revision = ?")
            args.append(revision)
        if mac is not None:
            where.append("mac = ?")
            args.append(mac)
        sql = f"SELECT {_EVENT_COLUMNS} FROM boot_events"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ?"
        return [_event(r) for r in self._rows(sql, (*args, limit))]

    def mac_versions(self, after: int = 0) -> dict[str, int]:
        """Each machine's newest event id (of those with an id over `after`): it changes when the
        machine's events do."""
        return {r[0]: int(r[1]) for r in self._rows(
            "SELECT mac, max(id) FROM boot_events WHERE id > ? AND mac IS NOT NULL GROUP BY mac", (after,))}

    def change_stamp(self) -> tuple[int, int, int]:
        """Changes whenever an event, a reconcile or an applied revision is written (live refresh)."""
        row = self._rows("SELECT (SELECT coalesce(max(id), 0) FROM boot_events), "
                         "(SELECT coalesce(max(id), 0) FROM reconciles), (SELECT count(*) FROM revisions)")[0]
        return int(row[0]), int(row[1]), int(row[2])

    def unknown_machines(self, since: float, serving: str | None, limit: int = 100
                         ) -> list[tuple[str, float, int, str, str]]:
        """Machines no node of `serving` declares that the servers heard from since `since`:
        (mac, last time, events, vendor class, last stage), the latest first."""
        only, site = self._only("e.site")
        sql = _UNKNOWN.format(vendor_class=self._db.json_field("detail", "vendor_class"), only=only)
        rows = self._rows(sql, (since, *site, serving or "", limit))
        return [(r[0], float(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]

    def instances(self) -> list[InstanceRecord]:
        """Every instance that wrote to this store, by name."""
        return [InstanceRecord(r[0], r[1], None if r[2] is None else float(r[2]), float(r[3]), r[4])
                for r in self._rows("SELECT name, revision, since, seen, site FROM instances ORDER BY name")]

    def sites(self) -> list[str]:
        """Every site that applied a revision to this store ('' for an instance without --site)."""
        return [r[0] for r in self._rows("SELECT DISTINCT site FROM revision_sites ORDER BY site")]

    def for_site(self, site: str | None) -> ResultsQueries:
        """These queries restricted to one site's nodes, events and applied revisions (`results
        --site`, `/ui/?site=`); None: every site (a store several sites share shows them all)."""
        return self if site is None else _SiteQueries(self, site)

    def rollouts(self, limit: int = 20, site: str | None = None) -> list[rollout.Rollout]:
        """Rollouts, newest first (the first is the current one, unless superseded or finished): of
        `site` ('' without sites), else of this view's site (`for_site`), else of every site."""
        where, args = (" AND site = ?", (site,)) if site is not None else self._only("site")
        return [rollout.Rollout.from_dict(json.loads(r[0])) for r in self._rows(
            f"SELECT doc FROM rollouts WHERE 1 = 1{where} ORDER BY created DESC, revision LIMIT ?",  # noqa: S608
            (*args, limit))]

    def recent_reconciles(self, limit: int = 20) -> list[ReconcileRecord]:
        rows = self._rows(
            "SELECT id, revision, trigger, result, reason, findings, started, duration, instance "
            "FROM reconciles ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [_reconcile(r) for r in rows]

    def last_reconcile_of(self, revision: str) -> ReconcileRecord | None:
        rows = self._rows(
            "SELECT id, revision, trigger, result, reason, findings, started, duration, instance "
            "FROM reconciles WHERE revision = ? ORDER BY id DESC LIMIT 1",
            (revision,),
        )
        return _reconcile(rows[0]) if rows else None


def _reconcile(r: Sequence[Any]) -> ReconcileRecord:
    return ReconcileRecord(
        revision=r[1], trigger=r[2], result=r[3], reason=r[4], findings=tuple(json.loads(r[5])),
        started=r[6], duration=r[7], id=r[0], instance=r[8],
    )


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ResultsReader(ResultsQueries):
    """The store opened for reading only (no writer thread): `netboot-reconcile results`."""

    def __init__(self, store: Path | str) -> None:
        """`store`: a SQLite file (it must exist) or a PostgreSQL URL."""
        self.name = sqldb.describe(str(store))
        if not sqldb.is_url(str(store)) and not Path(store).is_file():
            raise FileNotFoundError(f"{self.name}: no results store (has the daemon run with this --state-dir?)")
        self._db = open_database(store)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _SiteQueries(ResultsQueries):
    """One site's view of a store's queries: the same connection and lock (`for_site`)."""

    def __init__(self, base: ResultsQueries, site: str) -> None:
        self._db, self._lock, self._site = base._db, base._lock, site


# Rows (time, stage, revision, mac, node, client, detail JSON) -> boot_events, in order (ids follow it).
_INSERT_EVENTS = ("INSERT INTO boot_events (time, stage, revision, mac, node, client, detail, instance, site) "
                  "VALUES {values}")


class StoreBehind(RuntimeError):
    """The writer has not caught up with the events queued so far."""


class ResultsStore(ResultsQueries):
    """Reconcile history (synchronous, rare) and boot events (batched, frequent)."""

    def __init__(
        self,
        store: Path | str,
        *,
        instance: str = "",
        site: str = "",
        flush_interval: float = 0.1,
        batch_size: int = 8192,
        max_queue: int = 100_000,
    ) -> None:
        """`store`: a SQLite path (":memory:" too) or a PostgreSQL URL; `instance` stamps every
        event and reconcile this store records (`--instance`; on PostgreSQL no other live store
        may have it: `pginstance.InstanceNameTaken`); `site` every event, applied revision and
        node plan (`--site`)."""
        self.name = sqldb.describe(str(store))
        self.instance = instance
        self.site = site
        self._db = open_database(store)
        self._claim: InstanceClaim | None = None
        if self._db.dialect == "postgresql" and instance:  # one live instance per name (adapters.pginstance)
            from reconciler.adapters.pginstance import InstanceClaim  # psycopg: not for a store on SQLite

            try:
                self._claim = InstanceClaim(str(store), instance)
            except BaseException:
                self._db.close()
                raise
        self._lock = threading.Lock()  # one statement at a time on the shared connection
        self.problem: str | None = None  # why the store cannot be written now (unreachable)
        self.unreachable = 0  # times the store was found unreachable (metrics)
        self._deferred: collections.deque[Callable[[], None]] = collections.deque(maxlen=DEFERRED_MAX)
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_queue = max_queue
        # Boot events, and flush() markers: a marker is set once every event queued before it is written.
        self._queue: collections.deque[EventRow | threading.Event] = collections.deque(maxlen=max_queue)
        self._wake = threading.Event()
        self._awake = True  # the writer is draining or about to: recording need not wake it
        self._closing = threading.Event()
        self.dropped = 0
        # This site's open runs of node_plans as this store last wrote or read them (node -> rowid,
        # target), under the stamp they had then (`_write_revision`).
        self._runs: tuple[int, dict[str, tuple[int, outcomes.Target]]] | None = None
        installs = self.installs()
        self._installed = {(n, m, r) for n, m, r, _, _ in installs}
        # Shared (PostgreSQL): installs other instances recorded are read every INSTALLS_REFRESH s.
        self._installs_seen = max((t for *_, t in installs), default=0.0)
        self._installs_read = time.monotonic()
        self._writer = threading.Thread(target=self._write_loop, name="results-writer", daemon=True)
        self._writer.start()

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        self._unless_unreachable()
        return super()._rows(sql, args)

    def _unless_unreachable(self) -> None:
        """Raise StoreUnreachable at once while the writer finds the store unreachable (the writer
        itself goes on trying: it is what notices the store is back)."""
        problem = self.problem
        if problem is not None and threading.current_thread() is not self._writer:
            raise StoreUnreachable(problem)

    # -- EventSink -------------------------------------------------------------------------

    def record(self, event: BootEvent) -> None:
        """Queue one boot event; never blocks on the disk (see `record_rows`)."""
        self.record_rows((row_of(event),))

    def record_rows(self, rows: Sequence[EventRow]) -> None:
        """Queue boot events, in order; never blocks on the disk.

        O(len(rows)) appends on the caller's thread: the rows' JSON is made on the writer
        thread, and the writer is woken (Event.set) only when a batch is waiting and it is
        asleep. The queue holds plain tuples, not events: a tuple of plain values (and a
        detail dict of plain values) leaves the garbage collector's lists at its first pass,
        while thousands of queued dataclass instances were traversed by every collection, in
        whichever thread triggered it, holding the GIL (under the DHCP bench, collections of
        10-25 ms in a background thread while the DHCP thread waited for the GIL)."""
        queue = self._queue
        overflow = len(queue) + len(rows) - self._max_queue
        if overflow > 0:
            self.dropped += overflow  # the bounded deque lets the oldest go
        queue.extend(rows)
        if not self._awake and len(queue) >= self._batch_size:
            self._awake = True
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event queued before this call is written; False on timeout."""
        written = threading.Event()
        if len(self._queue) == self._max_queue:
            self.dropped += 1
        self._queue.append(written)
        self._awake = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while not written.wait(min(max(deadline - time.monotonic(), 0.0), 0.5)):
            if not self._writer.is_alive():
                return True
            if time.monotonic() >= deadline:
                return False
        return True

    def _write_loop(self) -> None:
        yield_to_packet_threads()
        queue = self._queue
        while True:
            if self.problem is not None and not self._closing.is_set():
                self._wake.wait(RETRY_SECONDS)  # unreachable: try again in a while (or at a flush)
            elif len(queue) < self._batch_size and not self._closing.is_set():
                self._awake = False
                # A record_rows() that saw _awake still True appended before this check: it is seen here.
                if len(queue) < self._batch_size:
                    self._wake.wait(self._flush_interval)
                self._awake = True
            self._wake.clear()
            if self._deferred and not self._write_deferred():
                if self._closing.is_set():
                    return
                continue
            items: list[EventRow | threading.Event] = []
            while queue:
                items.append(queue.popleft())
            batch = [item for item in items if not isinstance(item, threading.Event)]
            if batch:
                try:
                    self._insert_events(batch)
                except StoreUnreachable as exc:
                    self._unreachable(exc)
                    self._requeue(items)
                    if self._closing.is_set():
                        return
                    continue
                except sqldb.db_errors():
                    log.exception("boot events lost: %d", len(batch))
                else:
                    self._reachable()
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if self._closing.is_set() and not queue:
                return
            if self._db.dialect == "postgresql" and time.monotonic() - self._installs_read >= INSTALLS_REFRESH:
                self._read_installs()

    def _read_installs(self) -> None:
        """Installs other instances sharing the store recorded: is_installed answers for them too."""
        self._installs_read = time.monotonic()
        try:
            rows = self._rows("SELECT node, mac, reinstall, time FROM installs WHERE time >= ?",
                              (self._installs_seen - INSTALLS_SKEW,))
        except StoreUnreachable as exc:
            self._unreachable(exc)
            return
        except sqldb.db_errors():
            log.exception("installs recorded by other instances not read")
            return
        if not self._deferred:
            self._reachable()  # the probe while nothing else is written
        for node, mac, reinstall, when in rows:
            self._installed.add((node, mac, int(reinstall)))
            self._installs_seen = max(self._installs_seen, float(when))

    def _requeue(self, items: list[EventRow | threading.Event]) -> None:
        """Put back what could not be written, before what was queued since; what no longer
        fits is the oldest: dropped and counted."""
        queue = self._queue
        room = self._max_queue - len(queue)
        if room < len(items):
            self.dropped += len(items) - room
            items = items[len(items) - room:] if room > 0 else []
        queue.extendleft(reversed(items))

    def _unreachable(self, exc: StoreUnreachable) -> None:
        if self.problem is None:
            self.unreachable += 1
            log.error("results store unreachable (%s): serving from memory, events queued (at most %d), "
                      "retrying every %.0fs", exc, self._max_queue, RETRY_SECONDS)
        self.problem = f"results store {self.name} unreachable: {exc}"

    def _reachable(self) -> None:
        if self.problem is not None:
            log.warning("results store %s reachable again: %d queued events, %d deferred records being written",
                        self.name, len(self._queue), len(self._deferred))
            self.problem = None

    def _write_deferred(self) -> bool:
        """Write the records kept while the store was unreachable, oldest first; False: still unreachable."""
        while self._deferred:
            write = self._deferred[0]
            try:
                write()
            except StoreUnreachable as exc:
                self._unreachable(exc)
                return False
            except sqldb.db_errors():
                log.exception("a deferred record could not be written")
            self._deferred.popleft()
        self._reachable()
        return True

    def _now_or_later(self, write: Callable[[], None]) -> None:
        """Run `write` now; while the store is unreachable (or others wait), keep it for the writer."""
        if not self._deferred:
            try:
                write()
                self._reachable()
                return
            except StoreUnreachable as exc:
                self._unreachable(exc)
        if len(self._deferred) == self._deferred.maxlen:
            self.dropped += 1
        self._deferred.append(write)
        self._wake.set()

    def _insert_events(self, batch: Sequence[EventRow]) -> None:
        """The batch in one transaction, a statement per chunk of rows (see `adapters.sqlrows`)."""
        json_text = sqlrows.json_text
        instance, site = self.instance, self.site
        rows = [(*e[:6], json_text(dict(e[6])), instance, site) for e in batch]
        statements = list(sqlrows.chunks(_INSERT_EVENTS, rows))  # before taking the lock readers wait on
        with self._lock, self._db.transaction():
            for sql, params in statements:
                self._db.execute(sql, params)

    # -- reconciles --------------------------------------------------------------------------

    def record_reconcile(self, record: ReconcileRecord) -> None:
        """Write a reconcile attempt (kept and written later while the store is unreachable)."""
        self._now_or_later(lambda: self._write_reconcile(record))

    def _write_reconcile(self, record: ReconcileRecord) -> None:
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO reconciles (revision, trigger, result, reason, findings, started, duration, instance) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (record.revision, record.trigger, record.result, record.reason, json.dumps(list(record.findings)),
                 record.started, record.duration, self.instance),
            )
            if record.revision and (record.subject or record.author or record.committed is not None):
                self._db.execute(
                    "INSERT INTO commits (revision, subject, author, committed) VALUES (?,?,?,?) "
                    "ON CONFLICT (revision) DO UPDATE SET subject = excluded.subject, author = excluded.author, "
                    "committed = excluded.committed",
                    (record.revision, record.subject, record.author, record.committed))

    # -- instances ---------------------------------------------------------------------------

    def record_serving(self, revision: str | None, now: float) -> None:
        """This instance serves `revision` (None: nothing yet) as of `now` (/status lists every
        instance of the store with what it serves)."""
        self._now_or_later(lambda: self._write_serving(revision, now))

    def _write_serving(self, revision: str | None, now: float) -> None:
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO instances (name, revision, since, seen, site) VALUES (?,?,?,?,?) "
                "ON CONFLICT (name) DO UPDATE SET seen = excluded.seen, revision = excluded.revision, "
                "site = excluded.site, "
                "since = CASE WHEN instances.revision IS NOT DISTINCT FROM excluded.revision THEN instances.since "
                "ELSE excluded.since END",
                (self.instance, revision, now, now, self.site))

    def save_rollout(self, value: rollout.Rollout) -> None:
        """Write a rollout's current state (one row per rollout, by this store's site and the
        revision; kept and written later while the store is unreachable, like a reconcile record)."""
        doc = json.dumps(value.as_dict())
        self._now_or_later(lambda: self._write_rollout(value, doc))

    def _write_rollout(self, value: rollout.Rollout, doc: str) -> None:
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO rollouts (site, revision, created, updated, doc) VALUES (?,?,?,?,?) "
                "ON CONFLICT (site, revision) DO UPDATE SET updated = excluded.updated, doc = excluded.doc",
                (self.site, value.revision, value.created, value.updated, doc))

    # -- boot results ------------------------------------------------------------------------

    def record_revision(self, revision: str, applied: float, targets: Sequence[outcomes.Target]) -> None:
        """Remember what an applied revision targets (first application wins; idempotent): the runs
        of the nodes it declares as the previous one did stay open, the others are closed or begun.
        Kept and written later while the store is unreachable. The open runs are compared as this
        store last wrote them while the site's count of applied revisions says no one wrote since,
        so a one-node commit touches its node's rows (10,000 nodes: 30 -> 2 ms of CPU); else read."""
        self._now_or_later(lambda: self._write_revision(revision, applied, targets))

    def _write_revision(self, revision: str, applied: float, targets: Sequence[outcomes.Target]) -> None:
        db = self._db
        site = self.site
        with self._lock, db.transaction(writer=True):
            known, self._runs = self._runs, None  # forgotten unless this transaction commits
            if db.rows("SELECT 1 FROM revision_sites WHERE revision = ? AND site = ?", (revision, site)):
                self._runs = known  # nothing written: the count says whether they still hold
                return
            # A revision another site applied first keeps its place (seq); runs close at this
            # site's previous revision, and only this site's runs are this site's to close.
            found = db.rows("SELECT rowid FROM revisions WHERE revision = ?", (revision,))
            seq = int(found[0][0]) if found else int(db.rows(
                "INSERT INTO revisions (revision, applied) VALUES (?, ?) RETURNING rowid", (revision, applied))[0][0])
            previous = db.rows("SELECT max(v.rowid) FROM revisions v JOIN revision_sites s ON s.revision = v.revision "
                               "WHERE s.site = ? AND v.rowid < ?", (site, seq))[0][0]
            # Every write of a site's runs, by any instance and any version of this program,
            # records one revision of the site first: while their count is what this store left,
            # no one else wrote them. (A stamp only this version set missed a write by an instance
            # still running the version before, in a rolling upgrade: found by review.)
            recorded = int(db.rows("SELECT count(*) FROM revision_sites WHERE site = ?", (site,))[0][0])
            db.execute("INSERT INTO revision_sites (revision, site) VALUES (?, ?)", (revision, site))
            stamp = recorded + 1
            # The open runs as this store left them, unless another instance of the site sharing
            # the store wrote since: then read (every open run of the site).
            exact = True  # the table's open runs are `runs`, one per node
            if known is not None and known[0] == recorded:
                runs = known[1]
            else:
                rows = db.rows(f"SELECT {_PLAN_COLUMNS}, rowid FROM node_plans "  # noqa: S608
                               "WHERE last_seq IS NULL AND site = ? ORDER BY rowid", (site,))
                runs = {r[0]: (int(r[6]), _plan_target(r)) for r in rows}
                exact = len(runs) == len(rows)
            close: list[int] = []
            begin: list[outcomes.Target] = []
            matched = 0
            get = runs.get
            for t in targets:
                run = get(t.node)
                if run is not None:
                    matched += 1
                    # Declared as before (the targets memo hands back the same Target): its run goes on.
                    if (run[1] is t or run[1] == t) and t.plan:
                        continue
                    close.append(run[0])
                begin.append(t)
            if matched < len(runs):  # some node is no longer declared
                declared = {t.node for t in targets}
                gone = [node for node in runs if node not in declared]
                close += [runs[node][0] for node in gone]
            else:
                gone = []
            if close or begin:
                for chunk in _chunks([str(c) for c in close]):
                    db.execute(f"UPDATE node_plans SET last_seq = ? WHERE rowid IN ({_marks(chunk)})",  # noqa: S608
                               (previous, *[int(c) for c in chunk]))
                for node in gone:
                    del runs[node]
                self._begin_runs(begin, seq, runs)
        # Kept unless the table holds open runs `runs` does not: a node with two (the newest is
        # the one compared, as every write has done) or a run closed at no previous revision of
        # this site (its first one is a commit another site applied earlier: last_seq stays NULL).
        # Those are read at every write, as before.
        self._runs = (stamp, runs) if exact and (previous is not None or not close) else None

    def _begin_runs(self, begin: Sequence[outcomes.Target], seq: int,
                    runs: dict[str, tuple[int, outcomes.Target]]) -> None:
        """Insert a run for each of `begin` at `seq` (in the writer's transaction); `runs` gets
        their rowids. SQLite: each gets the rowid SQLite would give it (the largest one plus one,
        in order), written out, since RETURNING them made a statement step per row, each letting
        go of the GIL, which the thread writing the generation just served took every time (the
        first commit at 100,000 nodes: after.record 0.85 s, most of it waiting for the GIL)."""
        db, site = self._db, self.site
        rows: list[tuple[Any, ...]]
        if db.dialect == "sqlite":
            after = int(db.rows("SELECT coalesce(max(rowid), 0) FROM node_plans")[0][0])
            rows = [(after + i, t.node, t.mac, t.profile, int(t.install_once), t.reinstall, t.plan, seq, site)
                    for i, t in enumerate(begin, 1)]
            for sql, params in sqlrows.chunks(f"INSERT INTO node_plans (rowid, {_PLAN_COLUMNS}, first_seq, site) "  # noqa: S608
                                              "VALUES {values}", rows, PLAN_ROWS):
                db.execute(sql, params)
            runs.update((t.node, (after + i, t)) for i, t in enumerate(begin, 1))
            return
        by_node = {t.node: t for t in begin}
        rows = [(t.node, t.mac, t.profile, int(t.install_once), t.reinstall, t.plan, seq, site) for t in begin]
        for sql, params in sqlrows.chunks(f"INSERT INTO node_plans ({_PLAN_COLUMNS}, first_seq, site) "  # noqa: S608
                                          "VALUES {values} RETURNING rowid, node", rows, PLAN_ROWS):
            for rowid, node in db.rows(sql, params):
                runs[node] = (int(rowid), by_node[node])

    def record_durable(self, event: BootEvent, install: tuple[str, str, int] | None = None) -> None:
        """Write one event (and the install it proves) NOW, durably, before the caller answers.

        For reports a machine waits on: once this returns, the event survives `kill -9` (WAL,
        committed) and a power loss (synchronous=FULL for this transaction; PostgreSQL's commit).
        Raises StoreUnreachable while PostgreSQL is (the report is answered 503 and sent again),
        at once while the writer finds it so.
        """
        row = (event.time, event.stage, event.revision, event.mac, event.node, event.client,
               sqlrows.json_text(dict(event.detail)), self.instance, self.site)
        self._unless_unreachable()
        try:
            with self._lock, self._db.transaction(writer=True, durable=True):
                self._db.execute(_INSERT_EVENTS.format(values=sqlrows.values_list(len(row), 1)), row)
                if install is not None:
                    self._db.execute(
                        "INSERT INTO installs (node, mac, reinstall, revision, time) VALUES (?,?,?,?,?) "
                        "ON CONFLICT (node, mac, reinstall) DO UPDATE SET revision = excluded.revision, "
                        "time = excluded.time",
                        (*install, event.revision, event.time),
                    )
        except StoreUnreachable as exc:
            self._unreachable(exc)
            raise
        if install is not None:
            self._installed.add(install)

    def is_installed(self, node: str, mac: str, reinstall: int) -> bool:
        """Whether a successful install of `node` (this MAC, this reinstall counter) was reported.

        In memory: called on the /ipxe and /grub request path."""
        return (node, mac, reinstall) in self._installed

    def unfinished_revisions(
        self, now: float | None = None, timeout: float = outcomes.DEFAULT_BOOT_TIMEOUT
    ) -> set[str]:
        """Revisions a machine is still booting or installing (their generations are kept).

        Raises StoreBehind when the events queued so far are not written within 2 s: an answer
        from the rows on disk could miss the install that started a moment ago."""
        now = time.time() if now is None else now
        if not self.flush(2.0):
            raise StoreBehind("boot events queued before this call are not written yet")
        return outcomes.unfinished_revisions(self.events_since(now - timeout), now=now, timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._closing.set()
        self._wake.set()
        self._writer.join(timeout)
        # Bounded: a writer stuck in a transaction (an unanswering PostgreSQL) must not keep a
        # stopping daemon from exiting; its connection goes with the process.
        if not self._lock.acquire(timeout=timeout):
            log.warning("results store: the writer is still in a transaction %.0f s after the stop: not waiting "
                        "for it", timeout)
            return
        try:
            self._db.close()
        finally:
            self._lock.release()
        if self._claim is not None:
            self._claim.close()
