"""The reconcile loop in-process: real git repositories, real state directory, real SQLite."""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
from pathlib import Path

import pygit2
import pytest

from reconciler.adapters import gitsource
from reconciler.adapters.gitsource import SourceProblem, read_tree
from reconciler.core.render import render_generation
from reconciler.core.render.files import RenderedFiles
from reconciler.core.validate import validate
from reconciler.daemon import Condition, Daemon, Result
from reconciler.settings import Settings
from tests.integration.daemon_support import INVALID_NODE, WorkTree, git


def make_daemon(repo: str, state: Path, **overrides: object) -> Daemon:
    settings = Settings(repo=repo, state_dir=state, watch=False, **overrides)  # type: ignore[arg-type]
    daemon = Daemon(settings, renderer=render_generation)
    daemon.open()
    return daemon


def served_script(daemon: Daemon, node: str = "node-1") -> str:
    generation = daemon.holder.current()
    assert generation is not None
    data = generation.file(f"ipxe/{node}.ipxe")
    assert data is not None
    return data.decode()


@pytest.fixture
def tree(tmp_path: Path) -> WorkTree:
    return WorkTree(tmp_path / "repo")


def test_local_work_tree_follows_commits_not_edits(tree: WorkTree, tmp_path: Path) -> None:
    daemon = make_daemon(str(tree.path), tmp_path / "state")
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        first = tree.head()
        assert f"revision {first}" in served_script(daemon)
        # An uncommitted edit is not served.
        tree.write({"nodes/node-1.yaml": INVALID_NODE})
        assert daemon.reconcile_once() is Result.UNCHANGED
        git(tree.path, "checkout", "--", ".")
        second = tree.commit("second", {"nodes/node-9.yaml": "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"})
        assert daemon.reconcile_once() is Result.APPLIED
        assert f"revision {second}" in served_script(daemon, "node-9")
        assert (tmp_path / "state" / "current").resolve().name == second
        assert daemon.status()["condition"] == "Ready"
    finally:
        daemon.shutdown()


def test_invalid_commit_is_recorded_not_served_not_retried_then_fixed(tree: WorkTree, tmp_path: Path) -> None:
    daemon = make_daemon(str(tree.path), tmp_path / "state")
    try:
        daemon.reconcile_once()
        good = tree.head()
        bad = tree.commit("break node-1", {"nodes/node-1.yaml": INVALID_NODE})
        assert daemon.reconcile_once() is Result.REJECTED
        assert f"revision {good}" in served_script(daemon)
        status = daemon.status()
        assert status["condition"] == Condition.STALLED
        assert status["last_attempted_revision"] == bad
        assert status["last_applied_revision"] == good
        assert any(f["file"] == "nodes/node-1.yaml" and "no-such-profile" in f["message"] for f in status["findings"])
        # Not retried until a new commit arrives.
        assert daemon.reconcile_once() is Result.UNCHANGED
        assert [r["result"] for r in daemon.status()["reconciles"]] == ["rejected", "applied"]
        original = git(tree.path, "show", f"{good}:nodes/node-1.yaml") + "\n"
        fixed = tree.commit("fix node-1", {"nodes/node-1.yaml": original})
        assert daemon.reconcile_once() is Result.APPLIED
        assert f"revision {fixed}" in served_script(daemon)
        assert daemon.status()["condition"] == "Ready"
        assert daemon.status()["findings"] == []
    finally:
        daemon.shutdown()


def test_remote_mirror_force_push_and_unreachable(tree: WorkTree, tmp_path: Path) -> None:
    remote = tree.bare_remote(tmp_path / "remote.git")
    first = tree.head()
    daemon = make_daemon(f"file://{remote}", tmp_path / "state")
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        assert (tmp_path / "state" / "repo.git" / "HEAD").exists()
        second = tree.commit("second", {"nodes/node-9.yaml": "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"})
        tree.push()
        assert daemon.reconcile_once() is Result.APPLIED
        assert f"revision {second}" in served_script(daemon)
        # Force-push back to the older tree: followed.
        git(tree.path, "reset", "-q", "--hard", first)
        tree.push(force=True)
        assert daemon.reconcile_once() is Result.APPLIED
        assert f"revision {first}" in served_script(daemon)
        # Remote gone: keeps serving, status says why.
        os.rename(remote, tmp_path / "gone.git")
        assert daemon.reconcile_once() is Result.FAILED
        assert f"revision {first}" in served_script(daemon)
        status = daemon.status()
        assert status["condition"] == "Reconciling"
        assert status["reason"] == "SourceUnavailable"
        assert "remote.git" in status["message"]
        assert status["consecutive_failures"] == 1
    finally:
        daemon.shutdown()


