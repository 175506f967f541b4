"""The embedded DHCP server: UDP sockets and threads around `protocol.dhcp_decide`; no policy.

Role: per datagram, decode (`protocol.dhcp`), take ONE Generation and its `dhcp_plan`, `decide`,
apply the lease change, send the reply where the decision's `Route` says (RFC 2131 §4.1), and
collect the boot event (handed to the recorder once per poll round). An ACK binding a pool
lease is sent once the lease store has made it durable (group commit).

Caller: the daemon's run command (`DhcpServer(...).start()`, `.stop()`); TFTP and HTTP are given
`mac_for_address(ip)` to name the machine behind an address.

Sockets: port 67 (and 4011 in proxy mode), bound to `--dhcp-interface`, else the served
generation's `dhcp.interface`, else every interface; nothing listens until one of them is known.
The binding follows the generation: the packet thread rebinds before it answers with one that
moves it. The port is never shared with another socket. Replies carry IP_PKTINFO with the
interface the request came in on. Why events go as rows and ACKs through a wake byte, with
the measurements: docs/SERVERS.md.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from reconciler.adapters.leases import LeaseStore
from reconciler.core.events import EventRow, EventSink
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import dhcp as codec
from reconciler.protocol.dhcp_decide import PROXY_PORT, AnswerMemo, Decision, decide
from reconciler.servers import pktinfo, prefer_short_gil_turns
from reconciler.servers.health import Health
from reconciler.servers.recorder import BootRecorder

log = logging.getLogger(__name__)

SIOCSARP = 0x8955
ATF_COM = 0x02
ARPHRD_ETHER = 1
CLIENT_PORT = 68
SERVER_PORT = 67

Binding = tuple[str | None, bool]  # (interface, PXE port 4011 open): what the sockets are bound for
BINDING_CHECK_MS = 250  # an idle packet thread looks this often for a commit that moves its binding
DRAIN_MAX = 32  # datagrams taken from one socket per wake-up before the others get a turn


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
        self._recorder = BootRecorder(events, "dhcp", clock)
        self.leases = leases
        self.interface_override = interface  # --dhcp-interface: wins over netboot.yaml
        self.interface: str | None = None  # the interface the sockets are bound to now
        self.proxy = proxy
        self.proxy_port = proxy_port
        self.client_port = client_port
        self.clock = clock
        self.address: tuple[str, int] | None = None
        self.error: OSError | None = None  # the last bind error, until a bind succeeds (health())
        self.proxy_address: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._memo: AnswerMemo | None = None  # answers shared between clients, for one plan (packet thread)
        # The sockets, their binding and the generation it was checked against: changed only
        # by start() (before the packet thread runs) and by the packet thread itself.
        self._main: socket.socket | None = None
        self._pxe: socket.socket | None = None
        self._bound: Binding | None = None
        self._failed: Binding | None = None
        self._synced: Generation | None = None
        self._by_fd: dict[int, tuple[socket.socket, int]] = {}
        self._poller = select.poll()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._pending: list[EventRow] = []  # this poll round's boot events (packet thread)
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

    def binding_for(self, generation: Generation | None) -> Binding | None:
        """(interface, proxy port open?) needed to serve `generation`; None: do not listen (yet).

        `--dhcp-interface` wins; else netboot.yaml's `dhcp.interface` (None: every interface).
        Before any generation only an explicit interface is known: until then nothing listens,
        so a site that names its interface is never answered for on another one."""
        if generation is None:
            if self.interface_override is None:
                return None
            return (self.interface_override, bool(self.proxy))
        site = generation.state.site
        if self.proxy is None and site.dhcp_mode == "off":
            return None  # `off`: the port is left to the site's own DHCP server
        proxy = self.proxy if self.proxy is not None else site.dhcp_mode == "proxy"
        return (self.interface_override or site.interface, proxy)

    def _open(self, host: str, port: int, interface: str | None) -> socket.socket:
        """A DHCP socket on host:port, bound to `interface` when given. Never SO_REUSEADDR or
        SO_REUSEPORT: the port is ours alone, so a second daemon (or dhcpd, dnsmasq) on the same
        address fails to bind instead of splitting the clients' packets with us."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, pktinfo.IP_PKTINFO, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            if interface:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    on = f" on interface {interface}" if interface else ""
                    raise OSError(exc.errno, f"dhcp listener {host}:{port}{on}: the address is in use by another "
                                  "socket (another netboot-reconcile, dhcpd or dnsmasq?); the DHCP port is never "
                                  "shared") from exc
                raise
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _rebind(self, want: Binding, revision: str, *, raise_errors: bool = False) -> None:
        """Make the sockets match `want`: a new interface gets new sockets on the same ports
        (the old ones closed first: the port is not shared, not even with ourselves); the
        proxy flag opens or closes the PXE port (4011)."""
        interface, proxy = want
        host = self.listen[0]
        main, pxe = self._main, self._pxe
        opened: list[socket.socket] = []
        try:
            if main is None or self._bound is None or self._bound[0] != interface:
                self._close_sockets()
                main = self._open(host, self.address[1] if self.address else self.listen[1], interface)
                opened.append(main)
                pxe = None
            if not proxy:
                pxe = None
            elif pxe is None:
                pxe = self._open(host, self.proxy_address[1] if self.proxy_address else self.proxy_port, interface)
                opened.append(pxe)
        except OSError as exc:
            for sock in opened:
                sock.close()
            self.error = exc
            if raise_errors:
                raise
            # Answering on the old binding would answer where the served commit says not to.
            self._close_sockets()
            if want != self._failed:
                log.error("revision=%s dhcp cannot bind interface=%s proxy=%s: %s (not answering; retrying)",
                          revision, interface, proxy, exc)
            self._failed = want
            return
        for old in (self._main, self._pxe):
            if old is not None and old is not main and old is not pxe:
                self._forget(old)
        for new, port in ((main, SERVER_PORT), (pxe, PROXY_PORT)):
            if new is not None and new.fileno() not in self._by_fd:
                self._by_fd[new.fileno()] = (new, port)
                self._poller.register(new.fileno(), select.POLLIN)
        self._main, self._pxe = main, pxe
        self.address = main.getsockname()
        if pxe is not None:
            self.proxy_address = pxe.getsockname()
        self._bound, self._failed, self.interface, self.error = want, None, interface, None
        log.info("revision=%s dhcp listening on %s:%d interface=%s proxy=%s", revision, host, self.address[1],
                 interface or "*", proxy)

    def _forget(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self._by_fd.pop(fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
        sock.close()

    def _close_sockets(self) -> None:
        for sock in (self._main, self._pxe):
            if sock is not None:
                self._forget(sock)
        self._main = self._pxe = None
        self._bound = None

    def _sync(self, generation: Generation | None, sock: socket.socket | None = None) -> bool:
        """Packet thread: bind as `generation` needs before answering with it. False: `sock`
        was closed by the rebind (the datagram came in on a binding no longer served)."""
        self._synced = generation
        want = self.binding_for(generation)
        if want is None and generation is not None and self._bound is not None:
            self._close_sockets()  # a commit switched to `dhcp.mode: off`: free port 67
            log.info("revision=%s dhcp mode off: not listening", generation.revision)
        elif want is not None and want != self._bound:
            self._rebind(want, generation.revision if generation is not None else "-")
        return sock is None or sock is self._main or sock is self._pxe

    def health(self) -> Health:
        """Bound as the served generation needs, and the packet thread alive (any thread)."""
        want = self.binding_for(self.holder.current())
        host, port = self.address or self.listen
        if want is None:
            return Health(False, needed=False, address=f"{host}:{port}")
        alive = any(thread.is_alive() for thread in self._threads)
        bound = self._main is not None and self._bound == want
        return Health(bound and alive, address=f"{host}:{port}", interface=want[0],
                      error=None if bound else self.error)

    @property
    def listening(self) -> bool:
        """Whether a DHCP socket is open (false before the first generation and in mode `off`)."""
        return self._main is not None

    def start(self) -> None:
        """Bind as the served generation (or `--dhcp-interface`) says and start serving; returns
        once bound (see `.address`). With neither known yet, nothing listens until the first
        generation is swapped in; later commits that move the interface or switch between
        full and proxy mode rebind before a packet is answered with them."""
        prefer_short_gil_turns()
        self._poller.register(self._wake_r.fileno(), select.POLLIN)
        generation = self.holder.current()
        want = self.binding_for(generation)
        if want is not None:
            self._rebind(want, generation.revision if generation is not None else "-", raise_errors=True)
        else:
            log.info("dhcp waiting for the first generation to learn its interface")
        self._synced = generation
        thread = threading.Thread(target=self._serve, name="dhcp", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.leases.flush(max(0.1, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self._hand_over_events()  # the packet thread's last round (its list: only it or we touch it)
        self._send_durable_after_stop()
        self._close_sockets()
        self._wake_r.close()
        self._wake_w.close()

    def _send_durable_after_stop(self) -> None:
        # ACKs whose leases committed while stopping: the lease is durable, so the ACK may go.
        while self._durable:
            sock, payload, decision, source, ifindex = self._durable.popleft()
            with contextlib.suppress(OSError):
                self._send(sock, payload, decision, source, ifindex)

    # -- queries ---------------------------------------------------------------------------

    def mac_for_address(self, ip: str) -> str | None:
        """Which MAC holds `ip` now: a reservation of the current generation or a pool lease."""
        try:
            address = IPv4Address(ip)
        except ValueError:
            return None
        generation = self.holder.current()
        if generation is not None:
            mac = generation.dhcp_plan.reserved_ips.get(address)
            if mac is not None:
                return mac
        lease = self.leases.holder_of(address)
        if lease is not None and lease.state != "declined" and lease.expires > self.clock():
            return lease.mac
        return None  # an expired lease says nothing about who holds the address now

    # -- packet path -----------------------------------------------------------------------

    def _serve(self) -> None:
        poller = self._poller
        by_fd = self._by_fd
        wake = self._wake_r.fileno()
        handle = self.handle
        arrival = pktinfo.arrival
        holder = self.holder
        stopping = self._stopping
        while not stopping.is_set():
            ready = poller.poll(BINDING_CHECK_MS)
            if not ready:
                # Idle: apply a commit's binding even when no packet arrives on the old one
                # (and retry one that failed).
                generation = holder.current()
                if generation is not self._synced or self._failed is not None:
                    self._sync(generation)
                continue
            for fd, _ in ready:
                if fd == wake:
                    self._send_durable()
                    continue
                entry = by_fd.get(fd)
                if entry is None:
                    continue  # closed by a rebind earlier in this round
                sock, port = entry
                # Under load several datagrams wait: take up to DRAIN_MAX per wake-up (one poll
                # for many packets), then look at the other sockets again.
                for _ in range(DRAIN_MAX):
                    try:
                        data, ancdata, _flags, source = sock.recvmsg(4096, pktinfo.CMSG_SPACE)
                    except OSError:  # drained (EAGAIN), or closed by a rebind in handle()
                        break
                    if not data:
                        continue
                    ifindex, local = arrival(ancdata)
                    try:
                        handle(sock, port, data, source, ifindex, local)
                    except Exception:
                        log.exception("dhcp: packet from %s not handled", source)
            self._hand_over_events()

    def handle(self, sock: socket.socket, port: int, data: bytes, source: tuple[str, int], ifindex: int,
               local: int = 0) -> None:
        """One datagram, received on `port` through interface `ifindex`, for the local address
        `local` (an integer; 0: unknown): decide, apply the lease change, reply, collect the event."""
        self.stats["received"] += 1
        message = codec.decode(data)
        if isinstance(message, codec.Rejected):
            self.stats["rejected"] += 1
            log.debug("dhcp: dropped datagram from %s: %s", source, message.reason)
            return
        generation = self.holder.current()
        if generation is None:
            return
        if generation is not self._synced and not self._sync(generation, sock):
            self.stats["dropped_rebound"] += 1
            return
        plan = generation.dhcp_plan
        memo = self._memo
        if memo is None or memo.plan is not plan:
            memo = self._memo = AnswerMemo(plan)
        now = self.clock()
        leases = self.leases
        with self._lock:
            leases.sync()  # what other instances sharing the lease store changed (PgLeaseStore)
            decision = decide(message, plan, leases, now, port=port, memo=memo, local=local)
            reply = decision.reply
            change = decision.lease
            if reply is not None:
                payload = codec.encode(reply, decision.block, codec.reply_limit(message))
                # A bind is answered once durable; with a shared store an offer too (a claim).
                if change is not None and (change.kind == "bind" or leases.claims_offers):
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
            self._pending.append((now, decision.stage, plan.revision, message.mac, decision.node,
                                  str(ciaddr) if ciaddr != codec.ZERO_IP else source[0],
                                  decision.detail))
        elif decision.reply is None:
            log.debug("dhcp: no reply revision=%s mac=%s: %s", plan.revision, message.mac, decision.reason)

    def _durable_ready(self, item: tuple[socket.socket, bytes, Decision, tuple[str, int], int]) -> None:
        """Writer thread: a bound lease is committed; queue its ACK and wake the packet thread.

        Append first, then wake unless a wake is already pending: the packet thread clears
        `_wake_pending` after emptying the wake socket and BEFORE it drains the ACKs, so an ACK
        appended after its drain loop ended always finds the flag clear and sends the byte (one
        byte per batch, never a stranded ACK)."""
        self._durable.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"!")

    def _send_durable(self) -> None:
        # Empty the wake socket FIRST, then clear the flag: cleared first, a writer could set it
        # and send its byte in between, the byte be swallowed here with the flag left set, and
        # from then on no ACK would wake this thread again (every later ACK stranded; the pool
        # bench's "cap" at ~2,000 DORA/s). An ACK appended while the flag is still set is in
        # the deque before the loop below starts, so it is sent by this drain.
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        self._wake_pending = False
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
                sock.sendmsg([payload], pktinfo.out_of(ifindex), 0, dest)
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

    def _hand_over_events(self) -> None:
        """Give the sink the events of this poll round in one batch (packet thread; stop())."""
        rows = self._pending
        if not rows:
            return
        self._pending = []
        self._recorder.record_rows(rows)
