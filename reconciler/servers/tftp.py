"""The TFTP server: UDP sockets on one asyncio loop in one background thread; no policy.

Role: receive RRQs on the configured address, open what `reconciler.protocol.tftp` says to
serve (a generation's `tftp/<path>` bytes, else a file under the TFTP root), and shuttle
datagrams between the client and a `ReadTransfer` state machine on a fresh ephemeral port
(the transfer's TID), with one timer per transfer. Every finished or refused transfer is
reported as one `BootEvent(stage="tftp")`.

Caller: the daemon (`reconciler.daemon`) builds one `TftpServer`, calls `start()` and, on
shutdown, `stop(timeout)`; `/status` reads `active_transfers`. Tests and `bench/tftp.py`
run it on 127.0.0.1 with port 0.

Concurrency: all transfers share one event loop thread (no thread per transfer); the only
blocking calls are local file opens and preads, which are short.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reconciler.core.events import EventSink
from reconciler.core.model import BootEvent
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import tftp as proto

log = logging.getLogger(__name__)

Address = tuple[str, int]

# Debian's `ipxe` package installs /usr/lib/ipxe/ipxe.efi and ipxe.lkrn as symlinks into
# /boot. These exact files (and nothing else outside the root) may be reached through a
# symlink that lives in the root; every other symlink pointing out of the root is refused.
DEBIAN_IPXE_OUTSIDE = (Path("/boot/ipxe.efi"), Path("/boot/ipxe.lkrn"))

GENERATION_PREFIX = "tftp/"
DEFAULT_LIMITS = proto.Limits()

# Linux UDP generic segmentation offload (linux/udp.h); Python 3.11 has no constant for it.
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_UDP_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_GSO_SIZE = struct.Struct("=H")


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


def _netascii_size_of_fd(fd: int) -> int:
    total = 0
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        total += proto.netascii_size(chunk)
        offset += len(chunk)
    return total


class _Opened:
    def __init__(self, source: proto.Source, size: int, closer: Callable[[], None] | None) -> None:
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
    ) -> None:
        self._listen = listen
        self._root = Path(root)
        self._holder = holder
        self._events = events
        self._max_transfers = max_transfers
        self._max_per_client = max_per_client
        self._mac_for_address = mac_for_address
        self._limits = limits
        self._allow_outside = tuple(os.path.realpath(p) for p in allow_outside_root)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: asyncio.DatagramTransport | None = None
        self._address: Address | None = None
        self._transfers: set[_Transfer] = set()
        self._per_client: dict[str, int] = {}
        self._accepting = False
        self._on_idle: Callable[[], None] | None = None
        self._gso = sys.platform == "linux"  # switched off at the first send the kernel refuses

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> Address:
        if self._address is None:
            raise RuntimeError("TftpServer not started")
        return self._address

    @property
    def active_transfers(self) -> int:
        return len(self._transfers)

    def start(self) -> None:
        """Bind the listening socket and serve in a background thread; returns once bound."""
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def bind() -> None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Listener(self), local_addr=self._listen, reuse_port=False
            )
            self._listener = transport
            sockname = transport.get_extra_info("sockname")
            self._address = (str(sockname[0]), int(sockname[1]))
            self._accepting = True

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(bind())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="tftp-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        log.info("tftp listening on %s:%d root=%s", *self.address, self._root)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting RRQs, let transfers finish for up to `timeout` seconds, then close."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        done = threading.Event()

        def begin() -> None:
            self._accepting = False
            if self._listener is not None:
                self._listener.close()
            if not self._transfers:
                done.set()

        self._on_idle = done.set
        loop.call_soon_threadsafe(begin)
        done.wait(timeout)

        def finish() -> None:
            for transfer in list(self._transfers):
                transfer.abort("server stopping")
            loop.stop()

        loop.call_soon_threadsafe(finish)
        thread.join(max(timeout, 1.0))
        self._thread = None
        self._loop = None

    # ------------------------------------------------------------------ requests (loop thread)

    def _on_datagram(self, data: bytes, client: Address) -> None:
        if not self._accepting or self._listener is None:
            return
        started = time.monotonic()
        generation = self._holder.current()
        try:
            packet = proto.parse_packet(data)
        except proto.TftpError as error:
            self._refuse(client, error, generation, "", started)
            return
        if isinstance(packet, proto.WriteRequest):
            self._refuse(
                client,
                proto.TftpError(proto.ERR_ACCESS, "writes are not allowed"),
                generation,
                packet.filename,
                started,
            )
            return
        if not isinstance(packet, proto.ReadRequest):
            # Stray DATA/ACK/ERROR on the well-known port: tell the sender, record nothing.
            if not isinstance(packet, proto.ErrorPacket):
                self._listener.sendto(proto.error_packet(proto.ERR_UNKNOWN_TID, "no transfer on this port"), client)
            return
        host = client[0]
        if len(self._transfers) >= self._max_transfers:
            self._refuse(
                client,
                proto.TftpError(proto.ERR_UNDEFINED, "server busy, try again"),
                generation,
                packet.filename,
                started,
            )
            return
        if self._per_client.get(host, 0) >= self._max_per_client:
            self._refuse(
                client,
                proto.TftpError(proto.ERR_UNDEFINED, "too many transfers from this client"),
                generation,
                packet.filename,
                started,
            )
            return
        try:
            opened = self._open(packet, generation)
        except proto.TftpError as error:
            self._refuse(client, error, generation, packet.filename, started)
            return
        try:
            size = opened.size
            negotiated = proto.negotiate(packet, size, self._limits)
            source: proto.Source = opened.source
            if negotiated.netascii:
                source = proto.NetasciiSource(source)
            machine = proto.ReadTransfer(source, negotiated, self._limits.max_retries)
        except proto.TftpError as error:
            if opened.closer is not None:
                opened.closer()
            self._refuse(client, error, generation, packet.filename, started)
            return
        transfer = _Transfer(
            self,
            machine=machine,
            request=packet,
            negotiated=negotiated,
            client=client,
            generation=generation,
            opened=opened,
            started=started,
        )
        self._transfers.add(transfer)
        self._per_client[host] = self._per_client.get(host, 0) + 1
        assert self._loop is not None
        transfer.start(self._listen[0])

    def _open(self, request: proto.ReadRequest, generation: Generation | None) -> _Opened:
        relative = proto.request_path(request.filename)
        netascii = request.mode == "netascii"
        if generation is not None:
            data = generation.files.get(GENERATION_PREFIX + relative)
            if data is not None:
                size = proto.netascii_size(data) if netascii else len(data)
                return _Opened(proto.BytesSource(data), size, None)
        root = os.path.realpath(self._root)
        resolved = os.path.realpath(os.path.join(root, relative))
        if not (proto.path_is_within(resolved, root) or resolved in self._allow_outside):
            # Exists or not, say nothing about what lies outside the root.
            raise proto.TftpError(proto.ERR_ACCESS, "access violation")
        try:
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise proto.TftpError(proto.ERR_NOT_FOUND, "file not found") from None
        except OSError:
            raise proto.TftpError(proto.ERR_ACCESS, "access violation") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise proto.TftpError(proto.ERR_NOT_FOUND, "file not found")
            size = _netascii_size_of_fd(fd) if netascii else info.st_size
        except BaseException:
            os.close(fd)
            raise
        source = _FileSource(fd)
        return _Opened(source, size, source.close)

    def _refuse(
        self,
        client: Address,
        error: proto.TftpError,
        generation: Generation | None,
        filename: str,
        started: float,
    ) -> None:
        if self._listener is not None:
            # Errors for a request come from the well-known port: no transfer (TID) exists.
            self._listener.sendto(error.packet(), client)
        self._record(
            client,
            generation=generation,
            filename=filename,
            nbytes=0,
            started=started,
            negotiated=None,
            error=error,
        )

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
        if mac is not None and generation is not None:
            found = generation.state.node_by_mac(mac)
            node = found.name if found is not None else None
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
        try:
            self._events.record(
                BootEvent(
                    time=time.time(),
                    stage="tftp",
                    revision=revision,
                    mac=mac,
                    node=node,
                    client=client[0],
                    detail=detail,
                )
            )
        except Exception:  # a broken sink must not take the server down
            log.exception("tftp: recording a boot event failed revision=%s mac=%s", revision, mac)

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


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: TftpServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._server._on_datagram(data, (str(addr[0]), int(addr[1])))
        except Exception:
            log.exception("tftp: unexpected failure handling a request from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("tftp listener: %s", exc)


class _Transfer:
    """One RRQ in flight: its own socket (the TID), the state machine and a retransmit deadline.

    The socket is a plain non-blocking one watched with `loop.add_reader` rather than an
    asyncio transport: ACKs take a short path, and a window of equal-sized DATA packets goes
    out in one `sendmsg` with UDP generic segmentation offload (UDP_SEGMENT) where the kernel
    has it, instead of one system call per block.
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
        self._sock: socket.socket | None = None
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def start(self, host: str) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            self._end(proto.Finished(False, 0, proto.ERR_UNDEFINED, f"no socket: {exc}"))
            return
        try:
            sock.setblocking(False)
            sock.bind((host, 0))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            self._loop.add_reader(sock.fileno(), self._on_readable)
        except OSError as exc:
            sock.close()
            self._end(proto.Finished(False, 0, proto.ERR_UNDEFINED, f"no socket: {exc}"))
            return
        self._sock = sock
        self._apply(self._machine.start())

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None and not self._done:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP port unreachable and the like: the client may be gone; the retry
                # budget ends the transfer if it is.
                log.debug("tftp transfer to %s: %s", self.client, exc)
                continue
            if (addr[0], addr[1]) != self.client:
                self._send_to(proto.error_packet(proto.ERR_UNKNOWN_TID, "unknown transfer ID"), addr)
                continue
            if len(data) == 4 and data[0] == 0 and data[1] == proto.ACK:
                self._apply(self._machine.ack((data[2] << 8) | data[3]))
                continue
            try:
                packet = proto.parse_packet(data)
            except proto.TftpError as error:
                self._send_to(error.packet(), self.client)
                self._end(proto.Finished(False, self._machine.acknowledged_bytes, error.code, error.message))
                return
            self._apply(self._machine.receive(packet))

    def _send_to(self, datagram: bytes, address: Address) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(datagram, address)
        except OSError as exc:  # a full send buffer or an ICMP error: like a lost packet
            log.debug("tftp send to %s: %s", address, exc)

    def _send(self, datagrams: tuple[bytes, ...]) -> None:
        sock = self._sock
        if sock is None:
            return
        if len(datagrams) == 1 or not self._server._gso:
            for datagram in datagrams:
                self._send_to(datagram, self.client)
            return
        for batch, segment in _gso_batches(datagrams):
            if len(batch) == 1:
                self._send_to(batch[0], self.client)
                continue
            try:
                sock.sendmsg(
                    [b"".join(batch)], [(socket.IPPROTO_UDP, UDP_SEGMENT, _GSO_SIZE.pack(segment))], 0, self.client
                )
            except (BlockingIOError, InterruptedError):
                pass  # the send buffer is full: the window is lost, the timer resends it
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE):
                    log.info("tftp: UDP segmentation offload unavailable (%s); sending packet by packet", exc)
                    self._server._gso = False
                    for datagram in batch:
                        self._send_to(datagram, self.client)
                else:
                    log.debug("tftp send to %s: %s", self.client, exc)

    def _apply(self, step: proto.Step) -> None:
        if self._sock is None:
            return
        if step.datagrams:
            self._send(step.datagrams)
        if step.finished is not None:
            self._end(step.finished)
            return
        if step.datagrams:
            self._deadline = self._loop.time() + self._machine.timeout_seconds
            if self._timer is None:
                self._timer = self._loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._done:
            return
        now = self._loop.time()
        if now < self._deadline:
            # Progress since the timer was armed: sleep until the newer deadline (one timer
            # per transfer, re-armed lazily, instead of one per packet).
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._apply(self._machine.timeout())

    def abort(self, message: str) -> None:
        if self._done:
            return
        self._send_to(proto.error_packet(proto.ERR_UNDEFINED, message), self.client)
        self._end(proto.Finished(False, self._machine.acknowledged_bytes, proto.ERR_UNDEFINED, message))

    def _end(self, finished: proto.Finished) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
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
