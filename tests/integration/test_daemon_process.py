"""The daemon as a real process: push/commit -> served over HTTP, webhooks, inotify, signals, status."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_support import (
    INVALID_NODE,
    NODE1_MAC,
    ROOT,
    DaemonProcess,
    WorkTree,
    git,
    http_get,
    http_post,
    wait_for,
)

SECRET = b"s3cret-for-tests"
NODE9 = "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"


@pytest.fixture
def remote_daemon(tmp_path: Path) -> Iterator[tuple[WorkTree, DaemonProcess]]:
    tree = WorkTree(tmp_path / "repo")
    remote = tree.bare_remote(tmp_path / "remote.git")
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    daemon = DaemonProcess(
        f"file://{remote}", tmp_path / "state",
        ["--interval", "3600", "--webhook-secret-file", str(secret_file)],
    ).start()
    try:
        daemon.wait_served(tree.head())
        yield tree, daemon
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def github_headers(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": sig, "X-GitHub-Event": "push", "Content-Type": "application/json"}


def test_push_with_webhook_is_served_and_bad_signatures_are_refused(
    remote_daemon: tuple[WorkTree, DaemonProcess],
) -> None:
    tree, daemon = remote_daemon
    old = tree.head()
    new = tree.commit("add node-9", {"nodes/node-9.yaml": NODE9})
    tree.push()
    body = json.dumps({"ref": "refs/heads/main", "after": new}).encode()

    assert http_post(daemon.url + "/hooks/git", body, {})[0] == 401  # missing
    assert http_post(daemon.url + "/hooks/git", body, github_headers(body, b"wrong"))[0] == 401  # bad
    sha1 = "sha1=" + hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    assert http_post(daemon.url + "/hooks/git", body, {"X-Hub-Signature": sha1})[0] == 401  # no SHA-1 fallback
    assert http_post(daemon.url + "/hooks/git", body, {"X-Gitlab-Token": "nope"})[0] == 401
    assert old in daemon.ipxe()
    assert daemon.status_doc()["desired_revision"] == old  # nothing was triggered

    assert http_post(daemon.url + "/hooks/git", body, github_headers(body))[0] == 202
    daemon.wait_served(new)
    assert "node-9" in http_get(f"{daemon.url}/ipxe?mac=52:54:00:aa:bb:99")[1].decode()

    # GitLab token and the generic HMAC header trigger as well.
    newer = tree.commit("touch", {"nodes/node-9.yaml": NODE9 + "labels: {rack: r2}\n"})
    tree.push()
    assert http_post(daemon.url + "/hooks/git", b"{}", {"X-Gitlab-Token": SECRET.decode()})[0] == 202
    daemon.wait_served(newer)
    newest = tree.commit("touch again", {"nodes/node-9.yaml": NODE9 + "labels: {rack: r3}\n"})
    tree.push()
    generic = "sha256=" + hmac.new(SECRET, b"x", hashlib.sha256).hexdigest()
    assert http_post(daemon.url + "/hooks/git", b"x", {"X-Signature": generic})[0] == 202
    daemon.wait_served(newest)

    # The generation is swapped in before the attempt is concluded: wait for the counters.
    metrics = wait_for(lambda: (m := http_get(daemon.url + "/metrics")[1].decode())
                       and 'netboot_reconcile_total{result="applied"} 4.0' in m and m, "metrics of 4 applies")
    assert f'netboot_info{{revision="{newest}"}} 1.0' in metrics


def test_invalid_commit_keeps_serving_and_is_reported_then_fix_is_served(
    remote_daemon: tuple[WorkTree, DaemonProcess],
) -> None:
    tree, daemon = remote_daemon
    good = tree.head()
    bad = tree.commit("break", {"nodes/node-1.yaml": INVALID_NODE})
    tree.push()
    daemon.signal(signal.SIGHUP)
    status = wait_for(lambda: (s := daemon.status()) and s["condition"] == "Stalled" and s, "Stalled status")
    assert status["last_attempted_revision"] == bad
    assert status["last_applied_revision"] == good
    assert any("no-such-profile" in f["message"] for f in status["findings"])
    assert good in daemon.ipxe()
    assert http_get(daemon.url + "/healthz")[0] == 200

    out = subprocess.run([sys.executable, "-m", "reconciler", "status", "--url", daemon.url], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "Stalled" in out.stdout
    assert "nodes/node-1.yaml" in out.stdout and "no-such-profile" in out.stdout

    git(tree.path, "revert", "--no-edit", "HEAD")
    fixed = tree.head()
    tree.push()
    daemon.signal(signal.SIGHUP)
    daemon.wait_served(fixed)
    wait_for(lambda: (s := daemon.status()) and s["condition"] == "Ready", "Ready after the fix")


def test_force_push_and_unreachable_remote(remote_daemon: tuple[WorkTree, DaemonProcess], tmp_path: Path) -> None:
    tree, daemon = remote_daemon
    first = tree.head()
    second = tree.commit("second", {"nodes/node-9.yaml": NODE9})
    tree.push()
    daemon.signal(signal.SIGHUP)
    daemon.wait_served(second)
    git(tree.path, "reset", "-q", "--hard", first)
    tree.push(force=True)
    daemon.signal(signal.SIGHUP)
    daemon.wait_served(first)

    os.rename(tmp_path / "remote.git", tmp_path / "moved.git")
    daemon.signal(signal.SIGHUP)
    status = wait_for(lambda: (s := daemon.status()) and s["reason"] == "SourceUnavailable" and s,
                      "status to say the source is unavailable")
    assert status["condition"] == "Reconciling"
    assert "remote.git" in status["message"]
    assert first in daemon.ipxe()
    assert status["reconciles"][0]["result"] == "failed"


def test_local_repo_commit_is_served_by_inotify(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"]).start()
    try:
        daemon.wait_served(tree.head())
        tree.write({"nodes/node-9.yaml": NODE9})  # an edit alone is not served
        new = tree.commit("add node-9")
        daemon.wait_served(new)
        wait_for(lambda: (s := daemon.status()) and s["reconciles"][0]["revision"] == new, "the recorded reconcile")
        assert daemon.status_doc()["reconciles"][0]["trigger"] == "inotify"
    finally:
        assert daemon.stop() == 0


def test_restart_serves_current_at_once_and_sigterm_exits_zero(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    remote = tree.bare_remote(tmp_path / "remote.git")
    daemon = DaemonProcess(f"file://{remote}", tmp_path / "state", ["--interval", "3600"]).start()
    daemon.wait_served(tree.head())
    assert daemon.stop() == 0
    os.rename(remote, tmp_path / "moved.git")
    again = DaemonProcess(f"file://{remote}", tmp_path / "state", ["--interval", "3600"], port=daemon.port).start()
    try:
        assert tree.head() in again.ipxe(NODE1_MAC)
        wait_for(lambda: (s := again.status()) and s["reason"] == "SourceUnavailable", "the failed fetch")
        assert tree.head() in again.ipxe(NODE1_MAC)
    finally:
        assert again.stop() == 0


def test_json_logs_carry_revision(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600", "--log-format", "json"]).start()
    try:
        daemon.wait_served(tree.head())
    finally:
        daemon.stop()
    docs = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert any(d.get("revision") == tree.head() and "applied" in d["message"] for d in docs)


def test_the_daemon_lifts_its_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    """Started with systemd's default soft limit (1,024) under a higher hard one, the daemon can
    hold the descriptors of hundreds of TFTP transfers (three each)."""
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state")
    daemon.args = ["prlimit", "--nofile=1024:8192", *daemon.args]  # prlimit execs the daemon: same pid
    daemon.start()
    try:
        assert daemon.proc is not None
        limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        assert line.split()[3:5] == ["8192", "8192"], line
    finally:
        assert daemon.stop() == 0
