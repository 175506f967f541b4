"""Pool leases in PostgreSQL, shared by the instances that serve one segment (`--store URL`).

Used by `commands.run` in place of `adapters.leases.LeaseStore` when `--store` names PostgreSQL.
The memory maps and the packet path are the base class's; what differs:

- Every offer and bind is a claim, committed before the server answers (group commit, as for
  SQLite binds). A batch runs in one transaction under a transaction-scoped advisory lock, so
  the claims of all instances are serialised: a claim on an address another MAC holds (unexpired),
  or for a MAC that already holds another address in that subnet, is refused, the server stays
  silent (the client's retransmission is answered from the corrected memory), and the rows that
  refused it are applied to memory. Hence an address is never leased to two MACs, and a MAC is
  offered the address the store gives it whichever instance answers.
- Each commit sends `NOTIFY netboot_leases` with the rows it changed (delivered in commit
  order); a listener thread queues them and `sync()` (the server calls it under its lock before each decision)
  applies them, so an instance learns the other's leases at once: a client whose server died
  rebinds to the survivor and is acknowledged.
- Offers expired more than `leases.OFFER_KEEP` ago are deleted at start and with the next commit
  every `sweep_every` s (memory forgets them the same way in each instance: no NOTIFY).
- PostgreSQL unreachable: renewals of leases memory holds (and offers of them) are answered from
  memory and written once it is back; new addresses are not handed out (no instance can make
  them safe); `problem` says why (/status Degraded, StoreUnreachable).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from ipaddress import IPv4Address

from reconciler.adapters import sqldb
from reconciler.adapters.leases import OFFER_KEEP, SWEEP_EVERY, LeaseStore, _Write
from reconciler.adapters.sqldb import PostgresDb, StoreUnreachable
from reconciler.protocol.dhcp_decide import Lease, LeaseChange

log = logging.getLogger(__name__)

CHANNEL = "netboot_leases"
LEASE_LOCK = 0x6E62_6C65_6173_65  # the advisory lock of lease claims ("nblease")
RETRY_SECONDS = 1.0
RETRY_MAX = 10_000  # renewals kept for writing while PostgreSQL is unreachable
NOTIFY_ROWS = 100  # rows per NOTIFY payload (~60 bytes each: under PostgreSQL's 8000)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dhcp_leases (
    ip TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    instance TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases (mac)
"""

_DELETE_STALE_OFFERS = "DELETE FROM dhcp_leases WHERE state = 'offered' AND expires < ?"

_Row = tuple[str, float, str]  # mac, expires, state


