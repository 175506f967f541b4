"""The HTTP server: waitress serving the boot WSGI app (matchbox-compatible endpoints) and the daemon's apps.

Role: `make_boot_app` builds the WSGI app for CONTRACT §3 (`/boot.ipxe`, `/ipxe`, `/grub`,
`/metadata`, `/generic`, `/cloud-init/<mac>/<file>`, `/assets/<path>`, each also pinned under
`/r/<sha>/`, 410 once that generation is gone); paths in `extra` (`/status`, `/report/`, `/ui/`,
...) go to the daemon's apps, longest prefix first. Policy lives in `core.boot` and
`core.asset_paths`; each request takes ONE Generation and records one boot event.
`HttpServer` runs waitress in one thread, tuned for boot storms and slow clients.

Caller: the daemon's run command builds `make_boot_app(...)` and `HttpServer(listen, app)`, calls
`start()` and `stop(timeout)`. Tests and `bench/http.py` run it on 127.0.0.1 port 0.

Why the waitress subclasses (files sent from the I/O thread by sendfile, the yielding
dispatcher, empty HEAD bodies, the per-address cap and header deadline): docs/SERVERS.md.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher
from werkzeug.http import HTTP_STATUS_CODES

from reconciler.core import asset_paths, boot
from reconciler.core.bootfiles import DEBIAN_IPXE_OUTSIDE
from reconciler.core.events import EventSink, Stage
from reconciler.core.model import Node
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers import prefer_short_gil_turns
from reconciler.servers.health import Health
from reconciler.servers.http_assets import AssetRoot, asset_response
from reconciler.servers.recorder import BootRecorder

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Reply = WsgiApp  # what a handler returns: werkzeug's Response (assets) or a _Plain

MAX_URI = 8192  # bytes of request target; waitress bounds the whole header block separately
MAX_REQUEST_HEADER_SIZE = 32 * 1024
MAX_REQUEST_BODY_SIZE = 32 * 1024 * 1024  # webhooks (GitHub allows 25 MB payloads) and reports


class BootApp:
    """The WSGI app of `make_boot_app`. One instance per daemon; thread-safe."""

    def __init__(
        self,
        holder: GenerationHolder,
        events: EventSink,
        assets_dir: Path | None,
        extra: Mapping[str, WsgiApp],
        installed: Callable[[Node], bool] | None = None,
        mac_for_address: Callable[[str], str | None] | None = None,
        trust_any_client: bool = False,
        ipxe_root: Path | None = None,
        ipxe_outside: Sequence[Path] = DEBIAN_IPXE_OUTSIDE,
    ) -> None:
        self._holder = holder
        self._ipxe = AssetRoot(ipxe_root, ipxe_outside) if ipxe_root is not None else None
        self._installed = installed
        self._mac_for_address = mac_for_address
        self._trust_any_client = trust_any_client
        self._recorder = BootRecorder(events, "http")
        self._assets = AssetRoot(assets_dir) if assets_dir is not None else None
        self._extra = sorted(extra.items(), key=lambda item: len(item[0]), reverse=True)

    # -- entry -------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        for prefix, app in self._extra:
            if _under(path, prefix):
                return _head_safe(environ, app(environ, start_response))
        resp = self._boot(environ, path)
        return _head_safe(environ, resp(environ, start_response))

    # -- routing -----------------------------------------------------------------------------

    def _boot(self, environ: dict[str, Any], path: str) -> Reply:
        if len(environ.get("REQUEST_URI", "")) > MAX_URI:
            return _text(414, "request target too long\n")
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _text(405, f"{method} is not allowed here\n", headers=(("Allow", "GET, HEAD"),))
        if path == "/":
            return _text(200, "netboot-reconcile\n")
        sha, rest = boot.strip_revision(path)
        if sha is not None:
            generation = self._holder.get(sha)
            if generation is None:
                return self._gone(environ, sha, rest)
        else:
            generation = self._holder.current()
        if rest.startswith("/assets/"):
            return self._asset(environ, generation, rest)
        if generation is None:
            return _text(503, "no generation is being served yet\n", headers=(("Retry-After", "5"),))
        index = generation.boot_index
        if rest in ("/boot.ipxe", "/boot.ipxe.0"):
            return self._bootstrap(environ, generation, index, rest)
        if rest[1:] in boot.ENDPOINTS:
            return self._script(environ, generation, index, cast(boot.Endpoint, rest[1:]))
        if rest.startswith("/cloud-init/"):
            return self._cloud_init(environ, generation, index, rest)
        return _text(404, f"no such endpoint: {rest}\n")

    # -- handlers ----------------------------------------------------------------------------

    def _bootstrap(self, environ: dict[str, Any], generation: Generation, index: boot.BootIndex, path: str) -> Reply:
        labels = boot.labels_from_query(environ.get("QUERY_STRING", ""))
        node = boot.node_for_client(index, labels, environ.get("REMOTE_ADDR"))
        body = boot.bootstrap(generation.files)
        self._record(environ, Stage.IPXE_BOOTSTRAP, generation.revision, node, None, path, 200, len(body))
        return _text(200, body)

    def _script(
        self, environ: dict[str, Any], generation: Generation, index: boot.BootIndex, endpoint: boot.Endpoint
    ) -> Reply:
        query = environ.get("QUERY_STRING", "")
        labels = boot.labels_from_query(query)
        answer = boot.answer_boot(
            endpoint, index, generation.files, labels, query, self._installed, self._client(environ)
        )
        mac = boot.request_mac(labels)
        extra: dict[str, Any] = {"endpoint": endpoint, "labels": labels}
        if answer.local_disk:
            extra["local_disk"] = answer.local_disk
        if answer.target:
            extra["target"] = answer.target
        if answer.refused:
            extra["refused"] = "wrong-client"
        if answer.reason:
            extra["reason"] = answer.reason
            log.log(logging.WARNING if answer.refused else logging.INFO, "http %s %d revision=%s mac=%s: %s",
                    endpoint, answer.status, generation.revision, mac or "-", answer.reason)
        self._record(
            environ,
            answer.stage,
            generation.revision,
            answer.node,
            mac,
            "/" + endpoint,
            answer.status,
            len(answer.body),
            extra,
        )
        return _text(answer.status, answer.body, answer.content_type)

    def _cloud_init(self, environ: dict[str, Any], generation: Generation, index: boot.BootIndex, path: str) -> Reply:
        parts = path[len("/cloud-init/") :].split("/")
        if len(parts) != 2:
            return _text(404, "expected /cloud-init/<mac>/user-data, meta-data, vendor-data or network-config\n")
        mac_text, name = parts
        answer = boot.answer_cloud_init(index, generation.files, mac_text, name, self._client(environ))
        known = answer.status == 200 or answer.node is not None
        stage = boot.cloud_init_stage(name, known)
        mac = boot.parse_mac(mac_text)
        extra = {"reason": answer.reason} if answer.reason else {}
        if answer.refused:
            extra["refused"] = "wrong-client"
        if answer.reason:
            log.log(logging.WARNING if answer.refused else logging.INFO, "http cloud-init %d revision=%s mac=%s: %s",
                    answer.status, generation.revision, mac or "-", answer.reason)
        self._record(
            environ, stage, generation.revision, answer.node, mac, path, answer.status, len(answer.body), extra
        )
        return _text(answer.status, answer.body, answer.content_type)

    def _asset(self, environ: dict[str, Any], generation: Generation | None, path: str) -> Reply:
        revision = generation.revision if generation is not None else ""
        node: Node | None = None
        stage = Stage.ASSET
        labels = boot.labels_from_query(environ.get("QUERY_STRING", ""))
        if generation is not None:
            index = generation.boot_index
            node = boot.node_for_client(index, labels, environ.get("REMOTE_ADDR"))
            stage = boot.asset_stage(index, node, path)
        mac = boot.request_mac(labels) or (node.mac if node is not None else None)
        opened = None
        raw_uri = environ.get("REQUEST_URI", path)
        if self._assets is not None:
            opened = self._assets.open(path[len("/assets/") :], raw_uri, revision or None)
        if opened is None and self._ipxe is not None and generation is not None:
            # UEFI HTTP boot is given <server_url>/assets/ipxe/<boot file> by DHCP: the site's iPXE
            # binaries, from the TFTP root when --assets-dir has no such file.
            name = asset_paths.ipxe_binary(path, generation.state.site.boot_files)
            if name is not None:
                opened = self._ipxe.open(name, raw_uri)
        if opened is None:
            log.info("http asset 404 revision=%s mac=%s path=%r", revision or "-", mac or "-", path)
            self._record(environ, stage, revision, node, mac, path, 404, 0)
            return _text(404, "no such asset\n")
        if environ["REQUEST_METHOD"] != "GET":
            resp = asset_response(environ, opened)
            self._record(environ, stage, revision, node, mac, path, resp.status_code, 0)
            return resp
        started, begun = time.monotonic(), self._recorder.now()
        facts = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": environ.get("REMOTE_ADDR")}

        def ended(sent: int, length: int) -> None:
            # recorded when the body's transfer ends, stamped when it began: a kernel the client
            # stopped reading half-way is `aborted` and moves no outcome (`outcomes.delivered`).
            # `sent` is what the socket took: the last socket buffer's worth may still be in flight
            result = "ok" if sent == length else "aborted"
            if result != "ok":
                log.info("http asset aborted revision=%s mac=%s path=%r after %d of %d bytes",
                         revision or "-", mac or "-", path, sent, length)
            self._record(facts, stage, revision, node, mac, path, status, sent,
                         {"result": result, "length": length, "duration": round(time.monotonic() - started, 6)},
                         at=begun)

        resp = asset_response(environ, opened, ended)
        status = resp.status_code
        if status not in (200, 206):  # 304, 416: no body, nothing more to wait for
            self._record(environ, stage, revision, node, mac, path, status, 0)
        return resp

    def _gone(self, environ: dict[str, Any], sha: str, rest: str) -> Reply:
        reason = f"revision {sha} is unknown or no longer kept; kept: {boot.known_revisions(self._holder.retained())}"
        labels = boot.labels_from_query(environ.get("QUERY_STRING", ""))
        mac = boot.request_mac(labels)
        log.info("http 410 revision=%s mac=%s path=%r", sha, mac or "-", rest)
        self._record(environ, boot.stage_of(rest), sha, None, mac, rest, 410, 0, {"reason": reason})
        return _text(410, reason + "\n")

    # -- helpers -----------------------------------------------------------------------------

    def _client(self, environ: dict[str, Any]) -> boot.Client | None:
        """The requester, for `boot.client_refusal`; None when any client is trusted (or none is known)."""
        address = environ.get("REMOTE_ADDR")
        if self._trust_any_client or not address:
            return None
        return boot.Client(str(address), self._holder_of if self._mac_for_address is not None else None)

    def _holder_of(self, address: str) -> str | None:
        assert self._mac_for_address is not None
        try:
            return self._mac_for_address(address)
        except Exception:  # a broken lease lookup knows nothing; it must not fail a boot
            log.exception("lease lookup failed revision=- mac=-")
            return None

    def _record(
        self,
        environ: dict[str, Any],
        stage: Stage,
        revision: str,
        node: Node | None,
        mac: str | None,
        path: str,
        status: int,
        nbytes: int,
        extra: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        detail: dict[str, Any] = {"path": path, "status": status, "bytes": nbytes, "method": environ["REQUEST_METHOD"]}
        if extra:
            detail.update(extra)
        self._recorder.record(stage, revision, mac=mac or (node.mac if node is not None else None),
                              node=node.name if node is not None else None, client=environ.get("REMOTE_ADDR"),
                              detail=detail, at=at)


def _under(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")


class _Plain:
    """A small in-memory answer (script, seed file, error text) as a WSGI app, without werkzeug.

    Same status line, Content-Type and Content-Length as werkzeug's `Response(body, status,
    content_type)`, in a tenth of the time: this is every iPXE script request.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response(_status_line(self.status), self.headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:  # werkzeug's spelling ("404 NOT FOUND"), as before
        line = _STATUS_LINES[status] = f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"
    return line


def _text(
    status: int, body: str | bytes, content_type: str = boot.TEXT, headers: tuple[tuple[str, str], ...] = ()
) -> _Plain:
    data = body.encode() if isinstance(body, str) else body
    return _Plain(status, data, [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers])


def _head_safe(environ: dict[str, Any], result: Iterable[bytes]) -> Iterable[bytes]:
    """For HEAD, never hand waitress a body (see the module docstring); otherwise pass through as is."""
    if environ.get("REQUEST_METHOD") != "HEAD":
        return result
    if isinstance(result, (list, tuple)) and not result:
        return result
    try:
        if not isinstance(result, ReadOnlyFileBasedBuffer):
            for _ in result:  # PEP 3333 allows start_response on the first iteration
                pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return []


def make_boot_app(
    holder: GenerationHolder,
    events: EventSink,
    assets_dir: Path | None,
    extra: Mapping[str, WsgiApp] = {},  # read-only, never mutated
    installed: Callable[[Node], bool] | None = None,
    *,
    mac_for_address: Callable[[str], str | None] | None = None,
    trust_any_client: bool = False,
    ipxe_root: Path | None = None,
    ipxe_outside: Sequence[Path] = DEBIAN_IPXE_OUTSIDE,
) -> WsgiApp:
    """The WSGI app for every HTTP path: boot endpoints here, `extra` prefixes to the daemon's apps.

    `installed(node)`: whether the node reported a successful install at its reinstall counter
    (the results store answers it, in memory); `install_once` profiles then boot the local disk.
    `mac_for_address(ip)`: the MAC the embedded DHCP server reserved or leased `ip` to, if any.
    A node's seed, script and metadata go only to a client whose address may be that node's
    (`core.boot.client_refusal`), unless `trust_any_client` (NAT, relays: every request from one address).
    `ipxe_root` (the TFTP root): `/assets/ipxe/<name>` for the site's iPXE binaries (`boot_files`)
    when `assets_dir` has no such file; of the files outside it, only `ipxe_outside` (Debian's
    symlinks into /boot) may be reached through a symlink, as over TFTP."""
    return BootApp(holder, events, assets_dir, extra, installed, mac_for_address, trust_any_client, ipxe_root,
                   ipxe_outside)


# Slow clients (issue 21): connections one source address may hold open at once (beyond: refused
# with a 503 and closed), and the seconds a request may take to send its complete headers.
MAX_CONNECTIONS_PER_ADDRESS = 100
HEADER_TIMEOUT = 20.0
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n"
            b"Connection: close\r\n\r\n")


class _Admission:
    """Per source address connection counts of one waitress server, and the slow-client bounds.

    Counted on accept (the I/O thread) and on close (the I/O thread or a worker whose send found
    the client gone), hence the lock. Refusals are logged at most once per LOG_INTERVAL."""

    LOG_INTERVAL = 10.0

    def __init__(self, max_per_address: int, header_timeout: float) -> None:
        self.max_per_address = max_per_address
        self.header_timeout = header_timeout
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self.refused = 0  # connections refused for the per-address cap, since start
        self.header_timeouts = 0  # connections closed for headers not complete in time
        self._logged_at = 0.0
        self._unlogged = 0

    def admit(self, host: str) -> bool:
        with self._lock:
            count = self._open.get(host, 0)
            if count < self.max_per_address:
                self._open[host] = count + 1
                return True
            self.refused += 1
            self._unlogged += 1
            now = time.monotonic()
            if now - self._logged_at < self.LOG_INTERVAL:
                return False
            self._logged_at, unlogged, self._unlogged = now, self._unlogged, 0
        log.warning("http: refused %d connection(s) from %s: it holds %d open, the most one address may "
                    "(slow or flooding client?) revision=- mac=-", unlogged, host, self.max_per_address)
        return False

    def release(self, host: str) -> None:
        with self._lock:
            left = self._open.get(host, 1) - 1
            if left > 0:
                self._open[host] = left
            else:
                self._open.pop(host, None)

    def maintenance(self, channels: Iterable[Any]) -> None:
        """Close every connection whose request headers are overdue (I/O thread, about once a second)."""
        now = time.monotonic()
        for channel in channels:
            deadline = getattr(channel, "header_deadline", None)
            if deadline is not None and deadline <= now and not channel.requests and not channel.will_close:
                channel.will_close = True  # closed by waitress at its next write turn
                self.header_timeouts += 1
                log.info("http: closed a connection from %s: no complete request headers within %.0f s "
                         "revision=- mac=-", channel.addr[0] if channel.addr else "?", self.header_timeout)


# Bytes one connection may send per turn of waitress's I/O loop before the loop serves the others
# (accepts, reads, other downloads). See StreamingChannel; bench/http.py --turn-kib measures it.
TURN_BYTES = 128 << 10

_DISCONNECTED = frozenset(
    {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE, errno.EBADF}
)


class StreamingChannel(HTTPChannel):
    """waitress's channel: file bodies sent by sendfile(2) from the I/O thread, `TURN_BYTES` per
    turn, so workers stay free for scripts (docs/SERVERS.md); a per-address connection cap and a
    deadline for complete request headers (`_Admission`). A file that ends before its
    Content-Length closes the connection (waitress would spin on a writable socket).
    """

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        admission: _Admission | None = getattr(server, "admission", None)
        self._host = str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)
        self._admission = admission
        if admission is not None and not admission.admit(self._host):
            # Over the per-address cap: a short 503 and close, before this becomes a channel
            # (waitress's handle_accept keeps no reference to it).
            self._admission = None
            with contextlib.suppress(OSError):
                sock.send(_REFUSED)
            sock.close()
            return
        self.io_thread = threading.get_ident()  # channels are made by handle_accept, on the I/O thread
        self.turn_bytes: int = getattr(server, "turn_bytes", TURN_BYTES)
        self._sending: ReadOnlyFileBasedBuffer | None = None  # the file being sent, and where it is
        self._offset = 0
        # When the request being received must have all its headers (None: no request head is
        # being waited for). waitress's channel_timeout is reset by every byte, so a client
        # trickling a byte a second would hold the connection for good without it.
        timeout = admission.header_timeout if admission is not None else None
        self.header_deadline: float | None = time.monotonic() + timeout if timeout is not None else None
        super().__init__(server, sock, addr, adj, map=map)

    def received(self, data: bytes) -> bool:
        admission = self._admission
        if admission is None or not data:
            return bool(super().received(data))
        request = self.request
        if self.header_deadline is None and (request is None or not request.headers_finished):
            self.header_deadline = time.monotonic() + admission.header_timeout  # a new request head begins
        result = bool(super().received(data))
        request = self.request
        if request is not None:
            if request.headers_finished:
                self.header_deadline = None
        elif data.strip(b"\r\n"):
            self.header_deadline = None  # a request was completed and queued (blank lines complete nothing)
        return result

    def del_channel(self, map: Any = None) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.release(self._host)
        super().del_channel(map)

    def _flush_some(self, do_close: bool = True) -> bool:
        on_io = threading.get_ident() == self.io_thread
        budget = self.turn_bytes if on_io else -1
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            remain = outbuf.__len__()
            if remain > 0 and isinstance(outbuf, ReadOnlyFileBasedBuffer):
                if not on_io:
                    break
                n = self._send_file(outbuf, remain if budget < 0 else min(remain, budget - sent), do_close)
            elif remain > 0:
                n = self.send(outbuf.get(self.sendbuf_len), do_close=do_close)
                if n:
                    outbuf.skip(n, True)
            else:
                if len(self.outbufs) == 1:
                    break  # outbufs[-1] stays: it is the writable one
                done = cast(list[Any], self.outbufs).pop(0)
                if done is self._sending:
                    self._sending = None
                try:
                    done.close()
                except Exception:
                    log.exception("closing a sent buffer failed revision=- mac=-")
                continue
            if not n:
                break
            sent += n
            self.total_outbufs_len -= n
            if 0 <= budget <= sent and outbuf.__len__() > 0:
                break  # a buffer just emptied is popped and closed first (its transfer is recorded then)
        if sent:
            self.last_activity = time.time()
            return True
        return False

    def _send_file(self, outbuf: ReadOnlyFileBasedBuffer, count: int, do_close: bool) -> int:
        f = outbuf.file
        try:
            fd = f.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (BytesIO...): waitress's way
            data = outbuf.get(min(count, self.sendbuf_len))
            if not data:
                raise OSError(errno.EIO, "file body ended before its Content-Length") from None
            n: int = self.send(data, do_close=do_close)
            if n:
                outbuf.skip(n, True)
            return n
        if outbuf is not self._sending:  # a new file, positioned by the app (a range start)
            self._sending, self._offset = outbuf, f.tell()
        sock = self.socket
        assert sock is not None
        try:
            n = os.sendfile(sock.fileno(), fd, self._offset, count)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            raise
        if n == 0:
            raise OSError(errno.EIO, "file body ended before its Content-Length")
        self._offset += n
        outbuf.remain -= n
        return n


class _QueueDepthSummary(logging.Filter):
    """waitress's "Task queue depth is N" at most once per `interval`, with the deepest seen meanwhile.

    waitress logs that warning for every request queued behind busy workers, from the I/O thread
    while it holds the task queue's lock: under a boot storm, thousands of lines a second, each
    formatted and written on the request path. The filter runs before any formatting.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._until = 0.0
        self._deepest = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        depth = args[0] if isinstance(args, tuple) and args and isinstance(args[0], int) else 0
        self._deepest = max(self._deepest, depth)
        now = time.monotonic()
        if now < self._until:
            self._suppressed += 1
            return False
        record.msg = (
            "all workers busy: %d request(s) queued, at most %d since the last such line (%d suppressed)"
            " revision=- mac=-"
        )
        record.args = (depth, self._deepest, self._suppressed)
        self._until, self._deepest, self._suppressed = now + self.interval, 0, 0
        return True


_QUEUE_LOG_FILTER = _QueueDepthSummary()


class _YieldingDispatcher(ThreadedTaskDispatcher):
    """waitress's task dispatcher, whose I/O thread gives up the GIL once after queueing a request,
    so the worker it woke runs now (64 connections: ~1,050 -> ~6,200 req/s; docs/SERVERS.md)."""

    def add_task(self, task: Any) -> None:
        super().add_task(task)
        time.sleep(0)  # releases the GIL: a woken worker takes it now, not after the I/O thread's slice


class HttpServer:
    """waitress in one background thread, with settings for boot storms; graceful `stop`."""

    def __init__(
        self,
        listen: tuple[str, int],
        app: WsgiApp,
        *,
        threads: int = 8,
        connection_limit: int = 1000,
        max_request_header_size: int = MAX_REQUEST_HEADER_SIZE,
        max_request_body_size: int = MAX_REQUEST_BODY_SIZE,
        turn_bytes: int = TURN_BYTES,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self._listen = listen
        self._turn_bytes = turn_bytes
        self.admission = _Admission(max_connections_per_address, header_timeout)
        self._app = app
        self._settings: dict[str, Any] = {
            "threads": threads,
            "connection_limit": connection_limit,
            # select() cannot watch descriptors past 1024; poll() has no such cap
            "asyncore_use_poll": True,
            "backlog": 2048,
            "max_request_header_size": max_request_header_size,
            "max_request_body_size": max_request_body_size,
            "channel_timeout": 120,
            "cleanup_interval": 1,  # how often overdue headers and idle channels are looked for
            "ident": "netboot-reconcile",
            "expose_tracebacks": False,
        }
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] = listen

    def start(self) -> None:
        """Bind and start serving; returns once the socket listens (`.address` is the real one)."""
        prefer_short_gil_turns()
        queue_log = logging.getLogger("waitress.queue")
        if _QUEUE_LOG_FILTER not in queue_log.filters:
            queue_log.addFilter(_QUEUE_LOG_FILTER)
        host, port = self._listen
        dispatcher = _YieldingDispatcher()
        dispatcher.set_thread_count(int(self._settings["threads"]))
        server: Any = create_server(self._app, host=host, port=port, _dispatcher=dispatcher, **self._settings)
        if not hasattr(server, "effective_port"):  # a MultiSocketServer: the name resolved to several addresses
            server.close()
            raise ValueError(f"--http-listen {host}:{port} resolves to several addresses: give one IP address")
        server.channel_class = StreamingChannel  # accept() only runs in server.run, below
        server.turn_bytes = self._turn_bytes
        server.admission = admission = self.admission
        waitress_maintenance = server.maintenance

        def maintenance(now: float) -> None:
            waitress_maintenance(now)
            admission.maintenance(list(server.active_channels.values()))

        server.maintenance = maintenance
        self._server = server
        self.address = (str(server.effective_host), int(server.effective_port))
        self._thread = threading.Thread(target=server.run, name="http", daemon=True)
        self._thread.start()
        log.info("http listening on %s:%d revision=- mac=-", *self.address)

    def health(self) -> Health:
        """The listening socket open and waitress's thread alive."""
        thread = self._thread
        serving = self._server is not None and thread is not None and thread.is_alive()
        return Health(serving, address=f"{self.address[0]}:{self.address[1]}")

    @property
    def open_connections(self) -> int:
        server = self._server
        return 0 if server is None else len(server.active_channels)

    def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests (and streams) finish within `timeout`, then close all."""
        server = self._server
        thread = self._thread
        if server is None or thread is None:
            return
        deadline = time.monotonic() + max(timeout, 0.0)
        done = threading.Event()

        def stop_accepting() -> None:
            from waitress import wasyncore

            wasyncore.dispatcher.close(server)  # the listening socket only; channels and trigger stay
            done.set()

        server.trigger.pull_trigger(stop_accepting)
        done.wait(max(deadline - time.monotonic(), 0.0))
        while time.monotonic() < deadline and any(
            ch.requests or ch.total_outbufs_len for ch in list(server.active_channels.values())
        ):
            time.sleep(0.02)

        def close_all() -> None:
            for channel in list(server.active_channels.values()):
                channel.handle_close()
            server.trigger.close()

        server.trigger.pull_trigger(close_all)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=max(deadline - time.monotonic(), 0.1))
        thread.join(max(deadline - time.monotonic(), 1.0))
        self._server = None
        self._thread = None
