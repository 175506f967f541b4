"""Pool leases shared through PostgreSQL (adapters.pgleases): two lease stores on one real
database, as two instances have them. Claims are serialised by the store: a MAC keeps the
address the first claim gave it, an address goes to one MAC, the loser's memory learns the
winner's rows; notifications carry each instance's leases to the other; the database stopped
and started again: renewals are answered from memory and written once it is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from reconciler.adapters.pgleases import PgLeaseStore
from reconciler.protocol.dhcp_decide import LeaseChange
from tests.integration.daemon_support import wait_for
from tests.pgcluster import PgCluster

NET = IPv4Network("10.99.0.0/24")
X, Y = IPv4Address("10.99.0.100"), IPv4Address("10.99.0.101")


def change(kind: str, ip: IPv4Address, mac: str, seconds: float = 600) -> LeaseChange:
    return LeaseChange(kind, ip, mac, time.time() + seconds, NET)  # type: ignore[arg-type]


def claim(store: PgLeaseStore, c: LeaseChange) -> bool:
    """Apply `c` as the DHCP server does (answer once durable); whether it was answered."""
    answered = threading.Event()
    store.apply(c, answered.set)
    assert store.flush(10.0)
    return answered.is_set()


@pytest.fixture
def pair(pg_cluster: PgCluster) -> Iterator[tuple[PgLeaseStore, PgLeaseStore]]:
    url = pg_cluster.create_database()
    a, b = PgLeaseStore(url, instance="a"), PgLeaseStore(url, instance="b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_mac_gets_one_address_and_an_address_one_mac_whichever_instance_claims(
        pair: tuple[PgLeaseStore, PgLeaseStore]) -> None:
    a, b = pair
    assert claim(a, change("offer", X, "02:00:00:00:00:01"))
    # b has not heard yet (or has): its own pick for the same MAC is refused, and its memory learns X
    assert not claim(b, change("offer", Y, "02:00:00:00:00:01"))
    b.sync()
    lease = b.lease_of("02:00:00:00:00:01", NET)
    assert lease is not None and lease.ip == X
    # the address another MAC was offered is refused to a second one
    assert not claim(b, change("bind", X, "02:00:00:00:00:02"))
    assert claim(b, change("bind", X, "02:00:00:00:00:01"))  # the same MAC binds it through b
    def heard() -> bool:
        a.sync()  # as the DHCP server does before each decision
        lease = a.holder_of(X)
        return lease is not None and lease.state == "bound"

    wait_for(heard, "a to hear of b's bind")
    assert a.refused == 0 and b.refused == 2


def test_concurrent_claims_of_one_pool_never_lease_an_address_twice(
        pair: tuple[PgLeaseStore, PgLeaseStore]) -> None:
    a, b = pair
    won: dict[str, list[str]] = {}
    lock = threading.Lock()

    def storm(store: PgLeaseStore, tag: str) -> None:
        for i in range(50):  # both instances go after the same 50 addresses for different MACs
            ip = IPv4Address(int(X) + i)
            mac = f"02:00:00:{tag}:00:{i:02x}"
            if claim(store, change("bind", ip, mac)):
                with lock:
                    won.setdefault(str(ip), []).append(mac)

    threads = [threading.Thread(target=storm, args=(s, t)) for s, t in ((a, "aa"), (b, "bb"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 50 and all(len(macs) == 1 for macs in won.values()), won
    assert a.refused + b.refused == 50


def test_postgresql_stopped_renewals_answered_from_memory_new_leases_refused_then_written() -> None:
    cluster = PgCluster(prefix="nbr-pg-outage-")
    try:
        store = PgLeaseStore(cluster.create_database("leases"), instance="a")
        try:
            assert claim(store, change("bind", X, "02:00:00:00:00:01"))
            cluster.stop()
            renewed = threading.Event()
            store.apply(change("bind", X, "02:00:00:00:00:01", seconds=900), renewed.set)
            assert renewed.wait(30.0), "a renewal of a lease memory holds is answered while PostgreSQL is down"
            assert not store.flush(0.5)  # and kept for writing
            assert store.problem is not None and "unreachable" in store.problem
            answered = threading.Event()
            store.apply(change("bind", Y, "02:00:00:00:00:02"), answered.set)  # a new lease: not answered
            # Changes are written (or given up) in order: once a renewal applied after it is
            # answered, the new lease's turn has passed (no guess of how long that takes).
            after = threading.Event()
            store.apply(change("bind", X, "02:00:00:00:00:01", seconds=901), after.set)
            assert after.wait(30.0)
            assert not answered.is_set()
            cluster.start()
            assert store.flush(30.0), "the renewal kept while PostgreSQL was down is written once it is back"
            assert store.problem is None
            import psycopg

            with psycopg.connect(cluster.url("leases")) as conn:
                expires = conn.execute("SELECT expires FROM dhcp_leases WHERE ip = %s", (str(X),)).fetchone()
            assert expires is not None and expires[0] > time.time() + 800
        finally:
            store.close()
    finally:
        cluster.close()
