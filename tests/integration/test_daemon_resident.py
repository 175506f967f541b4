"""The long-lived worker (daemon.resident) and serving before persisting (daemon.persist), with
real processes and real git: one worker process for commit after commit, keeping its render memo
in memory; a CPU budget per commit, not per process life; a commit past it is invalid and the
next one gets a fresh worker; the result patched from what changed equals the whole result; a
commit is served even while its generation cannot be written, and a `kill -9` before it is
written leaves the previous `current`, which the restarted daemon serves, then the head."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import mmap
import os
import pickle
import re
import resource
import signal
import time
from pathlib import Path

import pytest

from reconciler.adapters.artifacts import ArtifactStore
from reconciler.adapters.dirsource import read_directory
from reconciler.core import bootplan
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState
from reconciler.core.render import RenderedFiles, render_generation
from reconciler.core.render.reuse import NodeMemo
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.daemon import resident, worker
from reconciler.daemon.steps import RENDER_MEMO
from reconciler.daemon.targets import stamps_of
from tests.integration.daemon_support import NODE1_MAC, DaemonProcess, WorkTree, http_get, wait_for

SECRET = b"resident-test-secret"
render = functools.partial(render_generation, report_secret=SECRET)


def _bulk(i: int, note: str = "") -> str:
    extra = f"labels: {{note: {note}}}\n" if note else ""
    return f"mac: 52:54:05:00:{i >> 8 & 255:02x}:{i & 255:02x}\nprofile: local-disk\n{extra}"


def _bulk_edits() -> list[dict[str, str | None]]:
    """A change, a removal, an addition and a rename of the 40 `_bulk` nodes, one commit each."""
    return [
        {"nodes/bulk-3.yaml": _bulk(3, "x")},
        {"nodes/bulk-4.yaml": None},
        {"nodes/bulk-99.yaml": _bulk(99)},
        {"nodes/bulk-3.yaml": None, "nodes/bulk-r3.yaml": _bulk(3, "x")},  # a rename
    ]


def snapshot(tree: WorkTree) -> Snapshot:
    """The work tree as a commit would be: a revision spelt like a git one (the memo needs that)."""
    snap = read_directory(tree.path)
    return dataclasses.replace(snap, revision=hashlib.sha1(snap.revision.encode()).hexdigest())


def burn(state: DesiredState) -> dict[str, bytes]:
    """0.8 s of CPU, then the real rendering: a commit well within a 2 s budget."""
    until = time.process_time() + 0.8
    while time.process_time() < until:
        pass
    return dict(render(state))


def spin_on_marker(state: DesiredState) -> dict[str, bytes]:
    """Renders, unless a node named `spin` is there: then it never ends (a pathological commit)."""
    if any(n.name == "spin" for n in state.nodes):
        while True:
            pass
    return dict(render(state))



def refuse_writes(state: Path) -> None:
    """Make the daemon's generation writes fail from now on (its `recycle` directory becomes a
    file), with nothing else changed: a commit is still served, its write refused."""
    recycle = state / "recycle"
    for entry in recycle.iterdir():
        entry.unlink() if entry.is_file() else entry.rmdir()
    recycle.rmdir()
    recycle.write_text("not a directory\n")


def allow_writes(state: Path) -> None:
    """Undo `refuse_writes`."""
    (state / "recycle").unlink()
    (state / "recycle").mkdir()


def test_a_cpu_budget_per_commit_not_per_worker_life(tmp_path: Path) -> None:
    """Four commits of 0.8 s CPU each under a 2 s budget: one process (RLIMIT_CPU counts its whole
    life; the budget is set again before each commit) renders them all."""
    tree = WorkTree(tmp_path / "repo")
    pool = resident.Worker(burn, worker.Limits(cpu_seconds=2))
    try:
        pids = set()
        for n in range(4):
            tree.write({"nodes/bulk-1.yaml": _bulk(1, f"c{n}")})
            built = pool.build(snapshot(tree))
            assert built.files == render(built.state)
            pids.add(built.pid)
        assert len(pids) == 1
    finally:
        pool.close()


def test_a_worker_started_ahead_builds_the_first_commit(tmp_path: Path) -> None:
    """The daemon starts its worker before the first commit's snapshot is read (the forkserver's
    interpreter and imports then overlap it): the child is up before any build and builds it."""
    tree = WorkTree(tmp_path / "repo")
    pool = resident.Worker(render)
    try:
        pool.prestart()
        pid = wait_for(lambda: pool.pid, "the worker process started ahead of any commit")
        built = pool.build(snapshot(tree))
        assert built.pid == pid and built.files == render(built.state)
    finally:
        pool.close()
    assert pool.pid is None


def test_entries_copied_ahead_are_what_the_next_commit_patches_and_the_last_result_stays(tmp_path: Path) -> None:
    """`Worker.copy_ahead` (the daemon's after-serving thread, once a commit is served): the next
    one-node commit's patch fills that copy instead of copying the last result's entries then;
    the result is the whole render, and the last result (still served) is unchanged."""
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(40)})
    pool = resident.Worker(render)
    try:
        first = pool.build(snapshot(tree))
        kept = list(first.files.items())
        pool.copy_ahead()
        ahead = pool._ahead
        assert ahead is not None and ahead.of is first.files.entries  # type: ignore[attr-defined]
        tree.write({"nodes/bulk-3.yaml": _bulk(3, "x")})
        second = pool.build(snapshot(tree))
        assert isinstance(second.files, RenderedFiles) and second.files.entries is ahead.entries
        assert list(second.files.items()) == list(render(second.state).items())
        assert list(first.files.items()) == kept
        pool.copy_ahead()
        again = pool._ahead
        tree.write({"nodes/bulk-4.yaml": _bulk(4, "y")})
        third = pool.build(snapshot(tree))  # made from `second`, which the copy is of
        assert again is not None and third.files.entries is again.entries  # type: ignore[attr-defined]
        assert list(third.files.items()) == list(render(third.state).items())
    finally:
        pool.close()


def test_a_commit_over_the_cpu_budget_is_invalid_and_the_next_gets_a_fresh_worker(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    pool = resident.Worker(spin_on_marker, worker.Limits(cpu_seconds=1))
    try:
        first = pool.build(snapshot(tree))
        tree.write({"nodes/spin.yaml": _bulk(7)})
        with pytest.raises(InvalidRevision) as caught:
            pool.build(snapshot(tree))
        [finding] = caught.value.findings
        assert finding.code == "resource-limit" and "CPU time" in finding.message
        tree.write({"nodes/spin.yaml": None, "nodes/bulk-1.yaml": _bulk(1, "after")})
        after = pool.build(snapshot(tree))
        assert after.pid != first.pid
        assert after.files == render(after.state)  # whole: the fresh worker had nothing to patch onto
        assert after.state.node_by_mac("52:54:05:00:00:01") is not None
    finally:
        pool.close()


def test_the_patched_result_is_the_whole_result_and_verify_catches_a_wrong_patch(tmp_path: Path) -> None:
    """Each result after the first crosses the pipe as its changes (a few paths, not all); with
    `verify` the worker sends the whole result too and the patched one is checked against it."""
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(40)})
    pool = resident.Worker(render, verify=True)
    try:
        first = pool.build(snapshot(tree))
        total = len(first.files)
        built = first
        for edit in _bulk_edits():
            tree.write(edit)
            before, built = built, pool.build(snapshot(tree))
            assert built.patch_mismatched == ()
            assert built.files == render(built.state)
            assert 0 < built.timings["files.sent"] < total / 4, built.timings
            assert built.timings["nodes.sent"] <= 1, built.timings
        # a patch gone wrong (the parent's copy of the last result no longer what the worker sent)
        stable = next(p for p, data in sorted(built.files.items()) if before.files.get(p) == data and "bulk-5" not in p)
        assert pool._last is not None and isinstance(pool._last.files, RenderedFiles)
        assert isinstance(pool._last.files.entries, dict)
        pool._last.files.entries[stable] = b"wrong\n"
        tree.write({"nodes/bulk-5.yaml": _bulk(5, "y")})
        built = pool.build(snapshot(tree))
        assert built.patch_mismatched == (stable,)
        assert built.files == render(built.state)  # the whole result is what is served
        tree.write({"nodes/bulk-6.yaml": _bulk(6, "y")})
        built = pool.build(snapshot(tree))  # and the next is whole, then patched again
        assert built.patch_mismatched == () and built.files == render(built.state)
    finally:
        pool.close()


def test_the_boot_checks_index_of_an_invalid_commit_is_not_made_on_the_next_commits_path(tmp_path: Path) -> None:
    """The worker makes the boot check's index of a pass (core.bootpass) once it has sent a valid
    result; an invalid commit's was made at the next commit's validation instead, and thrown away
    when that commit has another node count (~0.3 s at 100,000 nodes; found by review). Never a
    wrong answer: `replay` declines such an index. The worker's timings count the indexes made
    on the commit's path."""
    tree = WorkTree(tmp_path / "repo")
    tree.commit("bulk", {f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(40)})
    pool = resident.Worker(render)
    try:
        pool.build(snapshot(tree))
        tree.commit("a node of no profile", {"nodes/bulk-99.yaml": _bulk(99).replace("local-disk", "missing")})
        with pytest.raises(InvalidRevision):
            pool.build(snapshot(tree))
        tree.commit("fixed, and a label", {"nodes/bulk-99.yaml": None, "nodes/bulk-3.yaml": _bulk(3, "x")})
        fixed = pool.build(snapshot(tree))
        assert fixed.timings["validate.index.built"] == 0
        tree.commit("another label", {"nodes/bulk-4.yaml": _bulk(4, "y")})
        assert pool.build(snapshot(tree)).timings["validate.index.built"] == 0  # made while idle, used
        assert fixed.files == render(fixed.state)
    finally:
        pool.close()


def test_a_whole_result_is_followed_by_its_plan_digests_taken_or_not(tmp_path: Path) -> None:
    """A fresh worker's result comes with its nodes' plan digests, as the daemon would compute
    them; a patched one without; digests never taken do not stop the next commit."""
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(40)})
    pool = resident.Worker(render)
    try:
        first = pool.build(snapshot(tree))
        assert first.plans is not None
        got = first.plans()
        assert got is not None and got[0] == stamps_of(first.state, first.files)
        assert got[1] == [t.plan for t in bootplan.targets(first.state, first.files)]
        assert first.plans() is None  # taken once
        tree.write({"nodes/bulk-3.yaml": _bulk(3, "x")})
        second = pool.build(snapshot(tree))
        assert second.plans is None and second.change is not None
        pool.close()  # a fresh worker: whole again, its digests left untaken
        third = pool.build(snapshot(tree))
        assert third.plans is not None
        tree.write({"nodes/bulk-4.yaml": _bulk(4, "x")})
        fourth = pool.build(snapshot(tree))
        assert fourth.change is not None and fourth.files == render(fourth.state)
    finally:
        pool.close()


