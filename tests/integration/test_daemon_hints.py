"""The hints the daemon logs once it serves (status URL, a curl for a node's iPXE script) work as printed."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.integration.daemon_support import ROOT, http_get, wait_for
from tests.support import free_port

URLS = re.compile(r"(?:status:\s+|curl ')(http://[^\s']+)")


def run_and_follow_hints(command: list[str], log_path: Path) -> list[str]:
    """Start `command`, wait for its hints, fetch every URL they name; return the hint lines."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(_hints(log_path.read_text())) >= 2 or proc.poll() is not None, "the hints")
        hints = _hints(log_path.read_text())
        assert proc.poll() is None, log_path.read_text()
        urls = [u for line in hints for u in URLS.findall(line)]
        assert any(u.endswith("/status") for u in urls), hints
        for url in urls:
            code, body = http_get(url)
            assert code == 200, f"{url}: {code} {body!r}\n{log_path.read_text()}"
        return hints
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()


def _hints(text: str) -> list[str]:
    return [line for line in text.splitlines() if "reconciler.run:" in line and "http://" in line]


def test_run_sh_hints_answer(tmp_path: Path) -> None:
    http, tftp = free_port(), free_port(socket.SOCK_DGRAM)
    hints = run_and_follow_hints(
        ["scripts/run.sh", "--http-listen", f"127.0.0.1:{http}", "--tftp-listen", f"127.0.0.1:{tftp}",
         "--state-dir", str(tmp_path / "state")], tmp_path / "run.log")
    script = next(line for line in hints if "curl" in line)
    assert "/ipxe?mac=" in script  # run.sh is for looking at what nodes get


def test_hints_of_a_plain_run_answer_from_where_they_are_printed(tmp_path: Path) -> None:
    # example-repo's nodes all have a reserved address: their scripts are not for 127.0.0.1.
    http = free_port()
    run_and_follow_hints(
        [sys.executable, "-m", "reconciler", "run", "--repo", "example-repo", "--no-dhcp", "--no-tftp",
         "--http-listen", f"127.0.0.1:{http}", "--state-dir", str(tmp_path / "state"),
         "--age-identity", "contrib/example-age-identity.txt"], tmp_path / "run.log")
