"""Offers nobody took are forgotten an hour after they expired (adapters.leases.OFFER_KEEP), on
both engines: the SQLite lease store's memory (offers are never written there) and PostgreSQL's
shared table and each instance's memory (adapters.pgleases). Before, every address ever offered
stayed for good: in memory, in the table, and loaded again at every start.

Real stores (a SQLite file; a database of the session's PostgreSQL cluster, tests/pgcluster.py);
`sweep_every=0` sweeps at every sync() and commit instead of every minute.
"""

from __future__ import annotations

import threading
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import psycopg
import pytest

from reconciler.adapters.leases import LeaseStore
from reconciler.adapters.pgleases import PgLeaseStore
from reconciler.protocol.dhcp_decide import LeaseChange
from tests.pgcluster import PgCluster

NET = IPv4Network("10.99.0.0/24")
STALE, RECENT, LIVE = IPv4Address("10.99.0.100"), IPv4Address("10.99.0.101"), IPv4Address("10.99.0.102")
MACS = {STALE: "52:54:00:00:01:00", RECENT: "52:54:00:00:01:01", LIVE: "52:54:00:00:01:02"}


def _offer(store: LeaseStore, ip: IPv4Address, expires: float, kind: str = "offer") -> None:
    answered = threading.Event()
    store.apply(LeaseChange(kind, ip, MACS[ip], expires, NET), answered.set)  # type: ignore[arg-type]
    assert store.flush(10.0) and answered.is_set()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_offers_expired_an_hour_ago_are_forgotten(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cluster: PgCluster | None = request.getfixturevalue("pg_cluster") if engine == "postgresql" else None
    url = cluster.create_database() if cluster is not None else ""
    store = PgLeaseStore(url, instance="a", sweep_every=0) if url else \
        LeaseStore(tmp_path / "leases.sqlite3", sweep_every=0)
    try:
        now = time.time()
        _offer(store, STALE, now - 2 * 3600)  # expired two hours ago: forgotten
        _offer(store, RECENT, now - 600)  # expired ten minutes ago: kept (the client may come back)
        _offer(store, LIVE, now + 60)
        store.sync()
        assert store.holder_of(STALE) is None and store.lease_of(MACS[STALE]) is None
        assert {lease.ip for lease in store.all_leases()} == {RECENT, LIVE}
        _offer(store, LIVE, now + 600, "bind")  # a later commit sweeps the table
        if url:
            with psycopg.connect(url) as conn:
                rows = conn.execute("SELECT ip, state FROM dhcp_leases ORDER BY ip").fetchall()
            assert rows == [(str(RECENT), "offered"), (str(LIVE), "bound")]
    finally:
        store.close()
    if url:  # and a restart neither loads nor keeps them
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO dhcp_leases (ip, mac, expires, state) VALUES (%s, %s, %s, 'offered')",
                         (str(STALE), MACS[STALE], now - 2 * 3600))
        again = PgLeaseStore(url, instance="a")
        try:
            assert {lease.ip for lease in again.all_leases()} == {RECENT, LIVE}
        finally:
            again.close()
        with psycopg.connect(url) as conn:
            left = conn.execute("SELECT ip FROM dhcp_leases ORDER BY ip").fetchall()
        assert left == [(str(RECENT),), (str(LIVE),)]