def test_one_worker_process_serves_commit_after_commit_with_its_memo_in_memory(tmp_path: Path) -> None:
    """The second commit reuses the rendered nodes without reading `render-memo` (made unreadable
    here); the worker process started once."""
    tree = WorkTree(tmp_path / "repo")
    tree.commit("bulk", {f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(50)})
    state = tmp_path / "state"
    daemon = DaemonProcess(str(tree.path), state, ["--interval", "3600"]).start()
    try:
        daemon.wait_served(tree.head())
        for n in range(2):
            (state / RENDER_MEMO).write_bytes(b"not a memo")
            revision = tree.commit(f"change {n}", {"nodes/bulk-1.yaml": _bulk(1, f"c{n}")})
            daemon.wait_served(revision)
        wait_for(lambda: len(re.findall(r"worker\.memo\.reused=", daemon.log())) >= 3, "three applied reconciles")
        log = daemon.log()
        reused = [float(m) for m in re.findall(r"worker\.memo\.reused=([0-9.]+)", log)]
        assert reused[-2:] and min(reused[-2:]) >= 50, reused
        assert len(re.findall(r"worker process \d+ started", log)) == 1, log[-3000:]
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_a_commit_is_served_before_it_is_written_and_kill_9_then_leaves_the_previous_current(
        tmp_path: Path) -> None:
    """The state directory refuses the new generation (its inode pool is not a directory): the
    commit is served anyway, /status says it is not on disk; `kill -9`; `current` is the previous
    generation, complete; restarted (the pool fixed), the daemon serves that, then the head, and
    writes it."""
    tree = WorkTree(tmp_path / "repo")
    first = tree.head()
    state = tmp_path / "state"
    daemon = DaemonProcess(str(tree.path), state, ["--interval", "3600"]).start()
    try:
        daemon.wait_served(first)
        daemon.wait_persisted(first)
        refuse_writes(state)
        head = tree.commit("node-9", {"nodes/node-9.yaml": "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"})
        daemon.wait_served(head)
        status = wait_for(lambda: (s := daemon.status()) and s.get("persist_problem")
                          and s["last_applied_revision"] == head and s, "the failed write in /status")
        assert status["persisted_revision"] == first
        assert status["persisting_revision"] == head
        assert ("Degraded", "StoreUnwritable") in [(c["type"], c["reason"]) for c in status["conditions"]]
        assert ArtifactStore(state).current_revision() == first
    finally:
        daemon.kill()
    store = ArtifactStore(state)
    assert store.current_revision() == first
    assert store.stored() == [first]
    allow_writes(state)
    again = DaemonProcess(str(tree.path), state, ["--interval", "3600"], port=daemon.port).start(wait=False)
    try:
        again.wait_served(head)
        again.wait_persisted(head)
        assert store.current_revision() == head and head in again.ipxe(NODE1_MAC)
        assert store.load(head).files["ipxe/node-1.ipxe"] == (state / "current" / "ipxe" / "node-1.ipxe").read_bytes()
        assert "serving the current generation from disk" in again.log()
    finally:
        assert again.stop() == 0, again.log()[-3000:]


