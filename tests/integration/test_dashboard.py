"""The /ui/ dashboard in headless Chromium (Debian's `chromium`): the rendered DOM, and screenshots kept
in tests/artifacts/ (gitignored; CI uploads the folder) for a person to look at.

The site is the in-process daemon of test_results.py with results driven through its real HTTP
server: node-1 installs, node-2 fails, then a comment-only commit, a kernel-argument change, its
revert and a rejected commit (`revert_sequence`); an unknown machine asks for a script.
"""

from __future__ import annotations

import html
import http.server
import re
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_results import IPS, MACS, STRANGER, Site, post_json, revert_sequence, simulate_netboot
from tests.support import require_root, require_tool

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def chromium(tmp: Path, *args: str) -> str:
    exe = require_tool("chromium", "chromium")
    require_root()  # --no-sandbox is what makes it run as root in a container
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(tmp: Path, name: str, url: str, size: str = "1280,900") -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    chromium(tmp, f"--screenshot={shot}", f"--window-size={size}", "--hide-scrollbars", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    return shot


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, dict[str, str]]]:
    s = Site(tmp_path)
    try:
        initial = s.sha
        s.sha = s.apply({"profiles/local.yaml": "name: Local disk\nboot: {}\n",
                         "groups/default.yaml": "profile: local\n"}, "a default group for unknown machines")
        simulate_netboot(s.port, "node-2", s.sha)
        failure = {"status": "failure", "message": "curtin: no disk"}
        assert post_json(s.port, f"/report/{MACS['node-2']}", failure, IPS["node-2"]).status == 200
        shas = revert_sequence(s)  # node-1 installs first, then the commits
        shas["initial"] = initial
        assert s.get("/ipxe?mac=52-54-00-00-00-77", STRANGER).status in (200, 403, 404)
        s.flush()
        yield s, shas
    finally:
        s.close()


def rows(dom: str, tag: str, attr: str) -> dict[str, dict[str, str]]:
    """{attr value: data-* attributes} of every `<tag ... attr=...>` in the DOM."""
    found = {}
    for element in re.findall(rf"<{tag} [^>]*{attr}=\"[^\"]*\"[^>]*>", dom):
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', element))
        found[attrs[attr]] = attrs
    return found


