"""One daemon per --state-dir: a second one exits 2 naming the PID that holds the directory, and
a daemon killed with SIGKILL leaves no stale lock (the kernel releases a flock)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.daemon_support import DaemonProcess, WorkTree, wait_for


def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    state = tmp_path / "state"
    first = DaemonProcess(str(tree.path), state).start()
    try:
        first.wait_served(tree.head())
        assert first.proc is not None
        second = DaemonProcess(str(tree.path), state).start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(30) == 2
        log = second.log()
        assert f"in use by another netboot-reconcile (pid {first.proc.pid}" in log, log
        assert "Traceback" not in log
        assert first.status_doc()["condition"] == "Ready"  # the first one is untouched
        first.kill()  # SIGKILL: no clean-up, the kernel drops the lock
        third = DaemonProcess(str(tree.path), state).start()
        try:
            third.wait_served(tree.head())
            assert third.proc is not None
            wait_for(lambda: (state / "lock").read_text() == f"{third.proc.pid}\n" if third.proc else False,
                     "the lock file to name the new daemon")
        finally:
            third.stop()
    finally:
        first.stop()