def test_restart_serves_current_from_disk_before_reconciling(tree: WorkTree, tmp_path: Path) -> None:
    remote = tree.bare_remote(tmp_path / "remote.git")
    daemon = make_daemon(f"file://{remote}", tmp_path / "state")
    daemon.reconcile_once()
    daemon.shutdown()
    os.rename(remote, tmp_path / "gone.git")
    again = make_daemon(f"file://{remote}", tmp_path / "state")
    try:
        assert f"revision {tree.head()}" in served_script(again)
        assert again.reconcile_once() is Result.FAILED
        assert f"revision {tree.head()}" in served_script(again)
    finally:
        again.shutdown()


def test_a_local_repository_missing_at_restart_is_served_from_disk_and_opened_when_back(
        tree: WorkTree, tmp_path: Path) -> None:
    """A repository on a volume mounted late took the boot service down (exit 2 at start) though
    `current` was on disk. With nothing on disk, a path that does not exist is still an error."""
    daemon = make_daemon(str(tree.path), tmp_path / "state")
    daemon.reconcile_once()
    daemon.shutdown()
    first = tree.head()
    os.rename(tree.path, tmp_path / "unmounted")
    again = make_daemon(str(tree.path), tmp_path / "state")
    try:
        assert f"revision {first}" in served_script(again)
        assert again.reconcile_once() is Result.FAILED
        assert again.status()["reason"] == "SourceUnavailable"
        os.rename(tmp_path / "unmounted", tree.path)
        new = tree.commit("while it was away", {"nodes/node-9.yaml": "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"})
        assert again.reconcile_once() is Result.APPLIED
        assert f"revision {new}" in served_script(again, "node-9")
    finally:
        again.shutdown()
    with pytest.raises(SourceProblem):
        make_daemon(str(tmp_path / "typo"), tmp_path / "fresh-state")


def test_plain_directory_is_served_by_content_digest(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "seed")
    plain = tmp_path / "plain"
    plain.mkdir()
    for item in tree.path.iterdir():
        if item.name != ".git":
            os.rename(item, plain / item.name)
    daemon = make_daemon(str(plain), tmp_path / "state")
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        before = daemon.status()["last_applied_revision"]
        assert before.startswith("dir-")
        (plain / "nodes" / "node-9.yaml").write_text("mac: 52:54:00:aa:bb:99\nprofile: local-disk\n")
        assert daemon.reconcile_once() is Result.APPLIED
        assert daemon.status()["last_applied_revision"] != before
        assert "node-9" in served_script(daemon, "node-9")
    finally:
        daemon.shutdown()


def test_old_generations_are_collected_keeping_the_last_n(tree: WorkTree, tmp_path: Path) -> None:
    daemon = make_daemon(str(tree.path), tmp_path / "state", keep_generations=2)
    try:
        revisions = []
        for i in range(4):
            node = {f"nodes/n{i}.yaml": f"mac: 52:54:00:aa:cc:0{i}\nprofile: local-disk\n"}
            revisions.append(tree.commit(f"c{i}", node))
            assert daemon.reconcile_once() is Result.APPLIED
        stored = sorted(p.name for p in (tmp_path / "state" / "generations").iterdir())
        assert stored == sorted(revisions[-2:])
        assert set(daemon.holder.retained()) == set(revisions[-2:])
    finally:
        daemon.shutdown()



def test_without_the_worker_a_commit_lets_go_of_the_generation_before(tree: WorkTree, tmp_path: Path) -> None:
    """--no-worker with the render memo: a patched render names the generation it was patched from
    (`RenderedFiles.since`, its entries dict: 766,680 entries at 100,000 nodes); once the render is
    done nothing may keep that alive for the whole next commit (found by review: the served
    generation did). Generations kept: 1, so the holder retains none but the current one. A dict
    takes no weak reference: its reference count says whether anything but this test holds it."""
    tree.commit("nodes", {f"nodes/n{i}.yaml": f"mac: 52:54:00:aa:dd:0{i}\nprofile: local-disk\n" for i in range(3)})
    daemon = make_daemon(str(tree.path), tmp_path / "state", reuse_renders=True, keep_generations=1)
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        first = daemon.holder.current()
        assert first is not None and isinstance(first.files, RenderedFiles)
        entries = first.files.entries
        del first
        tree.commit("a label", {"nodes/n1.yaml": "mac: 52:54:00:aa:dd:01\nprofile: local-disk\nlabels: {a: b}\n"})
        assert daemon.reconcile_once() is Result.APPLIED
        assert daemon.holder.retained() == (tree.head(),)
        assert sys.getrefcount(entries) == 2  # `entries` and the call's argument: nothing else
    finally:
        daemon.shutdown()