def test_commits_fleet_node_and_commit_pages_in_headless_chromium(site: tuple[Site, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    s, shas = site
    base = f"http://127.0.0.1:{s.port}"
    dom = chromium(tmp_path, "--dump-dom", f"{base}/ui/")
    # the header: the daemon's condition (stalled on the rejected commit) and each server's state
    assert re.search(r'<header class="status" id="daemon" data-condition="Stalled"', dom), dom[:2000]
    assert rows(dom, "span", "data-server")["http"]["data-state"] == "running"
    # every commit, newest first, in the words /status and `results` use; the rejected one with findings
    commits = rows(dom, "tr", "data-revision")
    order = re.findall(r'<tr class="commit" id="c-([0-9a-f]{40})"', dom)
    assert order == [shas[k] for k in ("bad", "revert", "change", "comment", "first", "initial")]
    assert [commits[shas[k]]["data-state"] for k in ("bad", "revert", "change", "comment", "first")] == [
        "rejected", "applied", "superseded", "superseded", "superseded"]
    bad = dom.split(f'id="c-{shas["bad"]}"', 1)[1].split("</tr>", 1)[0]
    assert "node-2 typo" in bad and "nodes/node-2.yaml" in bad and 'class="findings"' in bad
    assert "serial console" in dom and "Test" in dom  # subject and author
    # rollout bars: the comment and the revert keep node-1's success (and node-2's failure)
    bars = {m[0]: m[1] for m in re.findall(r'id="c-([0-9a-f]{40})"[^\n]*?<div class="rollout" ([^>]*)>',
                                            dom.replace("<tr ", "\n<tr "))}
    for key, (ok, failed, pending) in {"first": (1, 1, 2), "comment": (1, 1, 2), "change": (0, 0, 4),
                                       "revert": (1, 1, 2)}.items():
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', bars[shas[key]]))
        assert (attrs["data-succeeded"], attrs["data-failed"], attrs["data-pending"]) == (
            str(ok), str(failed), str(pending)), (key, attrs)
    # the unknown machine, with the group it would match
    unknown = rows(dom, "tr", "data-mac")
    assert "52:54:00:00:00:77" in unknown, dom[-3000:]
    unknown_row = dom.split('data-mac="52:54:00:00:00:77"', 1)[1].split("</tr>", 1)[0]
    assert "default" in unknown_row
    screenshot(tmp_path, "dashboard-commits.png", f"{base}/ui/")

    fleet = chromium(tmp_path, "--dump-dom", f"{base}/ui/fleet")
    nodes = rows(fleet, "tr", "data-node")
    assert {n: (a["data-outcome"], a["data-drift"]) for n, a in nodes.items()} == {
        "node-1": ("succeeded", "false"), "node-2": ("failed", "false"), "node-3": ("pending", "true"),
        "node-4": ("pending", "true")}
    screenshot(tmp_path, "dashboard-fleet.png", f"{base}/ui/fleet")

    node = chromium(tmp_path, "--dump-dom", f"{base}/ui/nodes/node-1")
    assert 'id="drift" data-drift="false"' in node
    phases = re.findall(r'<g data-phase="([^"]+)" data-seconds="([0-9.]+)"', node)
    assert [p for p, _ in phases] == ["script", "kernel", "initrd", "seed", "report"], phases
    assert "downloaded the kernel /assets/vmlinuz (600 bytes)" in node and "reported success" in node
    assert "{&quot;" not in node  # no raw JSON
    sections = re.findall(r'<section id="r-([0-9a-f]{40})" data-revision="[^"]+" data-outcome="([a-z-]+)"', node)
    assert sections == [(shas["revert"], "succeeded"), (shas["change"], "pending"), (shas["comment"], "succeeded")]
    screenshot(tmp_path, "dashboard-node.png", f"{base}/ui/nodes/node-1")

    commit = chromium(tmp_path, "--dump-dom", f"{base}/ui/commits/{shas['first']}")
    assert re.search(r'<svg id="histogram"[^>]* data-boots="2"', commit), commit[:3000]
    assert html.unescape("report failure: curtin: no disk") in html.unescape(commit)
    screenshot(tmp_path, "dashboard-commit.png", f"{base}/ui/commits/{shas['first']}")
    rejected = chromium(tmp_path, "--dump-dom", f"{base}/ui/commits/{shas['bad']}")
    assert 'data-state="rejected"' in rejected and "Findings (never served)" in rejected


class _Replay(http.server.BaseHTTPRequestHandler):
    """Serves a page as it was rendered earlier at /ui/, and proxies everything else to the daemon:
    the browser holds an old page while the results move on, as an open dashboard does."""

    old_page = b""
    upstream = ""
    served_old = False

    def do_GET(self) -> None:
        cls = type(self)
        code = 200
        if self.path == "/ui/" and not cls.served_old:
            cls.served_old = True
            body, ctype = cls.old_page, "text/html; charset=utf-8"
        else:
            try:
                with urllib.request.urlopen(cls.upstream + self.path, timeout=10) as resp:
                    body, ctype = resp.read(), resp.headers["Content-Type"]
            except urllib.error.HTTPError as exc:  # /favicon.ico
                code, body, ctype = exc.code, exc.read(), "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_an_open_page_refreshes_itself_without_a_reload(tmp_path: Path) -> None:
    s = Site(tmp_path)
    try:
        s.flush()
        old = s.get("/ui/").body
        # the page as served, no script run, is whole (what a browser with JavaScript off shows),
        # and refreshes itself only through <noscript> then
        assert b'data-succeeded="0"' in old and b'id="commits"' in old
        assert b'<noscript><meta http-equiv="refresh" content="30"></noscript>' in old
        simulate_netboot(s.port, "node-1", s.sha)
        assert post_json(s.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"]).status == 200
        s.flush()
        _Replay.old_page, _Replay.upstream, _Replay.served_old = old, f"http://127.0.0.1:{s.port}", False
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{proxy.server_address[1]}/ui/"
            fresh = chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", url)
        finally:
            proxy.shutdown()
        assert _Replay.served_old
        assert "data-refreshed=" in fresh and 'data-succeeded="1"' in fresh, fresh[:3000]
    finally:
        s.close()
