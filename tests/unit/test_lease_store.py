"""adapters.leases: what a restart reads back is what the server had in memory.

Real SQLite files in tmp_path; every case closes the store and opens the file again, the way a
daemon restart does, and compares with the leases the running store answered with.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from reconciler.adapters.leases import LeaseStore
from reconciler.core.model import Subnet
from reconciler.protocol import dhcp as d
from reconciler.protocol.dhcp_decide import Lease, LeaseChange, decide, plan_dhcp
from tests.dhcp_fixtures import client_message, make_state

A, B, C, D = (IPv4Address(f"10.99.0.{n}") for n in (100, 101, 102, 103))
MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"



def _wait(gate: threading.Event) -> None:
    """Hold the lease writer (in its callback) until `gate` is set."""
    gate.wait()

def _apply_all(store: LeaseStore, changes: list[LeaseChange]) -> None:
    for change in changes:
        store.apply(change)
    assert store.flush(5.0)


def _reopened(path: Path) -> list[Lease]:
    """The leases a restarted store holds; also checks the file holds no other rows (a row the
    load happens to shadow today would come back with another row order)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT ip, mac, expires, state FROM dhcp_leases").fetchall()
    store = LeaseStore(path)
    try:
        leases = store.all_leases()
    finally:
        store.close()
    assert sorted(rows) == sorted((str(lease.ip), lease.mac, lease.expires, lease.state) for lease in leases)
    return leases


def test_binds_moves_releases_and_declines_read_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    _apply_all(store, [LeaseChange("bind", A, MAC1, 1000.0), LeaseChange("bind", B, MAC2, 1000.5)])
    # Separate batches: MAC1 moves from A to C; MAC2 releases B; then MAC2 declines A.
    _apply_all(store, [LeaseChange("bind", C, MAC1, 2000.25)])
    _apply_all(store, [LeaseChange("release", B, MAC2, 0.0)])
    _apply_all(store, [LeaseChange("decline", A, MAC2, 3000.0)])
    in_memory = store.all_leases()
    store.close()

    assert in_memory == [
        Lease(A, MAC2, 3000.0, "declined"),
        Lease(C, MAC1, 2000.25, "bound"),
    ]
    assert _reopened(path) == in_memory


