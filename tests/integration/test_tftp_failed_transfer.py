"""A boot file whose TFTP transfer fails is not a boot step: real clients abort a kernel transfer.

The TFTP server serves a validated example-repo generation with a boot asset under
`--assets-dir`, and 127.0.0.1 is node-1 (`mac_for_address`), as when signed GRUB fetches the
kernel over TFTP under Secure Boot. curl asks for the kernel in 8-byte blocks and gives up after a
second (`--max-time`); atftp is killed in the middle of a transfer (the server's next send finds the port
closed). Each transfer is recorded as the `kernel` stage with its `result`, and the node's
outcome does not move: a machine that never got its kernel has not started booting it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.events import CollectEvents, Stage
from reconciler.core.outcomes import Outcome, node_result
from reconciler.protocol import tftp as proto
from reconciler.servers.http_dashboard import describe
from reconciler.servers.tftp import TftpServer
from tests.integration.served_kernel import KERNEL, example_holder, kernel_assets, wait_events
from tests.support import require_tool

SHA = "d" * 40
NODE1 = "52:54:00:aa:bb:01"
KERNEL_SIZE = 4_000_000


@dataclasses.dataclass
class Running:
    server: TftpServer
    events: CollectEvents

    @property
    def url(self) -> str:
        host, port = self.server.address
        return f"tftp://{host}:{port}/r/{SHA}/assets/{KERNEL}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    holder = example_holder(SHA)
    assets = kernel_assets(tmp_path, KERNEL_SIZE, 7)
    root = tmp_path / "root"
    root.mkdir()
    events = CollectEvents()
    # short retransmits: a client that vanished is given up on in well under a second
    server = TftpServer(("127.0.0.1", 0), root, holder, events, assets_dir=assets,
                        mac_for_address={"127.0.0.1": NODE1}.get,
                        limits=proto.Limits(default_timeout=0.05, max_retries=4))
    server.start()
    try:
        yield Running(server, events)
    finally:
        server.stop(2.0)


def assert_not_progress(running: Running) -> None:
    kernel = [e for e in running.events.events if e.stage == Stage.KERNEL]
    assert kernel and all(e.detail["result"] != "ok" and e.detail["via"] == "tftp" for e in kernel), kernel
    assert all(e.node == "node-1" and e.revision == SHA for e in kernel)
    result = node_result(running.events.events, revision=SHA, now=time.time())
    assert result.outcome is Outcome.PENDING, (result.outcome, result.reason)
    assert result.attempts == 0
    for event in kernel:
        text = describe(event)  # the dashboard's timeline
        assert text.startswith("TFTP transfer of the kernel ") and f"/assets/{KERNEL} " in text, text


def test_curl_giving_up_on_the_kernel_is_a_failed_transfer_not_a_kernel(running: Running, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    proc = subprocess.run([curl, "-sS", "--tftp-blksize", "8", "--max-time", "1", "-o", str(tmp_path / "k"),
                           running.url], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 28, f"curl did not give up on its --max-time ({proc.returncode}): {proc.stderr}"
    wait_events(running.events, 1)
    assert_not_progress(running)


def test_atftp_killed_mid_transfer_is_a_failed_transfer_not_a_kernel(running: Running, tmp_path: Path) -> None:
    tool = require_tool("atftp", "atftp")
    host, port = running.server.address
    out = tmp_path / "k"
    # blksize 8 makes the 4 MB transfer long enough to be cut in the middle
    client = subprocess.Popen([tool, "-g", "-r", f"/r/{SHA}/assets/{KERNEL}", "-l", str(out),
                               "--option", "blksize 8", host, str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (not out.exists() or out.stat().st_size < 4096) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.exists() and 0 < out.stat().st_size < KERNEL_SIZE, "atftp never got part of the kernel"
    finally:
        client.kill()
        client.wait(10)
    wait_events(running.events, 1)
    (event,) = running.events.events
    assert 0 < event.detail["bytes"] < KERNEL_SIZE and event.detail["result"] == "failed", event.detail
    assert_not_progress(running)


def test_the_same_kernel_sent_whole_is_the_kernel_stage(running: Running, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    proc = subprocess.run([curl, "-sS", "-o", str(tmp_path / "k"), running.url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k").stat().st_size == KERNEL_SIZE
    wait_events(running.events, 1)
    result = node_result(running.events.events, revision=SHA, now=time.time())
    assert (result.outcome, result.reason) == (Outcome.BOOTING, "fetched kernel")