def test_a_generation_served_but_superseded_before_its_write_stays_reachable_by_its_revision(
        tmp_path: Path) -> None:
    """B is served while writes are refused (the inode pool is not a directory), then C supersedes
    its write; writes work again and C is written. A machine that booted from B fetches B's pinned
    URLs (/r/<B>/...) mid-install: they still answer B's bytes, as they would had B been written
    (keep_generations is 10: B is one of the newest)."""
    tree = WorkTree(tmp_path / "repo")
    state = tmp_path / "state"
    daemon = DaemonProcess(str(tree.path), state, ["--interval", "3600"]).start()
    try:
        daemon.wait_persisted(tree.head())
        refuse_writes(state)
        b = tree.commit("node-9", {"nodes/node-9.yaml": "mac: 52:54:00:aa:bb:99\nprofile: local-disk\n"})
        daemon.wait_served(b)
        wait_for(lambda: (daemon.status() or {}).get("persist_problem"), "B's refused write in /status")
        script = daemon.ipxe(NODE1_MAC)
        seed = re.search(rf"/r/{b}/cloud-init/[^\s;\"']+/", script)
        assert seed is not None, script
        pinned = [seed.group(0) + name for name in ("user-data", "meta-data")]
        pinned += [p for p in set(re.findall(rf"/r/{b}/[^\s;\"']+", script)) if http_get(daemon.url + p)[0] == 200]
        served = {path: http_get(daemon.url + path) for path in pinned}
        assert all(code == 200 for code, _ in served.values()), served
        c = tree.commit("node-10", {"nodes/node-10.yaml": "mac: 52:54:00:aa:bb:98\nprofile: local-disk\n"})
        daemon.wait_served(c)
        allow_writes(state)
        daemon.wait_persisted(c)
        assert b not in ArtifactStore(state).stored()  # never written: in memory only
        assert {path: http_get(daemon.url + path) for path in pinned} == served
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_a_metadata_value_changed_from_1_to_true_reaches_the_daemons_state(tmp_path: Path) -> None:
    """1, true and 1.0 are equal as Python values (so as Nodes) but render differently: the worker
    sends the node again, and --verify-incremental tells such a stale node from the real one.
    (No HTTP surface shows a node's metadata from the daemon's state, only rendered files, which
    were right: so this asserts on the worker's result, the daemon's Generation.state.)"""
    tree = WorkTree(tmp_path / "repo")
    mac = "52:54:05:00:00:01"
    pool = resident.Worker(render, verify=True)
    try:
        values: list[object] = []
        for value in ("1", "true", "1.0"):
            tree.write({"nodes/bulk-1.yaml": _bulk(1) + f"metadata: {{x: {value}}}\n"})
            built = pool.build(snapshot(tree))
            assert built.patch_mismatched == ()
            node = built.state.node_by_mac(mac)
            assert node is not None
            values.append(node.metadata["x"])
        assert [(type(v), v) for v in values] == [(int, 1), (bool, True), (float, 1.0)]
        # the parent's copy of the last node made stale (equal as a value): verify finds it
        assert pool._last is not None
        stale = pool._last.nodes["bulk-1"]
        pool._last.nodes["bulk-1"] = dataclasses.replace(stale, metadata={"x": 1})
        tree.write({"nodes/bulk-2.yaml": _bulk(2)})
        built = pool.build(snapshot(tree))
        assert built.patch_mismatched == ("state",)
        node = built.state.node_by_mac(mac)
        assert node is not None and type(node.metadata["x"]) is float
    finally:
        pool.close()


