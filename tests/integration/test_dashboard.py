"""The /ui/ dashboard in headless Chromium (Debian's `chromium`): a screenshot, and the DOM's cells.

The site is the in-process daemon of test_results.py; node-1 succeeds, node-2 fails, node-3 is
pending at the first commit; a second commit leaves everyone pending.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_results import IPS, MACS, Site, post_json, simulate_netboot
from tests.support import require_root, require_tool


def chromium(tmp: Path, *args: str) -> str:
    exe = require_tool("chromium", "chromium")
    require_root()  # --no-sandbox is what makes it run as root in a container
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    try:
        simulate_netboot(s.port, "node-1", s.sha)
        assert post_json(s.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"]).status == 200
        simulate_netboot(s.port, "node-2", s.sha)
        failure = {"status": "failure", "message": "curtin: no disk"}
        assert post_json(s.port, f"/report/{MACS['node-2']}", failure, IPS["node-2"]).status == 200
        s.apply({"nodes/node-4.yaml": f"mac: {MACS['node-4']}\nip: {IPS['node-4']}\nprofile: install\n"
                 "labels: {rack: r9}\n"}, "move node-4")
        s.flush()
        yield s
    finally:
        s.close()


def cells(dom: str) -> dict[tuple[str, str], str]:
    """(node, revision) -> outcome from the dashboard's cells."""
    found = {}
    for tag in re.findall(r"<td [^>]*class=\"cell[^>]*>", dom):
        attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', tag))
        found[(attrs["data-node"], attrs["data-revision"])] = attrs["data-outcome"]
    return found


def test_dashboard_in_headless_chromium(site: Site, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{site.port}/ui/"
    dom = chromium(tmp_path, "--dump-dom", url)
    first, second = site.sha, site.daemon.holder.current().revision  # type: ignore[union-attr]
    got = cells(dom)
    assert got[("node-1", first)] == "succeeded"
    assert got[("node-2", first)] == "failed"
    assert got[("node-3", first)] == "pending"
    assert all(got[(f"node-{i}", second)] == "pending" for i in range(1, 5))
    # newest commit first, nodes across in name order
    rows = re.findall(r'<tr class="[^"]*" id="r-([0-9a-f]{40})"', dom)
    assert rows == [second, first]
    heads = re.findall(r'<th class="node"><a href="/ui/nodes/([^"]+)">', dom)
    assert heads == ["node-1", "node-2", "node-3", "node-4"]
    assert "1 succeeded" in dom and "1 failed" in dom

    # a click on a cell is a link to the node's timeline at that commit
    link = re.search(rf'data-node="node-2" data-revision="{first}"[^>]*><a href="([^"]+)"', dom)
    assert link is not None
    timeline = chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{site.port}{link.group(1).replace('&amp;', '&')}")
    section = timeline.split(f'<section id="r-{first}"', 1)[1].split("</section>", 1)[0]
    assert 'data-outcome="failed"' in section
    assert "report failure: curtin: no disk;" in section
    assert re.findall(r'<tr data-stage="([a-z-]+)"', section)[-1] == "report"
    assert "kernel" in section and "user-data" in section

    shot = tmp_path / "dashboard.png"  # kept by pytest under its basetemp (pytest-of-<user>/) to look at
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,800", url)
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chromium(tmp_path, f"--screenshot={tmp_path / 'node-timeline.png'}", "--window-size=1280,900",
             f"http://127.0.0.1:{site.port}{link.group(1).replace('&amp;', '&')}")
