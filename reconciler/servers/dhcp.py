"""The embedded DHCP server: UDP sockets and threads around `protocol.dhcp_decide`; no policy.

Started by the daemon (`DhcpServer(...).start()`, `.stop()`), and asked by the TFTP server for
`mac_for_address(ip)` to stamp its events. Per datagram: decode (`protocol.dhcp`), take ONE
Generation from the holder, look up that revision's cached `DhcpPlan`, `decide`, apply the
lease change, send the reply where the decision's `Route` says (RFC 2131 §4.1), and queue a
boot event. An ACK that binds a pool lease is sent by the lease store's writer thread once the
lease is committed (group commit: one fsync per batch, not per packet). Boot events are handed
to the `EventSink` from a background thread, so the packet path only appends to a deque.

Sockets: one on `listen` (default port 67) and, for ProxyDHCP, one on the PXE port 4011.
`interface` binds both to one interface (SO_BINDTODEVICE). Replies carry IP_PKTINFO with the
interface the request came in on, so a limited broadcast leaves by the right link; a unicast
to a client without an address first gets an ARP entry (SIOCSARP), else falls back to
broadcast.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Any

from reconciler.adapters.leases import LeaseStore
from reconciler.core.events import EventSink
from reconciler.core.model import BootEvent
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import dhcp as codec
from reconciler.protocol.dhcp_decide import PROXY_PORT, Decision, DhcpPlan, decide, plan_dhcp

log = logging.getLogger(__name__)

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SIOCSARP = 0x8955
ATF_COM = 0x02
ARPHRD_ETHER = 1
CLIENT_PORT = 68
SERVER_PORT = 67
_PKTINFO = struct.Struct("@i4s4s")
_CMSG_SPACE = socket.CMSG_SPACE(_PKTINFO.size)

_Event = tuple[float, str, str, str, str | None, str | None, Mapping[str, Any]]


class DhcpServer:
    """DHCPv4 (full and proxy mode) for the current generation; mode `off` answers nothing."""

    def __init__(
        self,
        listen: tuple[str, int] = ("0.0.0.0", SERVER_PORT),
        holder: GenerationHolder | None = None,
        events: EventSink | None = None,
        leases: LeaseStore | None = None,
        interface: str | None = None,
        proxy: bool | None = None,
        proxy_port: int = PROXY_PORT,
        client_port: int = CLIENT_PORT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if holder is None or events is None or leases is None:
            raise ValueError("DhcpServer needs a holder, an event sink and a lease store")
        self.listen = listen
        self.holder = holder
        self.events = events
        self.leases = leases
        self.interface = interface
        self.proxy = proxy
        self.proxy_port = proxy_port
        self.client_port = client_port
        self.clock = clock
        self.address: tuple[str, int] | None = None
        self.proxy_address: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._plan: DhcpPlan | None = None
        self._plan_lock = threading.Lock()
        self._sockets: list[tuple[socket.socket, int]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._queue: collections.deque[_Event] = collections.deque()
        self._ifnames: dict[int, str] = {}
        # ACKs made durable by the lease writer are sent by the packet thread, woken by one
        # byte per batch: a send from the writer would wait for the GIL once per packet.
        self._durable: collections.deque[tuple[socket.socket, bytes, Decision, tuple[str, int], int]] = (
            collections.deque()
        )
        self._wake_pending = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.stats: collections.Counter[str] = collections.Counter()

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self, host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if self.interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
        sock.bind((host, port))
        return sock

    def start(self) -> None:
        """Bind the sockets and start serving; returns once bound (see `.address`)."""
        host, port = self.listen
        main = self._open(host, port)
        self.address = main.getsockname()
        self._sockets.append((main, self.address[1]))
        want_proxy = self.proxy
        if want_proxy is None:
            current = self.holder.current()
            want_proxy = current is not None and current.state.site.dhcp_mode == "proxy"
        if want_proxy:
            pxe = self._open(host, self.proxy_port)
            self.proxy_address = pxe.getsockname()
            self._sockets.append((pxe, PROXY_PORT))
        for sock, logical_port in self._sockets:
            thread = threading.Thread(
                target=self._serve, args=(sock, logical_port), name=f"dhcp-{logical_port}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        events = threading.Thread(target=self._drain_events, name="dhcp-events", daemon=True)
        events.start()
        self._threads.append(events)
        log.info("dhcp listening on %s:%d interface=%s proxy=%s", host, self.address[1],
                 self.interface, bool(want_proxy))

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        for sock, _ in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.leases.flush(max(0.1, deadline - time.monotonic()))
        self._flush_events()
        self._send_durable_after_stop()
        for sock, _ in self._sockets:
            sock.close()
        self._sockets.clear()
        self._wake_r.close()
        self._wake_w.close()

    def _send_durable_after_stop(self) -> None:
        # ACKs whose leases committed while stopping: the lease is durable, so the ACK may go.
        while self._durable:
            sock, payload, decision, source, ifindex = self._durable.popleft()
            with contextlib.suppress(OSError):
                self._send(sock, payload, decision, source, ifindex)

    # -- queries ---------------------------------------------------------------------------

    def plan_for(self, generation: Generation) -> DhcpPlan:
        """The cached plan of `generation`, built once per revision.

        Called from the DHCP packet thread, the TFTP loop and HTTP workers (`mac_for_address`):
        a hit reads one reference (published whole, never mutated); a miss builds under
        `_plan_lock`, re-checking first, so concurrent callers share one plan per revision."""
        revision = generation.state.revision
        plan = self._plan
        if plan is not None and plan.revision == revision:
            return plan
        with self._plan_lock:
            plan = self._plan
            if plan is None or plan.revision != revision:
                plan = plan_dhcp(generation.state)
                self._plan = plan
            return plan

    def mac_for_address(self, ip: str) -> str | None:
        """Which MAC holds `ip` now: a reservation of the current generation or a pool lease."""
        try:
            address = IPv4Address(ip)
        except ValueError:
            return None
        generation = self.holder.current()
        if generation is not None:
            mac = self.plan_for(generation).reserved_ips.get(address)
            if mac is not None:
                return mac
        lease = self.leases.holder_of(address)
        if lease is not None and lease.state != "declined":
            return lease.mac
        return None

    # -- packet path -----------------------------------------------------------------------

    def _serve(self, sock: socket.socket, port: int) -> None:
        poller = select.poll()
        fileno = sock.fileno()
        poller.register(fileno, select.POLLIN)
        wake = self._wake_r.fileno()
        if port != PROXY_PORT:
            poller.register(wake, select.POLLIN)
        handle = self.handle
        stopping = self._stopping
        while not stopping.is_set():
            readable = False
            for fd, _ in poller.poll():
                if fd == wake:
                    self._send_durable()
                elif fd == fileno:
                    readable = True
            if not readable:
                continue
            try:
                data, ancdata, _flags, source = sock.recvmsg(4096, _CMSG_SPACE)
            except OSError:
                if stopping.is_set():
                    return
                continue
            if not data:
                continue
            ifindex = 0
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _PKTINFO.size:
                    ifindex = _PKTINFO.unpack_from(value)[0]
            try:
                handle(sock, port, data, source, ifindex)
            except Exception:
                log.exception("dhcp: packet from %s not handled", source)

    def handle(self, sock: socket.socket, port: int, data: bytes, source: tuple[str, int], ifindex: int) -> None:
        self.stats["received"] += 1
        message = codec.decode(data)
        if isinstance(message, codec.Rejected):
            self.stats["rejected"] += 1
            log.debug("dhcp: dropped datagram from %s: %s", source, message.reason)
            return
        generation = self.holder.current()
        if generation is None:
            return
        plan = self.plan_for(generation)
        now = self.clock()
        with self._lock:
            decision = decide(message, plan, self.leases, now, port=port)
            reply = decision.reply
            change = decision.lease
            if reply is not None:
                payload = codec.encode(reply)
                if change is not None and change.kind == "bind":
                    item = (sock, payload, decision, source, ifindex)
                    self.leases.apply(change, lambda: self._durable_ready(item))
                    reply = None  # sent once durable
                elif change is not None:
                    self.leases.apply(change)
            elif change is not None:
                self.leases.apply(change)
        if reply is not None:
            self._send(sock, payload, decision, source, ifindex)
        if decision.stage is not None:
            # The decider made `detail` for this decision alone: no copy needed.
            ciaddr = message.ciaddr
            self._queue.append((now, decision.stage, plan.revision, message.mac, decision.node,
                                str(ciaddr) if ciaddr != codec.ZERO_IP else source[0],
                                decision.detail))
        elif decision.reply is None:
            log.debug("dhcp: no reply revision=%s mac=%s: %s", plan.revision, message.mac, decision.reason)

    def _durable_ready(self, item: tuple[socket.socket, bytes, Decision, tuple[str, int], int]) -> None:
        """Writer thread: a bound lease is committed; queue its ACK and wake the packet thread.

        Append first, then wake unless a wake is already pending: the packet thread clears
        `_wake_pending` BEFORE it drains, so an ACK appended after its drain loop ended always
        finds the flag clear and sends the byte (one byte per batch, never a stranded ACK)."""
        self._durable.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"!")

    def _send_durable(self) -> None:
        self._wake_pending = False
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while self._durable:
            try:
                sock, payload, decision, source, ifindex = self._durable.popleft()
            except IndexError:
                return
            self._send(sock, payload, decision, source, ifindex)

    def _send(self, sock: socket.socket, payload: bytes, decision: Decision,
              source: tuple[str, int], ifindex: int) -> None:
        route = decision.route
        assert route is not None and decision.reply is not None
        broadcast = ("255.255.255.255", self.client_port)
        if route.kind == "relay":
            assert route.ip is not None
            relay = str(route.ip)
            # A relay that sends from its own address gets the reply on that port (RFC 8357).
            dest = (relay, source[1] if source[0] == relay else SERVER_PORT)
        elif route.kind == "ciaddr":
            dest = (str(route.ip), self.client_port)
        elif route.kind == "source":
            dest = source
        elif route.kind == "chaddr" and route.ip is not None and self._add_arp(
            sock, route.ip, decision.reply.chaddr, ifindex
        ):
            dest = (str(route.ip), self.client_port)
        else:
            dest = broadcast
        try:
            if ifindex and (dest[0] == "255.255.255.255" or route.kind == "chaddr"):
                cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, _PKTINFO.pack(ifindex, b"\0" * 4, b"\0" * 4))]
                sock.sendmsg([payload], cmsg, 0, dest)
            else:
                sock.sendto(payload, dest)
            self.stats["sent"] += 1
        except OSError as exc:
            self.stats["send_errors"] += 1
            log.warning("dhcp: reply to %s failed: %s", dest, exc)

    def _add_arp(self, sock: socket.socket, ip: IPv4Address, chaddr: bytes, ifindex: int) -> bool:
        """Tell the kernel chaddr owns ip, so a unicast reaches a client with no address yet."""
        ifname = self.interface or ""
        if not ifname and ifindex:
            name = self._ifnames.get(ifindex)
            if name is None:
                with contextlib.suppress(OSError):
                    name = socket.if_indextoname(ifindex)
                    self._ifnames[ifindex] = name
            ifname = name or ""
        protocol = struct.pack("=H2s4s8s", socket.AF_INET, b"", ip.packed, b"")
        hardware = struct.pack("=H14s", ARPHRD_ETHER, chaddr[:6])
        request = protocol + hardware + struct.pack("=i", ATF_COM) + bytes(16) + ifname.encode()[:15].ljust(16, b"\0")
        try:
            fcntl.ioctl(sock.fileno(), SIOCSARP, request)
        except OSError:
            return False
        return True

    # -- events ----------------------------------------------------------------------------

    def _drain_events(self) -> None:
        while not self._stopping.wait(0.05):
            self._flush_events()
        self._flush_events()

    def _flush_events(self) -> None:
        queue = self._queue
        while queue:
            try:
                when, stage, revision, mac, node, client, detail = queue.popleft()
            except IndexError:
                return
            try:
                self.events.record(BootEvent(time=when, stage=stage, revision=revision, mac=mac,
                                             node=node, client=client, detail=detail))
            except Exception:
                log.exception("dhcp: event sink failed")