def test_nodes_with_the_same_labels_and_metadata_share_them_in_the_daemon_and_equal_values_of_other_types_do_not(
        tmp_path: Path) -> None:
    """Issue 25 (the daemon's memory): the nodes of a whole result that repeat labels and metadata
    hold one dict each (~450 bytes a node of bench/render_scale's repository), never one whose
    values are equal but of other types or shapes (1, true, 1.0; 0.0 and -0.0; a YAML anchor's
    shared list): each node is still exactly what validation made of its file, pickle for pickle."""
    tree = WorkTree(tmp_path / "repo")
    same = "labels: {rack: r1, role: worker}\nmetadata: {keys: [a, b], n: 2}\n"
    others = ["metadata: {keys: [a, b], n: 2.0}\n", "metadata: {keys: [a, b], n: true}\n",
              "metadata: {x: 0.0}\n", "metadata: {x: -0.0}\n",
              "metadata: {keys: &k [a, b], more: *k}\n", "metadata: {keys: [a, b], more: [a, b]}\n"]
    tree.write({**{f"nodes/bulk-{i}.yaml": _bulk(i) + same for i in range(1, 4)},
                **{f"nodes/bulk-{10 + i}.yaml": _bulk(10 + i) + text for i, text in enumerate(others)}})
    pool = resident.Worker(render)
    try:
        snap = snapshot(tree)
        built = pool.build(snap)
    finally:
        pool.close()
    by_name = {n.name: n for n in built.state.nodes}
    first, *rest = (by_name[f"bulk-{i}"] for i in range(1, 4))
    assert all(n.labels is first.labels and n.metadata is first.metadata for n in rest)
    scratch_state = validate(snap).state
    assert scratch_state is not None
    scratch = {n.name: n for n in scratch_state.nodes}
    for i in range(len(others)):
        name = f"bulk-{10 + i}"
        assert pickle.dumps(by_name[name]) == pickle.dumps(scratch[name]), name
    assert [repr(by_name[f"bulk-{10 + i}"].metadata) for i in range(4)] == [
        "{'keys': ['a', 'b'], 'n': 2.0}", "{'keys': ['a', 'b'], 'n': True}", "{'x': 0.0}", "{'x': -0.0}"]


