"""The DHCP lease store: pool leases in memory for the packet path, in SQLite for restarts.

Used by `servers.dhcp.DhcpServer`, which reads it through the `protocol.dhcp_decide.LeaseView`
methods (`lease_of`, `holder_of`, `find_free`: memory only, no I/O) and applies decisions with
`apply`. Bound and declined leases are written by one writer thread in batches: everything
queued while the previous transaction was committing goes into the next one (group commit),
so a burst of ACKs costs one fsync, not one per packet. An ACK is sent only from the
`on_durable` callback, i.e. after the transaction holding its lease has committed
(`PRAGMA synchronous=FULL` in WAL mode): once a client has its ACK, a restart keeps its lease.
Offers are held in memory only (they are promises for a minute, not leases). An offer nobody
took is forgotten `OFFER_KEEP` after it expired (`sweep`, from `sync()` every `sweep_every` s;
until then a client that comes back is offered the same address): without it every address ever
offered stayed in memory, and in PostgreSQL's table, for good.

`adapters.pgleases.PgLeaseStore` is the same memory over PostgreSQL, shared by several
instances: it overrides the persistence (`_open`, `_commit`, `_failed`) and claims offers too
(`claims_offers`); `sync()`, called by the server under its lock before each decision, applies
what other instances changed.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Container
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from reconciler.adapters import sqlrows
from reconciler.protocol.dhcp_decide import Lease, LeaseChange

log = logging.getLogger(__name__)

OFFER_KEEP = 3600.0  # seconds an expired offer is kept (the client's address next time; clock skew)
SWEEP_EVERY = 60.0  # seconds between sweeps of expired offers

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dhcp_leases (
    ip TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases (mac);
"""

# Batch statements, a chunk of rows bound into `{values}` (see adapters.sqlrows).
# Rows (ip, mac): the address is free again if that MAC held it.
_DELETE_RELEASED = """
DELETE FROM dhcp_leases WHERE rowid IN (
    SELECT l.rowid FROM (VALUES {values}) AS j
    JOIN dhcp_leases AS l ON l.ip = j.column1
    WHERE l.mac = j.column2)
"""
# Rows (ip,): an address no longer held by anyone.
_DELETE_FREED = "DELETE FROM dhcp_leases WHERE ip IN (VALUES {values})"
# Rows (ip, mac, expires, state): the final state of each address in the batch.
_UPSERT = "INSERT OR REPLACE INTO dhcp_leases (ip, mac, expires, state) VALUES {values}"

# A change, its callback once durable, the addresses a bind took from the same MAC in the
# same subnet (the rows the batch must delete), and whether the MAC held that address already
# (a renewal: PgLeaseStore answers it from memory while PostgreSQL is unreachable).
_Write = tuple[LeaseChange, Callable[[], None] | None, tuple[IPv4Address, ...], bool]


