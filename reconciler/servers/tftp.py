"""The TFTP server: UDP sockets on one epoll loop in one background thread; no policy.

Role: receive RRQs, open what `protocol.tftp_serve` says to serve (`admit`, `resolve`: a
generation's `tftp/<path>` bytes, the Secure Boot chain's signed binaries, a boot asset under
`--assets-dir`, else a file under the TFTP root), and shuttle datagrams between the client and a
`protocol.tftp.ReadTransfer` on a fresh port (the transfer's TID). Every finished or refused
transfer is one boot event (`servers.recorder`): `Stage.TFTP`, or the kernel/initrd stage for a
profile's kernel or initrd (`core.boot.asset_stage`, as over HTTP).

Caller: the daemon's run command builds one `TftpServer`, calls `start()` and `stop(timeout)`;
`/status` reads `active_transfers`. Tests and `bench/tftp.py` run it on 127.0.0.1 port 0.

Why one thread and its own loop (not asyncio, not a thread or process per CPU), the two
sockets per transfer, building windows ahead and busy polling: docs/SERVERS.md, with the
measurements. Other threads reach the loop only through `_call_soon`.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import os
import platform
import re
import select
import socket
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reconciler.core import boot
from reconciler.core.bootfiles import DEBIAN_IPXE_OUTSIDE
from reconciler.core.events import EventSink, Stage
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import tftp as proto
from reconciler.protocol import tftp_serve as proto_serve
from reconciler.servers import pktinfo, prefer_short_gil_turns
from reconciler.servers.health import Health
from reconciler.servers.recorder import BootRecorder

log = logging.getLogger(__name__)

Address = tuple[str, int]

DEFAULT_LIMITS = proto.Limits()

# Linux UDP generic segmentation offload (linux/udp.h); Python 3.11 has no constant for it.
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_UDP_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_GSO_SIZE = struct.Struct("=H")
MAX_DATAGRAM = 65536
# Busy-poll window of the loop: while transfers are in flight and their datagrams have been
# arriving within half of it, the loop polls for this long before it sleeps (see `_run`).
SPIN_SECONDS = 0.0002
# Windows are built ahead only while at most this many transfers are in flight: beyond, the loop
# is seldom idle, and the queue and the extra polls cost more CPU than they save in latency.
BUILD_AHEAD_TRANSFERS = 8


def _kernel_at_least(major: int, minor: int) -> bool:
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    return sys.platform == "linux" and found is not None and (int(found[1]), int(found[2])) >= (major, minor)


# Before Linux 5.4 ("udp: correct reuseport selection with connected sockets") the kernel hands
# a shared port's datagrams to any of its sockets, the connected one included: a stranger's
# ACK could reach it and be taken for the client's. There a transfer's connected socket serves
# alone (`_Transfer`).
SHARED_PORTS = _kernel_at_least(5, 4)


class _FileSource:
    """A protocol Source over an open file descriptor (pread: no shared file offset)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def release(self, offset: int) -> None:
        return None

    def close(self) -> None:
        os.close(self._fd)


class _Opened:
    """An opened file. `size` is what the client will receive, None when it is not known
    before sending (netascii: the translation is streamed, so tsize is left out of the OACK
    rather than read the whole file on the loop thread first)."""

    def __init__(self, source: proto.Source, size: int | None, closer: Callable[[], None] | None) -> None:
        self.source = source
        self.size = size
        self.closer = closer