def test_a_wrong_dhcp_chunk_is_found_once_by_verify_and_the_next_commit_matches(tmp_path: Path) -> None:
    """The render memo's DHCP chunks (each node's part of the site-wide configs) corrupted: the
    verified render finds the configs wrong, serves the whole render and drops the memo, chunks
    included, so the next commit's memo render matches."""
    tree = WorkTree(tmp_path / "repo")
    memo = NodeMemo()
    snap = snapshot(tree)
    files, mismatched = worker.render_reusing(render, validate(snap).for_site(None), memo, True)
    assert mismatched == () and memo.chunks
    for key in memo.chunks:
        memo.chunks[key] = "# corrupt\n"
    tree.write({"nodes/bulk-1.yaml": _bulk(1)})
    files, mismatched = worker.render_reusing(render, validate(snapshot(tree)).for_site(None), memo, True)
    assert mismatched and b"# corrupt" not in b"".join(files.values())
    tree.write({"nodes/bulk-2.yaml": _bulk(2)})
    files, mismatched = worker.render_reusing(render, validate(snapshot(tree)).for_site(None), memo, True)
    assert mismatched == ()


_HELD: list[mmap.mmap] = []  # in the worker process: what earlier commits left (like its caches)
_FIRST_HEADROOM: list[int] = []


