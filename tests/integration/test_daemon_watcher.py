"""The watcher on a real git repository (inotify): a commit moving the branch triggers at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reconciler.adapters.watcher import Watcher
from tests.integration.daemon_support import WorkTree, git, wait_for


# A repository under a directory named like the parts of .git the watcher ignores (/srv/logs/site):
# they are matched below .git only.
@pytest.mark.parametrize("where", ["repo", "logs/objects/repo"])
def test_a_commit_triggers_without_waiting_for_the_debounce(tmp_path: Path, where: str) -> None:
    tree = WorkTree(tmp_path / where)
    calls: list[int] = []
    fired = threading.Event()

    def on_change() -> None:
        calls.append(1)
        fired.set()

    # A debounce far longer than the wait below: only the ref moving can trigger in time.
    watcher = Watcher(tree.path / ".git", on_change, debounce=600.0, max_delay=600.0, git_dir=True)
    watcher.start()
    try:
        (tree.path / "nodes" / "node-9.yaml").write_text("mac: 52:54:00:aa:bb:99\nprofile: local-disk\n")
        git(tree.path, "add", "-A")  # the index moves, no ref: nothing yet (checked after the commit)
        tree.commit("node-9")
        wait_for(fired.is_set, "the watcher to call on_change for the commit")
        assert len(calls) == 1
    finally:
        watcher.stop()


def test_a_plain_directory_triggers_after_the_burst(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    fired = threading.Event()
    watcher = Watcher(root, fired.set, debounce=0.05, max_delay=1.0)
    watcher.start()
    try:
        (root / "netboot.yaml").write_text("server: {address: 10.0.0.2}\n")
        wait_for(fired.is_set, "the watcher to call on_change for a saved file")
    finally:
        watcher.stop()