class TftpServer:
    """Serves read requests; refuses writes. See the module docstring for the shape."""

    def __init__(
        self,
        listen: Address,
        root: Path,
        holder: GenerationHolder,
        events: EventSink,
        *,
        max_transfers: int = 512,
        max_per_client: int = 8,
        mac_for_address: Callable[[str], str | None] | None = None,
        limits: proto.Limits = DEFAULT_LIMITS,
        allow_outside_root: Sequence[Path] = DEBIAN_IPXE_OUTSIDE,
        assets_dir: Path | None = None,
    ) -> None:
        self._listen = listen
        self._wildcard = listen[0] in ("", "0.0.0.0")  # answer from the address each request was sent to
        self._root = Path(root)
        self._holder = holder
        self._recorder = BootRecorder(events, "tftp")
        self._admission = proto_serve.Admission(max_transfers, max_per_client)
        self._mac_for_address = mac_for_address
        self._limits = limits
        self._allow_outside = frozenset(os.path.realpath(p) for p in allow_outside_root)
        self._assets = os.path.realpath(assets_dir) if assets_dir is not None else None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._address: Address | None = None
        self._transfers: set[_Transfer] = set()
        self.peak_transfers = 0  # most transfers in flight at once since start (bench, /status)
        self._per_client: dict[str, int] = {}
        self._accepting = False
        self._on_idle: Callable[[], None] | None = None
        self._gso = sys.platform == "linux"  # switched off at the first send the kernel refuses
        # The loop (all of it runs on the server thread):
        self._epoll: select.epoll | None = None
        self._handlers: dict[int, Callable[[], None]] = {}  # fd -> what to do when readable
        self._timers: list[tuple[float, int, _Transfer]] = []  # (deadline, seq, transfer) heap
        self._timer_seq = itertools.count()
        self.now = 0.0  # time.monotonic() when the loop last woke; deadlines count from it
        self.buffer = bytearray(MAX_DATAGRAM)  # every transfer socket receives into this
        self._calls: deque[Callable[[], None]] = deque()
        self._ahead: deque[_Transfer] = deque()  # transfers to build the next window of when idle
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> Address:
        if self._address is None:
            raise RuntimeError("TftpServer not started")
        return self._address

    def health(self) -> Health:
        """The listening socket open and the server thread alive."""
        thread = self._thread
        serving = self._listener is not None and thread is not None and thread.is_alive()
        host, port = self._address or self._listen
        return Health(serving, address=f"{host}:{port}")

    @property
    def active_transfers(self) -> int:
        return len(self._transfers)

    def start(self) -> None:
        """Bind the listening socket and serve in a background thread; returns once bound."""
        prefer_short_gil_turns()
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            listener.bind(self._listen)
            listener.setblocking(False)
            if self._wildcard:
                listener.setsockopt(socket.IPPROTO_IP, pktinfo.IP_PKTINFO, 1)
        except BaseException:
            listener.close()
            raise
        sockname = listener.getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._epoll = select.epoll()
        self.watch(listener.fileno(), self._on_listener_readable)
        self.watch(self._wake_r.fileno(), self._on_wake)
        self._accepting = True
        self._running = True
        self.now = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="tftp-server", daemon=True)
        self._thread.start()
        log.info("tftp listening on %s:%d root=%s", *self.address, self._root)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting RRQs, let transfers finish for up to `timeout` seconds, then close."""
        thread = self._thread
        if thread is None:
            return
        done = threading.Event()

        def begin() -> None:
            self._accepting = False
            listener = self._listener
            if listener is not None:
                self.unwatch(listener.fileno())
                listener.close()
                self._listener = None
            if not self._transfers:
                done.set()

        self._on_idle = done.set
        self._call_soon(begin)
        done.wait(timeout)

        def finish() -> None:
            for transfer in list(self._transfers):
                transfer.abort("server stopping")
            self._running = False

        self._call_soon(finish)
        thread.join(max(timeout, 1.0))
        self._thread = None
        if not thread.is_alive():
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_r = self._wake_w = None
            if self._epoll is not None:
                self._epoll.close()
                self._epoll = None

    # ------------------------------------------------------------------ the loop (server thread)

    def watch(self, fd: int, handler: Callable[[], None]) -> None:
        assert self._epoll is not None
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        self._handlers.pop(fd, None)
        if self._epoll is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def arm(self, transfer: _Transfer, deadline: float) -> None:
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), transfer))

    def build_ahead(self, transfer: _Transfer) -> None:
        """Queue `transfer` to build its next window when the loop is idle (once at a time)."""
        if not transfer.queued and len(self._transfers) <= BUILD_AHEAD_TRANSFERS:
            transfer.queued = True
            self._ahead.append(transfer)

    def _call_soon(self, call: Callable[[], None]) -> None:
        """Run `call` on the server thread (from any thread)."""
        self._calls.append(call)
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"!")

    def _on_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)
        while self._calls:
            self._calls.popleft()()

    def _run(self) -> None:
        epoll = self._epoll
        assert epoll is not None
        handlers = self._handlers
        timers = self._timers
        monotonic = time.monotonic
        transfers = self._transfers
        ahead = self._ahead
        gap = SPIN_SECONDS  # recent time from a wait's start to its datagram (moving average)
        while self._running:
            try:
                ready = epoll.poll(0)
                if not ready and ahead:
                    # Nothing to answer: build one transfer's next window, then look again.
                    try:
                        ahead.popleft().prepare()
                    except Exception:  # a failing read: the ACK's own path meets it again
                        log.exception("tftp: building a window ahead failed")
                    continue
                if not ready:
                    waited = monotonic()
                    if transfers and gap < SPIN_SECONDS / 2:
                        # Replies have been coming back fast: poll without sleeping for a moment.
                        spin_until = waited + SPIN_SECONDS
                        while not ready and monotonic() < spin_until:
                            ready = epoll.poll(0)
                    if not ready:
                        timeout = max(0.0, timers[0][0] - monotonic()) if timers else -1.0
                        ready = epoll.poll(timeout)
                    if transfers:
                        gap = 0.75 * gap + 0.25 * min(monotonic() - waited, 4 * SPIN_SECONDS)
            except InterruptedError:
                continue
            self.now = now = monotonic()
            for fd, _ in ready:
                handler = handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler()
                except Exception:
                    log.exception("tftp: unexpected failure in the server loop")
            while timers and timers[0][0] <= now:
                transfer = heapq.heappop(timers)[2]
                try:
                    transfer.on_timer(now)
                except Exception:
                    log.exception("tftp: unexpected failure in a transfer timer")

    def _on_listener_readable(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                data, ancdata, _flags, addr = listener.recvmsg(MAX_DATAGRAM, pktinfo.CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("tftp listener: %s", exc)
                return
            # Listening on every address, a transfer answers from the one its request was sent
            # to: PXE firmware takes DATA only from the server it asked (as tftpd-hpa does).
            local = (pktinfo.local_address_of(ancdata) if self._wildcard else None) or self._listen[0]
            try:
                self._on_datagram(data, (str(addr[0]), int(addr[1])), local)
            except Exception:
                log.exception("tftp: unexpected failure handling a request from %s", addr)
            listener = self._listener

    # ------------------------------------------------------------------ requests (loop thread)

    def _on_datagram(self, data: bytes, client: Address, local: str) -> None:
        """A datagram from `client` on the listening port, sent to our address `local`."""
        if not self._accepting or self._listener is None:
            return
        started = time.monotonic()
        generation = self._holder.current()
        try:
            packet = proto.parse_packet(data)
        except proto.TftpError as error:
            self._refuse(client, local, error, generation, "", started)
            return
        if not isinstance(packet, (proto.ReadRequest, proto.WriteRequest)):
            # Stray DATA/ACK/ERROR on the well-known port: tell the sender, record nothing.
            if not isinstance(packet, proto.ErrorPacket):
                self._answer(proto.error_packet(proto.ERR_UNKNOWN_TID, "no transfer on this port"), client, local)
            return
        host = client[0]
        try:
            request = proto_serve.admit(packet, len(self._transfers), self._per_client.get(host, 0), self._admission)
            opened = self._open(request, generation)
        except proto.TftpError as error:
            self._refuse(client, local, error, generation, packet.filename, started)
            return
        try:
            size = opened.size
            negotiated = proto.negotiate(request, size, self._limits)
            source: proto.Source = opened.source
            if negotiated.netascii:
                source = proto.NetasciiSource(source)
            machine = proto.ReadTransfer(source, negotiated, self._limits.max_retries)
        except proto.TftpError as error:
            if opened.closer is not None:
                opened.closer()
            self._refuse(client, local, error, generation, packet.filename, started)
            return
        transfer = _Transfer(
            self,
            machine=machine,
            request=request,
            negotiated=negotiated,
            client=client,
            generation=generation,
            opened=opened,
            started=started,
        )
        self._transfers.add(transfer)
        self.peak_transfers = max(self.peak_transfers, len(self._transfers))
        self._per_client[host] = self._per_client.get(host, 0) + 1
        transfer.start(local)

    def _open(self, request: proto.ReadRequest, generation: Generation | None) -> _Opened:
        """Open what `protocol.tftp_serve` says to serve (TftpError when nothing may be)."""
        policy = proto_serve.RootPolicy(os.path.realpath(self._root), self._allow_outside, self._assets)
        found = proto_serve.resolve(request, generation.files if generation is not None else None, policy,
                                    os.path.realpath, generation.signed_files if generation is not None else None)
        if isinstance(found, proto_serve.FromGeneration):
            return _Opened(proto.BytesSource(found.data), found.size, None)
        paths = found.paths if isinstance(found, proto_serve.FromAssets) else (found.path,)
        fd = -1
        for i, path in enumerate(paths):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
                break
            except OSError as exc:
                if i == len(paths) - 1:
                    raise proto_serve.open_failed(exc) from None
        try:
            info = os.fstat(fd)
            size = proto_serve.served_size(found, stat.S_ISREG(info.st_mode), info.st_size)
        except BaseException:
            os.close(fd)
            raise
        source = _FileSource(fd)
        return _Opened(source, size, source.close)

    def _refuse(
        self,
        client: Address,
        local: str,
        error: proto.TftpError,
        generation: Generation | None,
        filename: str,
        started: float,
    ) -> None:
        # Errors for a request come from the well-known port: no transfer (TID) exists.
        self._answer(error.packet(), client, local)
        self._record(
            client,
            generation=generation,
            filename=filename,
            nbytes=0,
            started=started,
            negotiated=None,
            error=error,
        )

    def _answer(self, datagram: bytes, client: Address, local: str) -> None:
        """Send from the listening port, and from the address `local` the request was sent to."""
        listener = self._listener
        if listener is None:
            return
        with contextlib.suppress(OSError):
            if self._wildcard:
                listener.sendmsg([datagram], pktinfo.from_address(local), 0, client)
            else:
                listener.sendto(datagram, client)

    def _record(
        self,
        client: Address,
        *,
        generation: Generation | None,
        filename: str,
        nbytes: int,
        started: float,
        negotiated: proto.Negotiated | None,
        error: proto.TftpError | None = None,
        finished: proto.Finished | None = None,
    ) -> None:
        mac = self._mac_for_address(client[0]) if self._mac_for_address is not None else None
        node = None
        found = None
        if mac is not None and generation is not None:
            found = generation.state.node_by_mac(mac)
            node = found.name if found is not None else None
        stage = Stage.TFTP
        asset = proto_serve.asset_url_path(filename)
        if asset is not None and generation is not None:
            # a kernel or initrd fetched over TFTP (signed GRUB under Secure Boot) is that stage
            stage = boot.asset_stage(generation.boot_index, found, asset)
        revision = generation.revision if generation is not None else ""
        detail: dict[str, Any] = {
            "file": filename,
            "bytes": nbytes,
            "duration": round(time.monotonic() - started, 6),
            "blksize": negotiated.blksize if negotiated else None,
            "windowsize": negotiated.windowsize if negotiated else None,
        }
        if error is not None:
            detail.update(result="error", error_code=error.code, error=error.message)
        elif finished is not None and finished.ok:
            detail["result"] = "ok"
        elif finished is not None:
            detail.update(result=finished.outcome, error_code=finished.error_code, error=finished.message)
        log.info(
            "tftp %s client=%s file=%s bytes=%d revision=%s mac=%s",
            detail.get("result"),
            client[0],
            filename,
            nbytes,
            revision or "-",
            mac or "-",
        )
        if stage is not Stage.TFTP:
            detail["via"] = "tftp"
        self._recorder.record(stage, revision, mac=mac, node=node, client=client[0], detail=detail)

    def _transfer_done(self, transfer: _Transfer) -> None:
        self._transfers.discard(transfer)
        host = transfer.client[0]
        left = self._per_client.get(host, 1) - 1
        if left > 0:
            self._per_client[host] = left
        else:
            self._per_client.pop(host, None)
        if not self._accepting and not self._transfers and self._on_idle is not None:
            self._on_idle()


class _Transfer:
    """One RRQ in flight: its own port (the TID), the state machine and a retransmit deadline.

    The port has two sockets (docs/SERVERS.md): one connected to the client, which carries the
    transfer, and one unconnected, which answers anyone else ERROR 5 (or, on kernels before 5.4,
    none: SHARED_PORTS). A readable socket is one datagram, received into the server's shared
    buffer; a window of equal-sized DATA packets goes out in one UDP_SEGMENT `sendmsg`.
    """

    def __init__(
        self,
        server: TftpServer,
        *,
        machine: proto.ReadTransfer,
        request: proto.ReadRequest,
        negotiated: proto.Negotiated,
        client: Address,
        generation: Generation | None,
        opened: _Opened,
        started: float,
    ) -> None:
        self._server = server
        self._machine = machine
        self._request = request
        self._negotiated = negotiated
        self.client = client
        self._generation = generation
        self._opened = opened
        self._started = started
        self._sock: socket.socket | None = None  # connected to the client
        self._lobby: socket.socket | None = None  # the same port, for everyone else
        self._deadline = 0.0
        self._armed = False  # an entry for this transfer is in the server's timer heap
        self._timeout = machine.timeout_seconds
        self._done = False
        self.queued = False  # in the server's build-ahead queue
        self._ahead_sends: _Sends | None = None  # the window built ahead, joined for segmentation

    def start(self, host: str) -> None:
        try:
            self._lobby, self._sock = _transfer_sockets(host, self.client)
            if self._lobby is not None:
                self._server.watch(self._lobby.fileno(), self.on_stranger)
            self._server.watch(self._sock.fileno(), self.on_readable)
        except OSError as exc:
            self._close_sockets()
            self._end(proto.Finished(False, 0, proto.ERR_UNDEFINED, f"no socket: {exc}"))
            return
        self._apply(self._machine.start())

    def on_readable(self) -> None:
        """The hot path: one ACK in (the socket is connected: it is the client's), the next DATA
        (or window) out."""
        sock = self._sock
        if sock is None:
            return
        try:
            size = sock.recv_into(self._server.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(exc)
            return
        self._received(size)

    def on_stranger(self) -> None:
        """A datagram on the transfer's port from anyone but the client: ERROR 5, and the
        transfer goes on."""
        lobby = self._lobby
        if lobby is None:
            return
        try:
            size, addr = lobby.recvfrom_into(self._server.buffer)
        except OSError:
            return
        if addr == self.client:  # to another local address of a port on 0.0.0.0: still the client
            self._received(size)
            return
        with contextlib.suppress(OSError):
            lobby.sendto(proto.error_packet(proto.ERR_UNKNOWN_TID, "unknown transfer ID"), addr)

    def _received(self, size: int) -> None:
        """The client's datagram of `size` bytes, in the server's buffer."""
        sock = self._sock
        assert sock is not None
        buffer = self._server.buffer
        if size == 4 and buffer[1] == proto.ACK and buffer[0] == 0:
            wire_block = (buffer[2] << 8) | buffer[3]
            datagram = self._machine.ack_lockstep(wire_block)
            if datagram is None:
                step = self._machine.ack(wire_block)
                if len(step[0]) != 1 or step[1] is not None:
                    self._apply(step)
                    return
                datagram = step[0][0]  # one DATA and the transfer goes on: as lockstep
            try:
                sock.send(datagram)
            except OSError as exc:
                if self._failed(exc):
                    return
            self._deadline = self._server.now + self._timeout
            if not self._armed:
                self._armed = True
                self._server.arm(self, self._deadline)
            return
        try:
            packet = proto.parse_packet(bytes(buffer[:size]))
        except proto.TftpError as error:
            self._send_one(error.packet())
            self._end(proto.Finished(False, self._machine.acknowledged_bytes, error.code, error.message))
            return
        self._apply(self._machine.receive(packet))

    def _send_one(self, datagram: bytes) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(datagram)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> bool:
        """A send or receive failed. The client's port is closed (the kernel reports its ICMP
        port unreachable on the connected socket): the client gave up, so end now, as tftpd-hpa
        does, rather than resend into nothing until the retries run out; True then. Anything
        else (a full send buffer, a network error) is like a lost packet: the timer resends."""
        if isinstance(exc, ConnectionRefusedError):
            self._end(proto.Finished(False, self._machine.acknowledged_bytes, proto.ERR_UNDEFINED,
                                     "the client is gone (port unreachable)"))
            return True
        log.debug("tftp transfer to %s: %s", self.client, exc)
        return False

    def _send(self, datagrams: tuple[bytes, ...]) -> None:
        sock = self._sock
        if sock is None:
            return
        if len(datagrams) == 1 or not self._server._gso:
            for datagram in datagrams:
                self._send_one(datagram)
            return
        sends = self._ahead_sends
        self._ahead_sends = None
        if sends is None or not _same(sends.datagrams, datagrams):
            sends = _Sends(datagrams)
        for batch, payload, ancillary in sends.batches:
            if self._done:
                return
            if not ancillary:
                self._send_one(payload)
                continue
            try:
                sock.sendmsg([payload], ancillary)
            except (BlockingIOError, InterruptedError):
                pass  # the send buffer is full: the window is lost, the timer resends it
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE):
                    log.info("tftp: UDP segmentation offload unavailable (%s); sending packet by packet", exc)
                    self._server._gso = False
                    for datagram in batch:
                        self._send_one(datagram)
                elif self._failed(exc):
                    return

    def _apply(self, step: proto.Step) -> None:
        if self._sock is None:
            return
        datagrams, finished = step
        if datagrams:
            self._send(datagrams)
            if self._done:
                return
        if finished is not None:
            self._end(finished)
            return
        if datagrams:
            self._deadline = self._server.now + self._timeout
            if not self._armed:
                self._armed = True
                self._server.arm(self, self._deadline)
            if self._machine.windowsize > 1:
                self._server.build_ahead(self)

    def prepare(self) -> None:
        """Idle time (server loop): build the window the next ACK will call for."""
        self.queued = False
        if not self._done:
            built = self._machine.prepare()
            if len(built) > 1 and self._server._gso:
                self._ahead_sends = _Sends(built)

    def on_timer(self, now: float) -> None:
        self._armed = False
        if self._done:
            return
        if now < self._deadline:
            # Progress since the timer was armed: sleep until the newer deadline (one timer
            # entry per transfer, re-armed lazily, instead of one per packet).
            self._armed = True
            self._server.arm(self, self._deadline)
            return
        self._apply(self._machine.timeout())

    def abort(self, message: str) -> None:
        if self._done:
            return
        self._send_one(proto.error_packet(proto.ERR_UNDEFINED, message))
        self._end(proto.Finished(False, self._machine.acknowledged_bytes, proto.ERR_UNDEFINED, message))

    def _end(self, finished: proto.Finished) -> None:
        if self._done:
            return
        self._done = True
        self._close_sockets()
        if self._opened.closer is not None:
            self._opened.closer()
        self._server._record(
            self.client,
            generation=self._generation,
            filename=self._request.filename,
            nbytes=finished.bytes_sent,
            started=self._started,
            negotiated=self._negotiated,
            finished=finished,
        )
        self._server._transfer_done(self)

    def _close_sockets(self) -> None:
        for sock in (self._sock, self._lobby):
            if sock is not None:
                if sock.fileno() >= 0:
                    self._server.unwatch(sock.fileno())
                sock.close()
        self._sock = self._lobby = None


def _transfer_sockets(host: str, client: Address) -> tuple[socket.socket | None, socket.socket]:
    """A fresh port on `host` for one transfer: (its unconnected socket or None, its socket
    connected to `client`). See `_Transfer`."""
    lobby = _lobby_socket(host)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        if lobby is not None:
            lobby.close()
        raise
    try:
        sock.setblocking(False)
        if lobby is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, lobby.getsockname()[1] if lobby is not None else 0))
        sock.connect(client)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        if lobby is not None:
            # Between bind and connect it was an unconnected socket of the group: drop what a
            # stranger may have sent it then (the client cannot know the port yet).
            for _ in range(1024):
                try:
                    sock.recv(1)
                except BlockingIOError:
                    break
                except OSError:  # an ICMP error queued for the port: reading it clears it
                    continue
    except OSError:
        sock.close()
        if lobby is not None:
            lobby.close()
        raise
    return lobby, sock


def _lobby_socket(host: str) -> socket.socket | None:
    """An unconnected socket on a fresh port of `host` that the transfer's connected socket may
    then share; None where it cannot. SO_REUSEPORT is set after the bind: set before, the kernel
    counts a port that another socket of this user shares as free, and two transfers (or a
    transfer and another process of the same user) could get one port."""
    if not SHARED_PORTS:
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        sock.close()
        return None
    return sock


def _same(a: tuple[bytes, ...], b: tuple[bytes, ...]) -> bool:
    """Whether two windows of one transfer hold the same datagram objects. Windows are runs of
    consecutive blocks, so equal length and the same first and last object are enough."""
    return len(a) == len(b) and a[0] is b[0] and a[-1] is b[-1]


class _Sends:
    """A window as the system calls that send it: per run of datagrams the kernel can segment,
    the run, its payload joined, and the UDP_SEGMENT ancillary data (none for a lone datagram)."""

    __slots__ = ("batches", "datagrams")

    def __init__(self, datagrams: tuple[bytes, ...]) -> None:
        self.datagrams = datagrams
        self.batches: list[tuple[tuple[bytes, ...], bytes, list[tuple[int, int, bytes]]]] = [
            (batch, b"".join(batch), [(socket.IPPROTO_UDP, UDP_SEGMENT, _GSO_SIZE.pack(segment))])
            if len(batch) > 1
            else (batch, batch[0], [])
            for batch, segment in _gso_batches(datagrams)
        ]


def _gso_batches(datagrams: tuple[bytes, ...]) -> list[tuple[tuple[bytes, ...], int]]:
    """Split consecutive datagrams into runs the kernel can segment: equal sizes (the last of
    a run may be shorter), at most UDP_MAX_SEGMENTS of them, under the 64 KiB UDP limit."""
    batches: list[tuple[tuple[bytes, ...], int]] = []
    start = 0
    count = len(datagrams)
    while start < count:
        size = len(datagrams[start])
        end = start + 1
        total = size
        while (
            end < count
            and end - start < _UDP_MAX_SEGMENTS
            and total + len(datagrams[end]) <= _GSO_MAX_BYTES
            and len(datagrams[end - 1]) == size
            and len(datagrams[end]) <= size
        ):
            total += len(datagrams[end])
            end += 1
        batches.append((datagrams[start:end], size))
        start = end
    return batches