def leaky(state: DesiredState) -> dict[str, bytes]:
    """Each commit keeps 60% of the address space that was free at this process's first commit
    (reserved, not touched): the first commit in a process fits, a second in the same one does not."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if not _FIRST_HEADROOM:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * resource.getpagesize()
        _FIRST_HEADROOM.append(soft - used)
    try:
        _HELD.append(mmap.mmap(-1, _FIRST_HEADROOM[0] * 6 // 10))
    except OSError as exc:
        raise MemoryError from exc  # what an allocation past RLIMIT_AS raises
    return dict(render(state))


def test_a_worker_out_of_memory_after_earlier_commits_tries_the_commit_in_a_fresh_one(tmp_path: Path) -> None:
    """The second commit fits a fresh worker but not the one the first commit left grown: it is
    built (in a fresh process), not refused as over the memory limit."""
    tree = WorkTree(tmp_path / "repo")
    pool = resident.Worker(leaky, worker.Limits(memory_bytes=2 << 30))
    try:
        first = pool.build(snapshot(tree))
        tree.write({"nodes/bulk-1.yaml": _bulk(1)})
        second = pool.build(snapshot(tree))
        assert second.pid != first.pid
        assert second.files == render(second.state)
    finally:
        pool.close()


def test_a_worker_is_replaced_after_restart_every_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its caches (the templates' lru caches) only grow: after RESTART_EVERY commits a fresh
    process builds the next, from the memo it wrote at stop."""
    monkeypatch.setattr(resident, "RESTART_EVERY", 2)
    tree = WorkTree(tmp_path / "repo")
    pool = resident.Worker(render, memo=tmp_path / RENDER_MEMO)
    try:
        pids = []
        for n in range(3):
            tree.write({"nodes/bulk-1.yaml": _bulk(1, f"c{n}")})
            built = pool.build(snapshot(tree))
            assert built.files == render(built.state)
            pids.append(built.pid)
        assert pids[0] == pids[1] != pids[2]
    finally:
        pool.close()


def whole(snap: Snapshot) -> DesiredState:
    """The state a snapshot validates to, in this process."""
    state = validate(snap).state
    assert state is not None
    return state


def test_the_worker_is_sent_the_changed_files_and_a_fresh_one_after_a_kill_the_whole_snapshot(
        tmp_path: Path) -> None:
    """After the first commit only the files a commit changed cross to the worker (`snapshot.sent`),
    and what it builds is what the whole snapshot gives; a worker killed between commits (the
    OOM killer, by hand) is replaced, and the fresh one is sent the whole snapshot."""
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(40)})
    pool = resident.Worker(render, verify=True)
    try:
        first = pool.build(snapshot(tree))
        total = len(snapshot(tree).files)
        assert first.timings["snapshot.sent"] == total
        built = first
        for edit in _bulk_edits():
            tree.write(edit)
            built = pool.build(snapshot(tree))
            assert built.patch_mismatched == ()  # verify: the snapshot rebuilt in the worker is the whole one
            assert built.timings["snapshot.sent"] <= 2, built.timings
            assert built.files == render(whole(snapshot(tree)))
        os.kill(built.pid, signal.SIGKILL)
        tree.write({"nodes/bulk-5.yaml": _bulk(5, "after the kill")})
        after = pool.build(snapshot(tree))
        assert after.pid != built.pid
        assert after.timings["snapshot.sent"] == len(snapshot(tree).files)
        assert after.files == render(whole(snapshot(tree)))
    finally:
        pool.close()


def test_verify_catches_a_snapshot_rebuilt_wrong_in_the_worker(tmp_path: Path) -> None:
    """The parent's idea of the snapshot its worker holds gone wrong (a bug): the changes it sends
    leave out a file; with `verify` the worker builds the whole snapshot and says which file."""
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": _bulk(i) for i in range(5)})
    pool = resident.Worker(render, verify=True)
    try:
        pool.build(snapshot(tree))
        tree.write({"nodes/bulk-2.yaml": _bulk(2, "new")})
        now = snapshot(tree)
        assert pool._held is not None
        pool._held = dataclasses.replace(pool._held, files={**pool._held.files,
                                                            "nodes/bulk-2.yaml": now.files["nodes/bulk-2.yaml"]})
        built = pool.build(now)
        assert built.patch_mismatched == ("snapshot: nodes/bulk-2.yaml",)
        assert built.files == render(whole(now))  # the whole snapshot's
    finally:
        pool.close()
