"""/assets over real HTTP: Range, conditionals, HEAD-then-GET on one connection, traversal, streaming.

waitress on 127.0.0.1 port 0; clients are raw sockets (to send exactly the bytes a hostile or
firmware client sends), http.client on one keep-alive connection, and curl.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.events import CollectEvents
from reconciler.generation import GenerationHolder
from reconciler.servers.http import HttpServer, make_boot_app
from tests.support import require_tool

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


class Assets:
    def __init__(self, server: HttpServer, root: Path, outside: Path, events: CollectEvents) -> None:
        self.server = server
        self.root = root
        self.outside = outside
        self.events = events
        self.host, self.port = server.address

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self.conn()
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def raw(self, request: bytes) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            sock.sendall(request)
            chunks: list[bytes] = []
            while True:
                data = sock.recv(65536)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)


@pytest.fixture
def assets(tmp_path: Path) -> Iterator[Assets]:
    root = tmp_path / "assets"
    (root / "sub").mkdir(parents=True)
    (root / "file.bin").write_bytes(DATA)
    (root / "empty").write_bytes(b"")
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"SECRET\n")
    (root / "escape").symlink_to(outside)
    (root / "escape-dir").symlink_to(tmp_path)
    (root / "inside-link").symlink_to(root / "sub" / "inner.txt")
    events = CollectEvents()
    server = HttpServer(("127.0.0.1", 0), make_boot_app(GenerationHolder(), events, root), threads=2)
    server.start()
    try:
        yield Assets(server, root, outside, events)
    finally:
        server.stop(5)


# -- whole files and conditionals ---------------------------------------------------------------


def test_full_get_has_validators_and_bytes(assets: Assets) -> None:
    conn = assets.conn()
    conn.request("GET", "/assets/file.bin")
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and body == DATA
    assert resp.headers["Content-Length"] == str(len(DATA))
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["ETag"] and resp.headers["Last-Modified"]
    assert resp.headers["Content-Type"] == "application/octet-stream"
    etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
    # 304 on the same keep-alive connection, for either validator
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        conn.request("GET", "/assets/file.bin", headers=headers)
        again = conn.getresponse()
        assert (again.status, again.read()) == (304, b"")
    conn.request("GET", "/assets/file.bin", headers={"If-None-Match": '"other"'})
    changed = conn.getresponse()
    assert (changed.status, changed.read()) == (200, DATA)
    conn.close()


def test_empty_file_and_inside_symlink(assets: Assets) -> None:
    conn = assets.conn()
    conn.request("GET", "/assets/empty")
    resp = conn.getresponse()
    assert (resp.status, resp.read(), resp.headers["Content-Length"]) == (200, b"", "0")
    conn.request("GET", "/assets/inside-link")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"inner\n")
    conn.close()


# -- Range ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len(DATA) - 1),
        ("bytes=-100", len(DATA) - 100, len(DATA) - 1),
        ("bytes=10000-20000", 10000, len(DATA) - 1),  # end past the file: clamped
        ("bytes=-20000", 0, len(DATA) - 1),  # suffix longer than the file: whole file
        (f"bytes={len(DATA) - 1}-", len(DATA) - 1, len(DATA) - 1),
    ],
)
def test_satisfiable_ranges(assets: Assets, spec: str, start: int, end: int) -> None:
    conn = assets.conn()
    conn.request("GET", "/assets/file.bin", headers={"Range": spec})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert resp.headers["Content-Length"] == str(end - start + 1)
    assert body == DATA[start : end + 1]
    # the connection is still good afterwards (exact Content-Length was sent)
    conn.request("GET", "/assets/sub/inner.txt")
    assert conn.getresponse().read() == b"inner\n"
    conn.close()


@pytest.mark.parametrize("spec", [f"bytes={len(DATA)}-", "bytes=20000-30000", "bytes=5-2", "bytes=abc", "bytes=-0"])
def test_unsatisfiable_ranges_are_416(assets: Assets, spec: str) -> None:
    status, headers, _ = assets.get("/assets/file.bin", {"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(DATA)}"


def test_range_ignored_when_if_range_does_not_match(assets: Assets) -> None:
    status, _, body = assets.get("/assets/file.bin", {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert (status, body) == (200, DATA)
    etag = assets.get("/assets/file.bin")[1]["ETag"]
    status, _, body = assets.get("/assets/file.bin", {"Range": "bytes=0-9", "If-Range": etag})
    assert (status, body) == (206, DATA[:10])


def test_multiple_ranges_are_not_served_as_multipart(assets: Assets) -> None:
    status, _, body = assets.get("/assets/file.bin", {"Range": "bytes=0-1,5-6"})
    assert (status, body) == (200, DATA)  # Range ignored (RFC 9110 allows it), not 416


def test_curl_range_and_resume(assets: Assets, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    out = tmp_path / "part"
    out.write_bytes(DATA[:4000])
    url = f"http://{assets.host}:{assets.port}/assets/file.bin"
    subprocess.run([curl, "-sSf", "-C", "-", "-o", str(out), url], check=True, timeout=30)
    assert out.read_bytes() == DATA
    got = subprocess.run([curl, "-sSf", "-r", "256-511", url], check=True, capture_output=True, timeout=30).stdout
    assert got == DATA[256:512]


# -- HEAD ------------------------------------------------------------------------------------------


def test_head_then_get_on_one_keep_alive_connection_raw(assets: Assets) -> None:
    """UEFI HTTP Boot: HEAD (size) then GET on the same connection; a stray HEAD body breaks it."""
    with socket.create_connection((assets.host, assets.port), timeout=10) as sock:
        sock.sendall(b"HEAD /assets/file.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_response(sock, expect_body=False)
        sock.sendall(b"GET /assets/file.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        get = _read_response(sock, expect_body=True)
        sock.sendall(b"HEAD /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
        third = _read_response(sock, expect_body=False)
        # nothing else is waiting on the connection
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert head[0].startswith(b"HTTP/1.1 200") and head[1][b"content-length"] == str(len(DATA)).encode()
    assert get[0].startswith(b"HTTP/1.1 200") and get[2] == DATA
    assert third[0].startswith(b"HTTP/1.1 ")  # 503 (no generation) or 200: a header block, no body


def test_head_then_get_with_http_client(assets: Assets) -> None:
    conn = assets.conn()
    for _ in range(3):
        conn.request("HEAD", "/assets/file.bin")
        head = conn.getresponse()
        assert (head.status, head.read(), head.headers["Content-Length"]) == (200, b"", str(len(DATA)))
        conn.request("GET", "/assets/file.bin", headers={"Range": "bytes=0-3"})
        assert conn.getresponse().read() == DATA[:4]
    conn.close()


def _read_response(sock: socket.socket, expect_body: bool) -> tuple[bytes, dict[bytes, bytes], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed before the header block ended"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if not expect_body:
        assert rest == b"", "bytes after a HEAD response's header block"
        return lines[0], headers, b""
    length = int(headers[b"content-length"])
    while len(rest) < length:
        data = sock.recv(65536)
        assert data
        rest += data
    assert len(rest) == length
    return lines[0], headers, rest


# -- traversal and safety -----------------------------------------------------------------------

TRAVERSAL = [
    "/assets/../secret.txt",
    "/assets/%2e%2e/secret.txt",
    "/assets/%2E%2E/secret.txt",
    "/assets/.%2e/secret.txt",
    "/assets/..%2fsecret.txt",
    "/assets/..%2Fsecret.txt",
    "/assets/sub%2f..%2f..%2fsecret.txt",
    "/assets/..\\secret.txt",
    "/assets/..%5csecret.txt",
    "/assets/sub/../../secret.txt",
    "/assets/sub/%2e%2e/%2e%2e/secret.txt",
    "/assets/file.bin%00.txt",
    "/assets/file.bin\x00",
    "/assets//etc/passwd",
    "/assets/%2fetc/passwd",
    "/assets/%252e%252e/secret.txt",
    "/assets/./file.bin",
    "/assets/sub/",
    "/assets/sub",
    "/assets/escape",
    "/assets/escape-dir/secret.txt",
    "/r/x/assets/../../secret.txt",
    "/assets/..",
    "/assets/%c0%ae%c0%ae/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSAL)
def test_traversal_never_leaves_the_root(assets: Assets, target: str) -> None:
    reply = assets.raw(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
    status = reply.split(b"\r\n", 1)[0]
    assert b"SECRET" not in reply and b"root:" not in reply
    assert status.split()[1] in (b"404", b"400", b"410"), status


def test_traversal_with_curl_path_as_is(assets: Assets) -> None:
    curl = require_tool("curl", "curl")
    base = f"http://{assets.host}:{assets.port}"
    for target in ("/assets/../secret.txt", "/assets/%2e%2e/secret.txt", "/assets/escape"):
        out = subprocess.run(
            [curl, "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", base + target],
            capture_output=True,
            timeout=30,
        ).stdout
        assert out == b"404", target


def test_no_assets_dir_means_404(tmp_path: Path) -> None:
    server = HttpServer(("127.0.0.1", 0), make_boot_app(GenerationHolder(), CollectEvents(), None))
    server.start()
    try:
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        conn.request("GET", "/assets/file.bin")
        assert conn.getresponse().status == 404
    finally:
        server.stop(5)


# -- streaming does not hold a worker ---------------------------------------------------------------


def test_large_download_does_not_hold_a_worker(tmp_path: Path) -> None:
    """With ONE worker thread, a stalled 64 MiB download must not stop a small request being served.

    The download is never read, so its bytes sit in socket buffers; if the worker were streaming
    it, the worker would be stuck in a blocking write and the script request would never run.
    """
    root = tmp_path / "assets"
    root.mkdir()
    big = root / "big.img"
    with big.open("wb") as f:
        f.truncate(64 << 20)
    (root / "small").write_bytes(b"small\n")
    server = HttpServer(("127.0.0.1", 0), make_boot_app(GenerationHolder(), CollectEvents(), root), threads=1)
    server.start()
    stalled = []
    try:
        for _ in range(4):
            sock = socket.create_connection(server.address, timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /assets/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        for _ in range(3):
            conn = http.client.HTTPConnection(*server.address, timeout=10)
            conn.request("GET", "/assets/small")
            assert conn.getresponse().read() == b"small\n"
            conn.close()
    finally:
        for sock in stalled:
            sock.close()
        server.stop(5)


def test_small_request_is_served_while_fast_readers_download(tmp_path: Path) -> None:
    """ONE worker, 4 downloads read by curl as fast as it can: a small request is still answered.

    A reader that keeps up rarely makes the server's socket block, and waitress 3.0.2 alone sends
    until it does, from the worker (`write_soon`) and then from the I/O thread (`handle_write`),
    so a small request waits for whichever stream is being sent; how long depends on when a
    socket happens to fill. Here it must be answered while every download is still running.
    """
    curl = require_tool("curl", "curl")
    root = tmp_path / "assets"
    root.mkdir()
    with (root / "big.img").open("wb") as f:
        f.truncate(4 << 30)  # sparse
    (root / "small").write_bytes(b"small\n")
    server = HttpServer(("127.0.0.1", 0), make_boot_app(GenerationHolder(), CollectEvents(), root), threads=1)
    server.start()
    host, port = server.address
    downloads = [
        subprocess.Popen([curl, "-sS", "-o", os.devnull, f"http://{host}:{port}/assets/big.img"]) for _ in range(4)
    ]
    try:
        deadline = time.monotonic() + 30
        while server.open_connections < 4:
            assert time.monotonic() < deadline, "the downloads did not connect"
            time.sleep(0.01)
        time.sleep(0.2)  # let them get going (not an assertion on time)
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("GET", "/assets/small")
        assert conn.getresponse().read() == b"small\n"
        conn.close()
        assert [p.poll() for p in downloads] == [None] * 4  # no download had to finish first
    finally:
        for proc in downloads:
            proc.kill()
            proc.wait(10)
        server.stop(5)


def test_file_bodies_go_by_sendfile_from_the_io_thread_in_bounded_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole files and ranges: right bytes; each file send is one sendfile(2) from the I/O thread, at most a turn."""
    root = tmp_path / "assets"
    root.mkdir()
    data = os.urandom(3 << 20)
    (root / "blob").write_bytes(data)
    calls: list[tuple[str, int]] = []
    real_sendfile = os.sendfile

    def recording_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append((threading.current_thread().name, count))
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", recording_sendfile)
    turn = 64 << 10
    app = make_boot_app(GenerationHolder(), CollectEvents(), root)
    server = HttpServer(("127.0.0.1", 0), app, threads=2, turn_bytes=turn)
    server.start()
    try:
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        conn.request("GET", "/assets/blob")
        assert conn.getresponse().read() == data
        start, end = 1_000_001, 2_500_000
        conn.request("GET", "/assets/blob", headers={"Range": f"bytes={start}-{end}"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (206, data[start : end + 1])
        conn.request("GET", "/assets/blob", headers={"Range": "bytes=-10"})  # the connection is still in step
        assert conn.getresponse().read() == data[-10:]
        conn.close()
    finally:
        server.stop(5)
    assert calls and {name for name, _ in calls} == {"http"}
    assert max(count for _, count in calls) <= turn


def test_a_file_shorter_than_its_content_length_closes_the_connection(tmp_path: Path) -> None:
    """The file shrinks while it is being sent: the client gets fewer bytes and EOF, not a hang."""
    root = tmp_path / "assets"
    root.mkdir()
    blob = root / "blob"
    with blob.open("wb") as f:
        f.truncate(64 << 20)  # far more than socket buffers hold
    server = HttpServer(("127.0.0.1", 0), make_boot_app(GenerationHolder(), CollectEvents(), root))
    server.start()
    try:
        sock = socket.create_connection(server.address, timeout=10)
        sock.sendall(b"GET /assets/blob HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(4096)  # the response has started; the rest waits in socket buffers
        assert first.startswith(b"HTTP/1.1 200")
        with blob.open("r+b") as f:
            f.truncate(1 << 20)
        got = len(first)
        while data := sock.recv(1 << 20):
            got += len(data)
        sock.close()
        assert got < 64 << 20
    finally:
        server.stop(5)


def test_stop_lets_an_in_flight_download_finish(tmp_path: Path) -> None:
    root = tmp_path / "assets"
    root.mkdir()
    data = os.urandom(8 << 20)
    (root / "blob").write_bytes(data)
    server = HttpServer(("127.0.0.1", 0), make_boot_app(GenerationHolder(), CollectEvents(), root))
    server.start()
    sock = socket.create_connection(server.address, timeout=10)
    sock.sendall(b"GET /assets/blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first = sock.recv(1024)  # the response has started
    assert first.startswith(b"HTTP/1.1 200")
    stopper = threading.Thread(target=server.stop, args=(30,))
    stopper.start()
    got = first
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    stopper.join(30)
    sock.close()
    assert got.endswith(data[-4096:]) and len(got.partition(b"\r\n\r\n")[2]) == len(data)
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).close()


# -- the site's iPXE binaries for UEFI HTTP boot: /assets/ipxe/<boot file> from the TFTP root --------


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = require_tool("curl", "curl")
    return subprocess.run([curl, "-sS", *args], capture_output=True, timeout=30, check=False)


def test_ipxe_binaries_from_the_tftp_root_for_uefi_http_boot(tmp_path: Path) -> None:
    from tests.integration.test_http_boot import SHA_A, generation

    tftp = tmp_path / "tftp"
    tftp.mkdir()
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "ipxe.efi").write_bytes(DATA)  # Debian: /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi
    (tftp / "ipxe.efi").symlink_to(boot / "ipxe.efi")
    (tftp / "undionly.kpxe").write_bytes(b"BIOS" * 10)
    (tmp_path / "secret").write_bytes(b"SECRET\n")
    (tftp / "snp.efi").symlink_to(tmp_path / "secret")  # a symlink out that is not allowed
    (tftp / "other.bin").write_bytes(b"not a boot file")
    assets_dir = tmp_path / "assets"
    (assets_dir / "ipxe").mkdir(parents=True)
    (assets_dir / "ipxe" / "undionly.kpxe").write_bytes(b"from --assets-dir")
    holder = GenerationHolder()
    holder.swap(generation(SHA_A))  # boot_files: the defaults (ipxe.efi, undionly.kpxe, snp.efi)
    events = CollectEvents()
    app = make_boot_app(holder, events, assets_dir, ipxe_root=tftp, ipxe_outside=(boot / "ipxe.efi",))
    server = HttpServer(("127.0.0.1", 0), app, threads=2)
    server.start()
    base = f"http://127.0.0.1:{server.address[1]}"
    try:
        full = _curl("-f", f"{base}/assets/ipxe/ipxe.efi")
        assert full.returncode == 0 and full.stdout == DATA, full.stderr
        pinned = _curl("-f", f"{base}/r/{SHA_A}/assets/ipxe/ipxe.efi")
        assert pinned.returncode == 0 and pinned.stdout == DATA
        ranged = _curl("-f", "-r", "256-511", f"{base}/assets/ipxe/ipxe.efi")
        assert ranged.stdout == DATA[256:512]
        head = _curl("-f", "-I", f"{base}/assets/ipxe/ipxe.efi")
        headers = head.stdout.decode().lower()
        assert head.returncode == 0 and f"content-length: {len(DATA)}" in headers and "accept-ranges: bytes" in headers
        # --assets-dir first; a symlink out of the root to anything else, and names that are not boot files: 404
        assert _curl("-f", f"{base}/assets/ipxe/undionly.kpxe").stdout == b"from --assets-dir"
        for path in ("snp.efi", "other.bin", "../tftp/ipxe.efi", "boot.ipxe"):
            got = _curl("-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", f"{base}/assets/ipxe/{path}")
            assert got.stdout == b"404", (path, got.stdout)
    finally:
        server.stop(5)
    served = [(e.stage, e.detail["status"]) for e in events.events if e.detail["path"].endswith("ipxe.efi")]
    assert served[:2] == [("asset", 200), ("asset", 200)]