def test_generations_are_kept_while_the_results_store_cannot_say_which_are_in_use(
    tree: WorkTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Which generations machines still install from is read from the stored boot events; with
    # the writer behind (events not on disk yet), nothing is collected rather than the wrong one.
    daemon = make_daemon(str(tree.path), tmp_path / "state", keep_generations=1)
    try:
        assert daemon.store is not None
        monkeypatch.setattr(daemon.store, "flush", lambda timeout=5.0: False)
        revisions = []
        for i in range(3):
            node = {f"nodes/n{i}.yaml": f"mac: 52:54:00:aa:dd:0{i}\nprofile: local-disk\n"}
            revisions.append(tree.commit(f"c{i}", node))
            assert daemon.reconcile_once() is Result.APPLIED
        stored = {p.name for p in (tmp_path / "state" / "generations").iterdir()}
        assert set(revisions) <= stored
        monkeypatch.undo()  # caught up: the next activation collects down to keep_generations
        revisions.append(tree.commit("c3", {"nodes/n3.yaml": "mac: 52:54:00:aa:dd:03\nprofile: local-disk\n"}))
        assert daemon.reconcile_once() is Result.APPLIED
        assert [p.name for p in (tmp_path / "state" / "generations").iterdir()] == [revisions[-1]]
    finally:
        daemon.shutdown()

def rendered(tree: WorkTree, revision: str) -> dict[str, bytes]:
    validation = validate(read_tree(pygit2.Repository(str(tree.path)), revision))
    assert validation.state is not None
    return dict(render_generation(validation.state))


def test_collected_generations_lend_their_inodes_and_kept_ones_stay_intact(tree: WorkTree, tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = make_daemon(str(tree.path), state, keep_generations=2)
    try:
        daemon.reconcile_once()
        first = tree.head()
        first_inodes = {os.stat(p).st_ino for p in (state / "generations" / first).rglob("*")
                        if p.is_file() and os.stat(p).st_nlink == 1}
        revisions = [first]
        for i in range(4):
            node = {f"nodes/n{i}.yaml": f"mac: 52:54:00:aa:cc:0{i}\nprofile: local-disk\n"}
            revisions.append(tree.commit(f"c{i}", node))
            assert daemon.reconcile_once() is Result.APPLIED
            for revision in daemon.artifacts.stored():  # every kept generation, byte for byte
                stored = daemon.artifacts.load(revision)
                assert dict(stored.files) == rendered(tree, revision), revision
        newest = {os.stat(p).st_ino for rev in revisions[-2:] for p in (state / "generations" / rev).rglob("*")
                  if p.is_file()}
        assert first_inodes & newest, "no inode of a collected generation was reused"
        assert sorted(p.name for p in (state / "generations").iterdir()) == sorted(revisions[-2:])
        pool = list((state / "recycle").iterdir())
        assert pool and all(p.name[0] in "spd" and p.name[1:].isdigit() for p in pool)
        assert all(not any(p.iterdir()) for p in pool if p.is_dir())  # recycled directories are empty
    finally:
        daemon.shutdown()


def test_debris_of_a_crash_is_recycled_at_start(tree: WorkTree, tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = make_daemon(str(tree.path), state)
    daemon.reconcile_once()
    daemon.shutdown()
    head = tree.head()
    # What kill -9 can leave: a half-written generation, a collection half done, a dirty pool entry.
    torn = state / "generations" / ("f" * 40 + ".tmp")
    (torn / "ipxe").mkdir(parents=True)
    (torn / "ipxe" / "node-1.ipxe").write_text("#!ipxe\n# half")
    os.link(state / "generations" / head / "dhcpd.conf", torn / "dhcpd.conf")
    parked = state / "recycle" / ("gen-" + "e" * 40)
    (parked / "grub").mkdir(parents=True)
    (parked / "grub" / "node-1.cfg").write_text("old")
    (state / "recycle" / "d999").mkdir()
    (state / "recycle" / "d999" / "stray").write_text("x")
    again = make_daemon(str(tree.path), state)
    try:
        assert f"revision {head}" in served_script(again)
        assert [p.name for p in (state / "generations").iterdir()] == [head]
        pool = list((state / "recycle").iterdir())
        assert all(p.name[0] in "spd" and p.name[1:].isdigit() for p in pool)
        assert all(not any(p.iterdir()) for p in pool if p.is_dir())
        assert (state / "generations" / head / "dhcpd.conf").stat().st_nlink == 1  # the torn link is gone
        second = tree.commit("after the crash", {"nodes/n9.yaml": "mac: 52:54:00:aa:cc:09\nprofile: local-disk\n"})
        assert again.reconcile_once() is Result.APPLIED
        assert dict(again.artifacts.load(second).files) == rendered(tree, second)
    finally:
        again.shutdown()


def test_the_served_state_is_kept_out_of_the_collectors_passes(tree: WorkTree, tmp_path: Path) -> None:
    # A full pass of the cyclic collector would walk every object of the served state with the
    # GIL held (packet threads paused); activation settles it out of the way (reconciler.heap),
    # at start from disk and after each commit.
    daemon = make_daemon(str(tree.path), tmp_path / "state")
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        first = daemon.holder.current()
        assert first is not None
        walked = {id(obj) for obj in gc.get_objects()}
        assert id(first.state) not in walked and id(first.state.nodes) not in walked
        tree.commit("second", {"nodes/node-9.yaml": "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"})
        assert daemon.reconcile_once() is Result.APPLIED
        second = daemon.holder.current()
        assert second is not None and second is not first
        walked = {id(obj) for obj in gc.get_objects()}
        assert id(second.state.nodes) not in walked
    finally:
        daemon.shutdown()
        gc.unfreeze()


def test_a_commit_that_validates_but_fails_to_render_is_invalid_not_retried(tree: WorkTree, tmp_path: Path) -> None:
    """The renderer renders each template twice (the second time without a revision, for the
    instance-id); validation once. A failure there was an internal error retried forever."""
    daemon = make_daemon(str(tree.path), tmp_path / "state")
    try:
        daemon.reconcile_once()
        good = tree.head()
        profile = (tree.path / "profiles" / "ubuntu-2204-install.yaml").read_text()
        tree.commit("a build tag", {"profiles/ubuntu-2204-install.yaml": profile.replace(
            "    - console=ttyS0,115200n8\n", "    - console=ttyS0,115200n8\n    - build={{ revision[0] }}\n")})
        assert daemon.reconcile_once() is Result.REJECTED
        assert f"revision {good}" in served_script(daemon)
        status = daemon.status()
        assert status["condition"] == Condition.STALLED
        [finding] = status["findings"]
        assert finding["code"] == "template-error" and finding["file"].startswith("nodes/")
        assert "rendering failed" in finding["message"] and "profile 'ubuntu-2204-install'" in finding["message"]
        assert daemon.reconcile_once() is Result.UNCHANGED  # not retried
        assert [r["result"] for r in daemon.status()["reconciles"]] == ["rejected", "applied"]
    finally:
        daemon.shutdown()


def test_a_remote_that_accepts_and_never_answers_fails_the_reconcile_instead_of_holding_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-open connection or a stuck git server held the loop for good: no backoff, no new
    commit ever picked up. The network timeouts end the attempt; the loop retries as for any
    unreachable remote."""
    monkeypatch.setattr(gitsource, "CONNECT_TIMEOUT_MS", 1000)
    monkeypatch.setattr(gitsource, "SERVER_TIMEOUT_MS", 1000)
    held: list[socket.socket] = []
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        port = blackhole.getsockname()[1]
        accepting = threading.Thread(target=lambda: held.append(blackhole.accept()[0]), daemon=True)
        accepting.start()
        daemon = make_daemon(f"http://127.0.0.1:{port}/site.git", tmp_path / "state")
        try:
            outcome: list[Result] = []
            attempt = threading.Thread(target=lambda: outcome.append(daemon.reconcile_once()), daemon=True)
            attempt.start()
            attempt.join(60)
            assert outcome == [Result.FAILED], "the reconcile is still waiting on the silent remote"
            status = daemon.status()
            assert status["reason"] == "SourceUnavailable" and status["consecutive_failures"] == 1
            assert held, "the remote was never connected to"
        finally:
            daemon.shutdown()
            for sock in held:
                sock.close()
    pygit2.settings.server_connect_timeout = gitsource.CONNECT_TIMEOUT_MS  # the module's own again
    pygit2.settings.server_timeout = gitsource.SERVER_TIMEOUT_MS


def test_a_mirror_libgit2_cannot_open_is_fetched_again(tree: WorkTree, tmp_path: Path) -> None:
    """The mirror is a cache: a damaged one kept the daemon from starting, and from serving."""
    remote = tree.bare_remote(tmp_path / "remote.git")
    daemon = make_daemon(f"file://{remote}", tmp_path / "state")
    try:
        assert daemon.reconcile_once() is Result.APPLIED
    finally:
        daemon.shutdown()
    (tmp_path / "state" / "repo.git" / "config").write_text("[core\n\tbroken = = =\n")
    daemon = make_daemon(f"file://{remote}", tmp_path / "state")
    try:
        assert daemon.holder.current() is not None  # current served from disk at once
        assert daemon.reconcile_once() is Result.UNCHANGED
        assert (tmp_path / "state" / "repo.git" / "HEAD").exists()
    finally:
        daemon.shutdown()


def test_the_status_is_that_of_the_desired_revision_after_an_outage_and_force_pushes(
        tree: WorkTree, tmp_path: Path) -> None:
    """Condition, reason, message and findings come from one state: before, an outage left a
    Stalled status with the outage's reason and message, a force-push back to the applied
    commit a Ready one with the invalid commit's findings, and the invalid commit pushed again
    a Stalled one with reason Succeeded."""
    remote = tree.bare_remote(tmp_path / "remote.git")
    good = tree.head()
    daemon = make_daemon(f"file://{remote}", tmp_path / "state")

    def status() -> tuple[str, str, bool, list[str]]:
        s = daemon.status()
        return s["condition"], s["reason"], "no-such-profile" in s["message"] or "error" in s["message"], \
            sorted(f["code"] for f in s["findings"])

    try:
        assert daemon.reconcile_once() is Result.APPLIED
        bad = tree.commit("break node-1", {"nodes/node-1.yaml": INVALID_NODE})
        tree.push()
        assert daemon.reconcile_once() is Result.REJECTED
        stalled = ("Stalled", "InvalidRevision", True, ["ref-profile"])
        assert status() == stalled
        os.rename(remote, tmp_path / "away.git")
        assert daemon.reconcile_once() is Result.FAILED
        assert daemon.status()["reason"] == "SourceUnavailable"
        os.rename(tmp_path / "away.git", remote)
        assert daemon.reconcile_once() is Result.UNCHANGED
        assert status() == stalled
        git(tree.path, "reset", "-q", "--hard", good)
        tree.push(force=True)
        assert daemon.reconcile_once() is Result.UNCHANGED
        assert status() == ("Ready", "Succeeded", False, [])
        git(tree.path, "reset", "-q", "--hard", bad)
        tree.push(force=True)
        assert daemon.reconcile_once() is Result.UNCHANGED
        assert status() == stalled
    finally:
        daemon.shutdown()


def test_a_refused_write_says_the_store_is_unwritable_not_a_guess_from_the_step(
        tree: WorkTree, tmp_path: Path) -> None:
    """The reason comes from the error the artifact store raised (`StoreUnwritable`), not from
    the step's name (everything but `fetch` used to be `RetryingAfterError`)."""
    daemon = make_daemon(str(tree.path), tmp_path / "state")
    try:
        recycle = tmp_path / "state" / "recycle"
        recycle.rmdir()
        recycle.write_text("not a directory\n")  # the write step opens it as one: ENOTDIR
        assert daemon.reconcile_once() is Result.FAILED
        status = daemon.status()
        assert status["condition"] == "Reconciling"
        assert status["reason"] == "StoreUnwritable"
        assert status["message"].startswith("write: writing generation: ")
        recycle.unlink()
        recycle.mkdir()
        assert daemon.reconcile_once() is Result.APPLIED
    finally:
        daemon.shutdown()


def test_a_revision_missing_from_the_repository_is_invalid_with_a_source_finding(tmp_path: Path) -> None:
    """read_tree raises InvalidRevision itself, with the finding the daemon records."""
    from reconciler.core.errors import InvalidRevision

    tree = WorkTree(tmp_path / "repo")
    repo = pygit2.Repository(str(tree.path))
    with pytest.raises(InvalidRevision) as caught:
        read_tree(repo, tree.head(), "no-such-dir")
    assert [(i.file, i.code) for i in caught.value.findings] == [("no-such-dir", "source")]
