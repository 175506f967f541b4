"""A read-only state directory: the daemon serves `current` read-only, /status says Degraded
(StoreUnwritable), reports answer 503, new commits are not applied, and the log has one line
about it, not a traceback.

The state directory is made read-only by a read-only bind mount in the daemon's own mount
namespace (`unshare -m`, then `mount --bind` and a read-only remount): nothing outside the
test's process tree sees it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.daemon_support import HANG, NODE1_MAC, DaemonProcess, WorkTree, http_get, http_post, wait_for
from tests.support import require_root, require_tool

NODE9 = "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"
READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


def test_a_read_only_state_dir_serves_current_read_only_and_says_so(tmp_path: Path) -> None:
    require_root()
    unshare = require_tool("unshare", "util-linux")
    tree = WorkTree(tmp_path / "repo")
    state = tmp_path / "state"
    first = tree.head()
    writable = DaemonProcess(str(tree.path), state).start()
    try:
        writable.wait_served(first)
    finally:
        assert writable.stop() == 0
    newer = tree.commit("node-9", {"nodes/node-9.yaml": NODE9})

    daemon = DaemonProcess(str(tree.path), state, ["--interval", "3600"])
    daemon.args = [unshare, "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, str(state), *daemon.args]
    daemon.start()
    try:
        daemon.wait_served(first)  # current, from the read-only disk
        status = wait_for(lambda: (s := daemon.status()) and s["last_attempted_revision"] is None
                          and s["consecutive_failures"] >= 1 and s, "the first attempt to fail")
        assert status["condition"] == "Degraded" and status["reason"] == "StoreUnwritable"
        assert str(state) in status["message"] and "not writable" in status["message"]
        assert ("Reconciling", "StoreUnwritable") in [(c["type"], c["reason"]) for c in status["conditions"]]
        assert status["desired_revision"] == newer and status["last_applied_revision"] == first
        assert first in daemon.ipxe()
        assert http_get(daemon.url + "/healthz")[0] == 200
        code, body = http_post(f"{daemon.url}/report/{NODE1_MAC}", b'{"status": "success"}',
                               {"Content-Type": "application/json"})
        assert code == 503 and b"not writable" in body
        log = daemon.log()
        assert "Traceback" not in log, log
        assert log.count("is not writable") == 1, log
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_a_read_only_state_dir_never_written_exits_2_saying_it_must_be_writable_first(tmp_path: Path) -> None:
    """Nothing to serve read-only yet (no generation, no report secret): one line naming the
    directory and what to do, not the bare OS error about a file the user never heard of."""
    require_root()
    unshare = require_tool("unshare", "util-linux")
    tree = WorkTree(tmp_path / "repo")
    state = tmp_path / "state"
    state.mkdir()
    daemon = DaemonProcess(str(tree.path), state)
    proc = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, str(state),
                           *daemon.args], capture_output=True, text=True, timeout=HANG, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(state) in lines[0] and "must be writable on its first start" in lines[0], lines[0]
    assert "Read-only file system" in lines[0]