def test_a_mac_moved_twice_in_one_batch_holds_only_its_last_address(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    _apply_all(store, [LeaseChange("bind", A, MAC1, 1000.0)])
    # Hold the writer so the next three changes are committed as one batch.
    gate = threading.Event()
    store.apply(LeaseChange("bind", D, MAC2, 1000.0), on_durable=lambda: _wait(gate))
    for ip in (B, C, A):
        store.apply(LeaseChange("bind", ip, MAC1, 1500.0))
    gate.set()
    assert store.flush(5.0)
    in_memory = store.all_leases()
    store.close()

    assert in_memory == [Lease(A, MAC1, 1500.0, "bound"), Lease(D, MAC2, 1000.0, "bound")]
    assert _reopened(path) == in_memory


def test_a_large_batch_is_committed_whole(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    first = int(IPv4Address("10.99.16.1"))
    changes = [
        LeaseChange("bind", IPv4Address(first + i), f"02:00:00:00:{i >> 8:02x}:{i & 0xff:02x}", 5000.0 + i)
        for i in range(5000)
    ]
    _apply_all(store, changes)
    assert store.commits < len(changes)  # group commit: far fewer transactions than leases
    in_memory = store.all_leases()
    store.close()

    assert len(in_memory) == 5000
    assert _reopened(path) == in_memory


def _one_batch(store: LeaseStore, changes: list[LeaseChange]) -> None:
    """Apply `changes` so that the writer commits them in one transaction."""
    gate = threading.Event()
    hold = LeaseChange("bind", IPv4Address("10.99.0.250"), "52:54:00:00:00:ff", 1.0)
    store.apply(hold, on_durable=lambda: _wait(gate))
    for change in changes:
        store.apply(change)
    gate.set()
    assert store.flush(5.0)


def test_a_decline_between_two_binds_of_one_batch_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    _one_batch(store, [LeaseChange("bind", A, MAC1, 1000.0), LeaseChange("decline", A, MAC1, 4000.0),
                       LeaseChange("bind", B, MAC1, 1500.0)])
    in_memory = store.all_leases()
    store.close()
    assert Lease(A, MAC1, 4000.0, "declined") in in_memory and Lease(B, MAC1, 1500.0, "bound") in in_memory
    assert _reopened(path) == in_memory


def test_an_address_left_within_a_batch_keeps_no_row_of_its_former_holder(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    _apply_all(store, [LeaseChange("bind", A, MAC2, 10.0)])  # long expired by the next batch
    _one_batch(store, [LeaseChange("bind", A, MAC1, 2000.0), LeaseChange("bind", B, MAC1, 2000.0)])
    in_memory = store.all_leases()
    store.close()
    assert A not in {lease.ip for lease in in_memory}
    assert _reopened(path) == in_memory


def test_an_offer_of_a_clients_own_expired_lease_holds_the_address_for_it(tmp_path: Path) -> None:
    """A machine off past its lease DISCOVERs and is offered its old address: another machine
    asking a moment later must not be offered it too (RFC 2131 4.3.1), whichever REQUEST came
    first would win and the other be NAKed. The restart still reads the bound lease back."""
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    try:
        _apply_all(store, [LeaseChange("bind", A, MAC1, 1060.0)])
        assert store.find_free(A, A, now=1120.0, avoid=()) == A  # expired: free for anyone
        store.apply(LeaseChange("offer", A, MAC1, 1180.0))  # MAC1 DISCOVERs at 1120
        assert store.find_free(A, A, now=1121.0, avoid=()) is None  # MAC2 a second later
        assert store.find_free(A, A, now=1181.0, avoid=()) == A  # the hold ends like any offer's
        assert store.flush(5.0)
    finally:
        store.close()
    assert _reopened(path) == [Lease(A, MAC1, 1060.0, "bound")]


LINK_A, LINK_B = IPv4Network("10.99.0.0/24"), IPv4Network("10.98.0.0/24")
FAR = IPv4Address("10.98.0.100")


def test_a_mac_holds_one_lease_per_subnet_and_a_restart_reads_both_back(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    store = LeaseStore(path)
    try:
        _apply_all(store, [LeaseChange("bind", A, MAC1, 1000.0, LINK_A),
                           LeaseChange("bind", FAR, MAC1, 1000.0, LINK_B)])
        assert store.lease_of(MAC1, LINK_A) == Lease(A, MAC1, 1000.0, "bound")
        assert store.lease_of(MAC1, LINK_B) == Lease(FAR, MAC1, 1000.0, "bound")
        assert store.holder_of(A) is not None and store.holder_of(FAR) is not None
    finally:
        store.close()
    assert {(lease.ip, lease.mac) for lease in _reopened(path)} == {(A, MAC1), (FAR, MAC1)}
    store = LeaseStore(path)
    try:
        assert store.lease_of(MAC1, LINK_A) is not None and store.lease_of(MAC1, LINK_B) is not None
        # A new address in one subnet gives up the old one there, and only there.
        _apply_all(store, [LeaseChange("bind", B, MAC1, 2000.0, LINK_A)])
        assert store.lease_of(MAC1, LINK_A) == Lease(B, MAC1, 2000.0, "bound")
        assert store.holder_of(A) is None and store.lease_of(MAC1, LINK_B) == Lease(FAR, MAC1, 1000.0, "bound")
    finally:
        store.close()
    assert {(lease.ip, lease.mac) for lease in _reopened(path)} == {(B, MAC1), (FAR, MAC1)}


def test_a_client_back_from_another_link_finds_its_address_still_its_own(tmp_path: Path) -> None:
    # Link A's pool is one address. MAC1 takes it, moves to link B and takes one there: its
    # binding on A stays until it expires (RFC 2131: per client and subnet), so MAC2 on A gets
    # nothing, and MAC1, back on A, is offered its address again.
    other = Subnet(network=LINK_B, pool=(FAR, FAR), routers=(), dns_servers=(), domain_name=None, lease_time=600,
                   max_lease_time=7200)
    plan = plan_dhcp(make_state((), pool=("10.99.0.100", "10.99.0.100"), extra_subnets=(other,)))
    on_a, on_b = int(IPv4Address("10.99.0.1")), int(IPv4Address("10.98.0.1"))
    store = LeaseStore(tmp_path / "leases.sqlite3")

    def dora(mac: str, local: int, now: float) -> IPv4Address | None:
        offer = decide(client_message(d.DISCOVER, mac), plan, store, now, local=local)
        if offer.reply is None:
            return None
        assert offer.lease is not None
        store.apply(offer.lease)
        request = client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: offer.reply.yiaddr.packed,
                                                          d.OPT_SERVER_ID: plan.server_id.packed})
        ack = decide(request, plan, store, now, local=local)
        assert ack.reply is not None and ack.lease is not None and ack.lease.kind == "bind"
        store.apply(ack.lease)
        return ack.reply.yiaddr

    try:
        assert dora(MAC1, on_a, 1000.0) == A
        assert dora(MAC1, on_b, 1010.0) == FAR
        assert dora(MAC2, on_a, 1020.0) is None  # A is still MAC1's
        assert dora(MAC1, on_a, 1030.0) == A
        assert store.flush(5.0)
    finally:
        store.close()
