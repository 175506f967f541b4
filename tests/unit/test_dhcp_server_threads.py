"""servers.dhcp between its threads: durable ACKs never stranded, one DhcpPlan per revision.

No sockets are served here: the packet thread's and the lease writer's halves are called
directly, from threads the test controls, in the interleavings that used to go wrong.
"""

from __future__ import annotations

import collections
import select
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from reconciler import generation as generation_module
from reconciler.adapters.leases import LeaseStore
from reconciler.core.events import CollectEvents
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol.dhcp_decide import DhcpPlan, LeaseChange, plan_dhcp
from reconciler.servers.dhcp import DhcpServer
from tests.dhcp_fixtures import make_state, node


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DhcpServer]:
    leases = LeaseStore(tmp_path / "leases.sqlite3")
    srv = DhcpServer(holder=GenerationHolder(), events=CollectEvents(), leases=leases)
    yield srv
    srv.stop(timeout=1.0)
    leases.close()


def _wake_pending(srv: DhcpServer) -> bool:
    """Would the packet thread's poll wake up now (a byte on the wake socket)?"""
    poller = select.poll()
    poller.register(srv._wake_r.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _AppendGate(collections.deque[Any]):
    """A deque whose `append` from the writer thread first waits for the packet thread's drain,
    holding the writer between 'is the queue empty?' and the append (the B8 window)."""

    def __init__(self) -> None:
        super().__init__()
        self.writer_in_append = threading.Event()
        self.drained = threading.Event()
        self.gate_thread: threading.Thread | None = None

    def append(self, item: Any) -> None:
        if threading.current_thread() is self.gate_thread:
            self.writer_in_append.set()
            self.drained.wait(5)
        super().append(item)


def test_an_ack_made_durable_while_the_packet_thread_drains_is_not_stranded(
    server: DhcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bytes] = []
    monkeypatch.setattr(server, "_send", lambda sock, payload, *rest: sent.append(payload))
    queue = _AppendGate()
    server._durable = queue
    item_a: Any = (None, b"ACK-a", None, ("10.0.0.1", 68), 0)
    item_b: Any = (None, b"ACK-b", None, ("10.0.0.2", 68), 0)

    server._durable_ready(item_a)  # the first ACK of a batch: wakes the packet thread
    assert _wake_pending(server)

    writer = threading.Thread(target=server._durable_ready, args=(item_b,))
    queue.gate_thread = writer
    writer.start()
    assert queue.writer_in_append.wait(5)
    server._send_durable()  # the packet thread drains while the writer is mid-append
    queue.drained.set()
    writer.join(5)

    assert sent == [b"ACK-a"]
    # ACK-b is queued after the drain loop ended: the packet thread must be woken for it.
    assert _wake_pending(server), "ACK-b stranded until the next batch"
    server._send_durable()
    assert sent == [b"ACK-a", b"ACK-b"]


class _WakeReader:
    """The packet thread's end of the wake socket, running the writer's `_durable_ready` right
    after the first byte is read: the writer's wake lands inside the packet thread's drain."""

    def __init__(self, srv: DhcpServer, item: Any) -> None:
        self.srv, self.item, self.real, self.reads = srv, item, srv._wake_r, 0

    def recv(self, size: int) -> bytes:
        data = self.real.recv(size)
        self.reads += 1
        if self.reads == 1:
            self.srv._durable_ready(self.item)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_wake_sent_while_the_packet_thread_empties_the_wake_socket_is_not_lost(
    server: DhcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer wakes between the packet thread's flag reset and its read of the socket: the
    byte must not be swallowed with the flag left set, else no later ACK ever wakes it."""
    sent: list[bytes] = []
    monkeypatch.setattr(server, "_send", lambda sock, payload, *rest: sent.append(payload))
    item_a: Any = (None, b"ACK-a", None, ("10.0.0.1", 68), 0)
    item_b: Any = (None, b"ACK-b", None, ("10.0.0.2", 68), 0)
    item_c: Any = (None, b"ACK-c", None, ("10.0.0.3", 68), 0)
    server._durable_ready(item_a)
    reader = _WakeReader(server, item_b)
    monkeypatch.setattr(server, "_wake_r", reader)
    server._send_durable()
    monkeypatch.setattr(server, "_wake_r", reader.real)
    assert sent == [b"ACK-a", b"ACK-b"]
    server._durable_ready(item_c)  # the next batch's ACK must wake the packet thread
    assert _wake_pending(server), "ACK-c (and every later ACK) stranded"
    server._send_durable()
    assert sent == [b"ACK-a", b"ACK-b", b"ACK-c"]


def test_one_wake_per_batch_of_durable_acks(server: DhcpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []
    monkeypatch.setattr(server, "_send", lambda sock, payload, *rest: sent.append(payload))
    for index in range(50):
        server._durable_ready((None, b"ACK-%d" % index, None, ("10.0.0.1", 68), 0))  # type: ignore[arg-type]
    assert server._wake_r.recv(4096) == b"!"  # one byte for the whole batch
    server._send_durable()
    assert sent == [b"ACK-%d" % i for i in range(50)]
    assert not _wake_pending(server)


def test_concurrent_callers_share_the_one_plan_of_a_generation(
    server: DhcpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DHCP, TFTP (`mac_for_address`) and HTTP threads ask at once after a commit: the plan is
    the generation's own view, built once when it is swapped in, never by a caller."""
    builds: list[str] = []
    callers = 8

    def counting_plan(state: Any) -> DhcpPlan:
        builds.append(state.revision)
        return plan_dhcp(state)

    monkeypatch.setattr(generation_module, "plan_dhcp", counting_plan)
    generation = Generation("rev-a", make_state([node("n1", "52:54:00:00:00:01", "10.99.0.21")], revision="rev-a"),
                            {})
    server.holder.swap(generation)
    assert builds == ["rev-a"]
    start = threading.Barrier(callers)
    plans: list[DhcpPlan] = []
    macs: list[str | None] = []

    def call(index: int) -> None:
        start.wait(5)
        if index % 2:
            plans.append(generation.dhcp_plan)
        else:
            macs.append(server.mac_for_address("10.99.0.21"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert builds == ["rev-a"]
    assert len({id(plan) for plan in plans}) == 1 and plans[0].revision == "rev-a"
    assert macs == ["52:54:00:00:00:01"] * (callers // 2)


def test_an_expired_lease_names_no_machine(tmp_path: Path) -> None:
    """HTTP refuses a node's seed to an address leased to another MAC: a stale lease must not count."""
    now = [1000.0]
    leases = LeaseStore(tmp_path / "leases.sqlite3")
    server = DhcpServer(holder=GenerationHolder(), events=CollectEvents(), leases=leases, clock=lambda: now[0])
    try:
        bound = threading.Event()
        leases.apply(LeaseChange("bind", IPv4Address("10.99.0.60"), "02:00:00:00:00:60", 1600.0), bound.set)
        assert bound.wait(5)
        assert server.mac_for_address("10.99.0.60") == "02:00:00:00:00:60"
        now[0] = 1600.0
        assert server.mac_for_address("10.99.0.60") is None
    finally:
        server.stop(timeout=1.0)
        leases.close()