class LeaseStore:
    """Pool leases: memory maps guarded by the caller's lock, durably batched to SQLite.

    A MAC holds one lease per subnet (RFC 2131: a binding is per client and subnet): a client
    that moves to another link and back finds its first address still its own until it
    expires. In memory: address -> lease, and MAC -> its leases (one per subnet, latest last)."""

    claims_offers = False  # offers are promises in memory: answered at once, never written

    def __init__(self, path: Path | str, *, sweep_every: float = SWEEP_EVERY) -> None:
        self.path = str(path)
        self._sweep_every = sweep_every
        self._next_sweep = time.monotonic() + sweep_every
        self._by_mac: dict[str, list[Lease]] = {}
        self._by_ip: dict[IPv4Address, Lease] = {}
        self._cursors: dict[tuple[IPv4Address, IPv4Address], int] = {}
        self._pending: list[_Write] = []
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self.commits = 0  # transactions committed (for tests and the bench)
        self.problem: str | None = None  # why leases cannot be written now (PgLeaseStore)
        for lease in self._open():
            self._load(lease)
        self._writer = threading.Thread(target=self._write_loop, name="dhcp-leases", daemon=True)
        self._writer.start()

    def _open(self) -> list[Lease]:
        """Open the database; the leases it holds."""
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        return [Lease(IPv4Address(ip), mac, float(expires), state)
                for ip, mac, expires, state in self._conn.execute("SELECT ip, mac, expires, state FROM dhcp_leases")]

    def sync(self) -> None:
        """Apply what other writers changed (called under the server's lock; the SQLite file has
        one writer); every `sweep_every` s, forget the offers long expired."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._sweep_every
            self.sweep(time.time())

    def sweep(self, now: float) -> int:
        """Forget the offers expired more than OFFER_KEEP before `now` (memory; under the
        server's lock); how many."""
        stale = [ip for ip, lease in self._by_ip.items()
                 if lease.state == "offered" and lease.expires < now - OFFER_KEEP]
        for ip in stale:
            self._forget_ip(ip)
        return len(stale)

    # -- LeaseView (memory only; called under the server's lock) --------------------------

    def lease_of(self, mac: str, network: IPv4Network | None = None) -> Lease | None:
        held = self._by_mac.get(mac)
        if not held:
            return None
        if network is None:
            return held[-1]
        for lease in held:
            if lease.ip in network:
                return lease
        return None

    def holder_of(self, ip: IPv4Address) -> Lease | None:
        return self._by_ip.get(ip)

    def find_free(
        self, first: IPv4Address, last: IPv4Address, now: float, avoid: Container[IPv4Address]
    ) -> IPv4Address | None:
        """The next address of the pool that is unheld (or expired) and not avoided; round robin."""
        lo, hi = int(first), int(last)
        size = hi - lo + 1
        if size <= 0:
            return None
        start = self._cursors.get((first, last), lo)
        by_ip = self._by_ip
        for step in range(size):
            value = lo + (start - lo + step) % size
            ip = IPv4Address(value)
            lease = by_ip.get(ip)
            if (lease is None or lease.expires <= now) and ip not in avoid:
                self._cursors[(first, last)] = lo + (value - lo + 1) % size
                return ip
        return None

    def all_leases(self) -> list[Lease]:
        return sorted(self._by_ip.values(), key=lambda lease: int(lease.ip))

    # -- changes ---------------------------------------------------------------------------

    def apply(self, change: LeaseChange, on_durable: Callable[[], None] | None = None) -> None:
        """Apply a decision's lease change in memory now; persist it in the next batch.

        `on_durable` runs on the writer thread once the change is committed (offers: at once,
        they are not persisted).
        """
        displaced: tuple[IPv4Address, ...] = ()
        held = self._by_ip.get(change.ip)
        renewal = held is not None and held.mac == change.mac and held.state == "bound"
        if change.kind == "offer" and self.claims_offers and on_durable is not None:
            if not (renewal and held is not None and held.expires >= change.expires):  # never shorten a lease
                self._remember(Lease(change.ip, change.mac, change.expires, "bound" if renewal else "offered"),
                               change.network)
            with self._cond:
                self._pending.append((change, on_durable, (), renewal))
                self._cond.notify()
            return
        if change.kind == "offer":
            current = self.lease_of(change.mac, change.network)
            if not (current is not None and current.ip == change.ip and current.state == "bound"):
                self._remember(Lease(change.ip, change.mac, change.expires, "offered"), change.network)
            elif current.expires < change.expires:
                # Its own lease ran out (the machine was off): held for this offer like any
                # other, or the next DISCOVER from another machine is offered it too.
                self._remember(Lease(change.ip, change.mac, change.expires, "bound"), change.network)
            if on_durable is not None:
                on_durable()
            return
        if change.kind == "bind":
            displaced = self._remember(Lease(change.ip, change.mac, change.expires, "bound"), change.network)
        elif change.kind == "decline":
            self._forget_ip(change.ip)
            self._by_ip[change.ip] = Lease(change.ip, change.mac, change.expires, "declined")
        elif change.kind == "release":
            self._forget_ip(change.ip)
        with self._cond:
            self._pending.append((change, on_durable, displaced, renewal))
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every change applied so far is committed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._writer.join(10)
        self._close_db()

    def _close_db(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    # -- internals -------------------------------------------------------------------------

    def _forget_ip(self, ip: IPv4Address) -> None:
        old = self._by_ip.pop(ip, None)
        if old is None:
            return
        held = self._by_mac.get(old.mac)
        if held is not None and any(lease is old for lease in held):
            rest = [lease for lease in held if lease is not old]
            if rest:
                self._by_mac[old.mac] = rest
            else:
                del self._by_mac[old.mac]

    def _load(self, lease: Lease) -> None:
        """A row read at start: kept beside the MAC's other rows (one per subnet)."""
        self._by_ip[lease.ip] = lease
        if lease.state != "declined":
            self._by_mac.setdefault(lease.mac, []).append(lease)

    def _remember(self, lease: Lease, network: IPv4Network | None) -> tuple[IPv4Address, ...]:
        """Hold `lease`; the MAC's other leases in `network` (None: anywhere) are given up.
        Returns the addresses given up."""
        if lease.state == "declined":
            self._by_ip[lease.ip] = lease
            return ()
        held = self._by_mac.get(lease.mac, [])
        displaced = tuple(old.ip for old in held if old.ip != lease.ip and (network is None or old.ip in network))
        for ip in displaced:
            self._forget_ip(ip)
        self._forget_ip(lease.ip)  # whoever held the address before (an expired lease) loses it
        self._by_mac.setdefault(lease.mac, []).append(lease)
        self._by_ip[lease.ip] = lease
        return displaced

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
                self._busy = True
            try:
                self._commit(batch)
            except Exception as exc:
                batch = self._failed(batch, exc)
            for _, callback, _, _ in batch:
                if callback is not None:
                    try:
                        callback()
                    except Exception:
                        log.exception("lease callback failed")
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _failed(self, batch: list[_Write], exc: Exception) -> list[_Write]:
        """A batch not written: what may still be answered (nothing here: not durable, no ACK)."""
        log.error("lease batch of %d changes not written: %s", len(batch), exc, exc_info=exc)
        return [(change, None, displaced, renewal) for change, _, displaced, renewal in batch]

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction for the whole batch, a statement per kind of change and chunk of
        rows (`adapters.sqlrows`), instead of one per row."""
        final: dict[str, tuple[str, float, str] | None] = {}
        released: list[tuple[str, str]] = []
        given_up: set[str] = set()  # addresses a bind took from its MAC (same subnet)
        for change, _, displaced, _ in batch:
            ip = str(change.ip)
            if change.kind == "bind":
                for old in displaced:
                    final[str(old)] = None
                    given_up.add(str(old))
                final[ip] = (change.mac, change.expires, "bound")
            elif change.kind == "decline":
                final[ip] = (change.mac, change.expires, "declined")
            elif change.kind == "release":
                final[ip] = None
                released.append((ip, change.mac))
        rows = [(ip, value[0], value[1], value[2]) for ip, value in final.items() if value is not None]
        # Given up and not taken again in this batch: free, whoever's row the file had for it.
        freed = [(ip,) for ip in given_up if final.get(ip) is None]
        conn = self._conn
        conn.execute("BEGIN")
        try:
            for statement, values in (
                (_DELETE_RELEASED, released), (_DELETE_FREED, freed), (_UPSERT, rows)
            ):
                for sql, params in sqlrows.chunks(statement, values):
                    conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.commits += 1