class PgLeaseStore(LeaseStore):
    """See the module docstring."""

    claims_offers = True

    def __init__(self, url: str, *, instance: str = "", sweep_every: float = SWEEP_EVERY) -> None:
        self.instance = instance
        self.refused = 0  # claims refused because another MAC or address won (tests, the bench)
        self._remote: collections.deque[tuple[IPv4Address, Lease | None]] = collections.deque()
        self._listening = threading.Event()
        self._stop_listening = threading.Event()
        self._retry: list[_Write] = []  # renewals answered while unreachable, written again after RETRY_SECONDS
        self._next_try = 0.0  # while unreachable: batches before this fail at once, answered from memory
        self._next_db_sweep = 0.0  # the first commit deletes the offers long expired (and `_open`)
        super().__init__(url, sweep_every=sweep_every)
        self._listener = threading.Thread(target=self._listen_loop, name="dhcp-leases-listen", daemon=True)
        self._listener.start()
        self._listening.wait(5.0)

    # -- persistence ---------------------------------------------------------------------------

    def _open(self) -> list[Lease]:
        self._db = PostgresDb(self.path)
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(?)", (LEASE_LOCK,))
            for statement in _SCHEMA.split(";"):
                self._db.execute(statement)
            self._db.execute(_DELETE_STALE_OFFERS, (time.time() - OFFER_KEEP,))
        return [_lease(r) for r in self._db.rows("SELECT ip, mac, expires, state FROM dhcp_leases")]

    def _close_db(self) -> None:
        self._stop_listening.set()
        self._db.close()

    def _commit(self, batch: list[_Write]) -> None:
        if self.problem is not None and time.monotonic() < self._next_try:
            raise StoreUnreachable(self.problem)  # tried a moment ago: answer from memory now, not after a timeout
        now = time.time()
        ips = {str(c.ip) for c, _, _, _ in batch}
        macs = {c.mac for c, _, _, _ in batch}
        refused: list[int] = []
        db = self._db
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?)", (LEASE_LOCK,))
            rows: dict[str, _Row | None] = {
                r[0]: (r[1], float(r[2]), r[3]) for r in db.rows(
                    "SELECT ip, mac, expires, state FROM dhcp_leases WHERE ip = ANY(?) OR mac = ANY(?)",
                    (sorted(ips), sorted(macs)))}
            if time.monotonic() >= self._next_db_sweep:
                self._next_db_sweep = time.monotonic() + self._sweep_every
                db.execute(_DELETE_STALE_OFFERS, (now - OFFER_KEEP,))
                rows = {ip: row for ip, row in rows.items()
                        if row is None or row[2] != "offered" or row[1] >= now - OFFER_KEEP}
            before = dict(rows)
            for index, (change, _, _, _) in enumerate(batch):
                if not _claim(rows, change, now):
                    refused.append(index)
            changed = [ip for ip in rows if rows[ip] != before.get(ip)]
            gone = [ip for ip in changed if rows[ip] is None and before.get(ip) is not None]
            kept = [(ip, *row, self.instance) for ip in changed if (row := rows[ip]) is not None]
            if gone:
                db.execute("DELETE FROM dhcp_leases WHERE ip = ANY(?)", (gone,))
            db.executemany("INSERT INTO dhcp_leases (ip, mac, expires, state, instance) VALUES (?,?,?,?,?) "
                           "ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, expires = excluded.expires, "
                           "state = excluded.state, instance = excluded.instance", kept)
            notes = [_note(ip, rows[ip]) for ip in changed]
            for start in range(0, len(notes), NOTIFY_ROWS):
                payload = self.instance + "|" + ",".join(notes[start:start + NOTIFY_ROWS])
                db.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))
        self.commits += 1
        if self.problem is not None:
            log.warning("lease store %s reachable again", db.name)
            self.problem = None
        if refused:
            self.refused += len(refused)
            # The store's word wins: memory takes its rows for the refused claims' addresses and MACs.
            touched = {str(batch[i][0].ip) for i in refused}
            losers = {batch[i][0].mac for i in refused}
            touched |= {ip for ip, row in rows.items() if row is not None and row[0] in losers}
            self._remote.extend((IPv4Address(ip), _lease((ip, *row)) if (row := rows.get(ip)) else None)
                                for ip in touched)
            for i in sorted(refused, reverse=True):
                change, _, displaced, renewal = batch[i]
                batch[i] = (change, None, displaced, renewal)  # no answer

    def _failed(self, batch: list[_Write], exc: Exception) -> list[_Write]:
        if not isinstance(exc, StoreUnreachable):
            return super()._failed(batch, exc)
        if self.problem is None:
            log.error("lease store unreachable (%s): renewals answered from memory, new leases refused", exc)
        self.problem = f"lease store {self._db.name} unreachable: {exc}"
        self._next_try = time.monotonic() + RETRY_SECONDS
        answered = [w for w in batch if w[3]]  # renewals (and offers) of leases memory holds
        # New claims are not answered: memory forgets them (the next sync()), as if never made.
        self._remote.extend((c.ip, None) for c, _, _, renewal in batch if not renewal and c.kind in ("offer", "bind"))
        retry = [(c, None, d, r) for c, _, d, r in answered if c.kind != "offer"]
        if retry:
            with self._cond:
                first = not self._retry
                self._retry = (self._retry + retry)[-RETRY_MAX:]
            if first:
                timer = threading.Timer(RETRY_SECONDS, self._try_again)
                timer.daemon = True
                timer.start()
        return answered

    def _try_again(self) -> None:
        """The renewals kept while unreachable go back to the writer (which may find it unreachable still)."""
        with self._cond:
            if self._closing:
                return
            self._pending[:0], self._retry = self._retry, []
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every change applied so far is committed (renewals kept while PostgreSQL
        is unreachable too); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy and not self._retry, timeout)

    # -- other instances -----------------------------------------------------------------------

    def sync(self) -> None:
        remote = self._remote
        while remote:
            ip, lease = remote.popleft()
            if lease is None:
                self._forget_ip(ip)
            else:
                self._forget_ip(ip)
                self._load(lease)
        super().sync()  # the sweep of offers long expired

    def _listen_loop(self) -> None:
        first = True
        while not self._stop_listening.is_set():
            try:
                conn = PostgresDb(self.path)
            except StoreUnreachable:
                self._stop_listening.wait(RETRY_SECONDS)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                if not first:  # notifications were missed while away: read every row again
                    self._remote.extend((IPv4Address(r[0]), _lease(r)) for r in conn.rows(
                        "SELECT ip, mac, expires, state FROM dhcp_leases"))
                first = False
                self._listening.set()
                raw = conn.connect()
                while not self._stop_listening.is_set():
                    for note in list(raw.notifies(timeout=0.5, stop_after=64)):
                        instance, _, rows = note.payload.partition("|")
                        if instance != self.instance and rows:
                            self._remote.extend(_noted(row) for row in rows.split(","))
            except sqldb.db_errors(StoreUnreachable) as exc:
                log.warning("lease notifications lost (%s): listening again", exc)
                self._stop_listening.wait(RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()


def _note(ip: str, row: _Row | None) -> str:
    """One changed row in a NOTIFY payload: `ip;mac;expires;state`, or `ip` for a row deleted."""
    return ip if row is None else f"{ip};{row[0]};{row[1]!r};{row[2]}"


def _noted(text: str) -> tuple[IPv4Address, Lease | None]:
    fields = text.split(";")
    ip = IPv4Address(fields[0])
    return (ip, None) if len(fields) == 1 else (ip, _lease(fields))


def _lease(r: tuple[object, ...] | list[str]) -> Lease:
    return Lease(IPv4Address(str(r[0])), str(r[1]), float(r[2]), r[3])  # type: ignore[arg-type]


def _claim(rows: dict[str, _Row | None], change: LeaseChange, now: float) -> bool:
    """Apply one change to `rows` (address -> row, as the store holds them) if the store allows it."""
    ip, mac = str(change.ip), change.mac
    holder = rows.get(ip)
    taken = holder is not None and holder[0] != mac and holder[1] > now
    if change.kind == "release":
        if holder is not None and holder[0] == mac:
            rows[ip] = None
        return True
    if taken:
        return False
    # The MAC's other addresses in this subnet (a lease per client and subnet).
    others = [other for other, row in rows.items()
              if row is not None and row[0] == mac and other != ip
              and (change.network is None or IPv4Address(other) in change.network)]
    if change.kind == "offer":
        if any((row := rows[o]) is not None and row[1] > now and row[2] != "declined" for o in others):
            return False  # the store gave this MAC another address: that one is offered next time
        if holder is not None and holder[0] == mac and holder[2] == "bound":
            rows[ip] = (mac, max(holder[1], change.expires), "bound")
        else:
            rows[ip] = (mac, change.expires, "offered")
        return True
    if change.kind == "bind":
        for other in others:
            rows[other] = None
        rows[ip] = (mac, change.expires, "bound")
        return True
    if change.kind == "decline":
        rows[ip] = (mac, change.expires, "declined")
        return True
    return False
