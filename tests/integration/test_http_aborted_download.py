"""A kernel whose HTTP download the client breaks off is not a boot step, as over TFTP.

The boot HTTP server (waitress, real sockets) serves a validated example-repo generation with a
16 MiB kernel under `--assets-dir`; the kernel URL names node-1 (`?mac=`). curl gives up on a
download throttled to 64 KiB/s (`--limit-rate`, `--max-time`), and a client reads the first
bytes and resets the connection. Each is recorded as the `kernel` stage with `result: aborted`
and the bytes that went out, and the node's outcome does not move: the event used to say
status 200 with the whole size, and the node `booting` on a kernel it never got.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.events import CollectEvents, Stage
from reconciler.core.outcomes import Outcome, node_result
from reconciler.servers.http import HttpServer, make_boot_app
from reconciler.servers.http_dashboard import describe
from tests.integration.served_kernel import KERNEL, example_holder, kernel_assets, wait_events
from tests.support import patterned_bytes, require_tool

SHA = "e" * 40
# larger than loopback's socket buffers can hold (tcp_wmem max 4 MiB + the client's receive buffer)
KERNEL_SIZE = 16 << 20
PATH = f"/r/{SHA}/assets/{KERNEL}?mac=52-54-00-aa-bb-01"


@dataclasses.dataclass
class Running:
    server: HttpServer
    events: CollectEvents

    def url(self, path: str = PATH) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}{path}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    holder = example_holder(SHA)
    assets = kernel_assets(tmp_path, KERNEL_SIZE, 3)
    events = CollectEvents()
    server = HttpServer(("127.0.0.1", 0), make_boot_app(holder, events, assets), threads=2)
    server.start()
    try:
        yield Running(server, events)
    finally:
        server.stop(5)


def assert_not_progress(running: Running) -> None:
    (kernel,) = running.events.events
    assert (kernel.stage, kernel.node, kernel.revision) == (Stage.KERNEL, "node-1", SHA)
    assert kernel.detail["result"] == "aborted", kernel.detail
    assert 0 <= kernel.detail["bytes"] < KERNEL_SIZE and kernel.detail["length"] == KERNEL_SIZE, kernel.detail
    result = node_result(running.events.events, revision=SHA, now=time.time())
    assert result.outcome is Outcome.PENDING, (result.outcome, result.reason)
    assert result.attempts == 0
    text = describe(kernel)  # the dashboard's timeline
    assert text.startswith(f"download of the kernel /assets/{KERNEL} broken off by the client after "), text
    assert text.endswith(" of 16.0 MiB"), text


def test_curl_giving_up_on_the_kernel_is_an_aborted_download_not_a_kernel(running: Running, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    proc = subprocess.run([curl, "-sS", "--limit-rate", "64k", "--max-time", "1", "-o", str(tmp_path / "k"),
                           running.url()], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 28, f"curl did not give up on its --max-time ({proc.returncode}): {proc.stderr}"
    wait_events(running.events, 1)
    assert_not_progress(running)


def test_a_client_resetting_the_connection_mid_body_is_an_aborted_download(running: Running) -> None:
    host, port = running.server.address
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        got = b""
        while len(got) < 65536:
            chunk = sock.recv(65536)
            assert chunk, "the server closed before sending 64 KiB"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    wait_events(running.events, 1)
    assert_not_progress(running)


def test_the_same_kernel_sent_whole_is_the_kernel_stage(running: Running, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    proc = subprocess.run([curl, "-sS", "-o", str(tmp_path / "k"), running.url()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k").read_bytes() == patterned_bytes(KERNEL_SIZE, 3)
    wait_events(running.events, 1)
    (kernel,) = running.events.events
    assert (kernel.detail["status"], kernel.detail["result"], kernel.detail["bytes"]) == (200, "ok", KERNEL_SIZE)
    result = node_result(running.events.events, revision=SHA, now=time.time())
    assert (result.outcome, result.reason) == (Outcome.BOOTING, "fetched kernel")
    assert describe(kernel) == f"downloaded the kernel /assets/{KERNEL} (16.0 MiB)"


def test_a_range_sent_whole_is_complete(running: Running, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    proc = subprocess.run([curl, "-sS", "-r", "1000-1999", "-o", str(tmp_path / "k"), running.url()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k").read_bytes() == patterned_bytes(KERNEL_SIZE, 3)[1000:2000]
    wait_events(running.events, 1)
    (kernel,) = running.events.events
    assert (kernel.detail["status"], kernel.detail["result"], kernel.detail["bytes"]) == (206, "ok", 1000)
    assert kernel.detail["length"] == 1000


@pytest.mark.parametrize("size", [128 << 10, 1 << 20, (1 << 20) + 1])
def test_a_whole_body_on_a_connection_kept_open_is_recorded_at_once(tmp_path: Path, size: int) -> None:
    # iPXE keeps its connection open after the kernel. A body of a whole number of the I/O thread's
    # turns (128 KiB) ended a turn exactly: its buffer was closed, and the download recorded, only
    # at the next request or the channel's 120 s time-out
    assets = kernel_assets(tmp_path, size, 5)
    events = CollectEvents()
    server = HttpServer(("127.0.0.1", 0), make_boot_app(example_holder(SHA), events, assets), threads=2)
    server.start()
    try:
        host, port = server.address
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            got = b""
            while len(got.partition(b"\r\n\r\n")[2]) < size:
                chunk = sock.recv(1 << 20)
                assert chunk, "the server closed the connection"
                got += chunk
            wait_events(events, 1)  # the connection stays open meanwhile
            (kernel,) = events.events
            assert (kernel.detail["result"], kernel.detail["bytes"]) == ("ok", size)
    finally:
        server.stop(5)
