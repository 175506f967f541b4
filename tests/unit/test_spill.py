"""The worker's spill file (`daemon.spill`): a whole render with a spill keeps its memo's large
entries on disk, not in memory, and everything read from it is what the render made: the files
served (stamped), the entries sent to the daemon (`Spill.resolved`: as stored, a plain entry as
plain bytes), the memo file written from it (read back and reused by a restarted render), and a
next commit patched onto it; also when a forked child rendered half of the nodes (their entries
are spilled as they arrive, on the thread that receives them) and the file is written in small
pieces (reads across what is written and what is still buffered)."""

from __future__ import annotations

import functools
import hashlib
import pickle
from pathlib import Path
from typing import Any

import pytest

from bench.render_scale import make_snapshot
from reconciler.adapters import renderfork
from reconciler.adapters.agecrypt import load_identity
from reconciler.core import secrets
from reconciler.core.model import DesiredState
from reconciler.core.render import fanout, render_generation, render_served
from reconciler.core.render.files import RenderedFiles, Spilled, entry_size, spilled_in, unspilled
from reconciler.core.render.reuse import Kept, NodeMemo, spilling
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.daemon import resident, spill, worker
from tests import repo_builder
from tests.integration.daemon_support import ROOT

SECRET = b"spill-test-secret"
NODES = 60
render = functools.partial(render_generation, report_secret=SECRET)


def snapshot(revision: bytes, changed: str = "") -> Snapshot:
    """bench.render_scale's repository of NODES nodes (enough for a forked render to have halves);
    `changed`: a label of one node's."""
    files = make_snapshot(NODES)
    if changed:
        files["nodes/n00007.yaml"] = files["nodes/n00007.yaml"].replace(b"role: worker", changed.encode())
    return Snapshot(hashlib.sha1(revision).hexdigest(), files)


def state_of(snap: Snapshot) -> DesiredState:
    result = validate(snap)
    assert result.state is not None, result.issues
    return result.for_site(None)


def spilled_render(state: DesiredState, memo: NodeMemo, into: spill.Spill) -> RenderedFiles:
    with spilling(into.entries):
        return render(state, memo=memo)


@pytest.fixture(params=["one process", "forked"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(spill, "FLUSH_BYTES", 4096)  # many small writes, and reads across them
    if request.param == "forked":
        monkeypatch.setenv(renderfork.FANOUT_MIN_ENV, "2")
    return str(request.param)


def test_a_spilled_render_serves_sends_and_stores_what_one_without_makes(tmp_path: Path, walker: str) -> None:
    state = state_of(snapshot(b"one"))
    kept = NodeMemo(code=worker.CODE)
    plain = render(state, memo=kept)  # the same render, nothing spilled
    into = spill.Spill(tmp_path)
    memo = NodeMemo(code=worker.CODE, sentinel=kept.sentinel)
    forked = renderfork.counts["forked"]
    with fanout.using(renderfork.walk if walker == "forked" else fanout.one_by_one):
        files = spilled_render(state, memo, into)
    assert (renderfork.counts["forked"] > forked) == (walker == "forked")
    spilled = {p: e for p, e in files.entries.items() if spilled_in(e) is not None}
    assert into.spilled > 0 and len(spilled) >= len(state.nodes)
    assert any(isinstance(e, Spilled) for e in spilled.values())  # plain ones too (matchbox groups): the Spilled itself
    assert dict(files) == dict(render(state))  # served: the bytes a render from scratch makes
    assert into.resolved(files.entries.items()) == plain.entries  # sent: the entries as stored, in path order
    assert unspilled(files.entries) == plain.entries
    assert any(spilled_in(e) is not None  # the memo's own dicts hold them
               for k in memo.entries.values() for e in k.entries.values())
    for path, entry in spilled.items():  # pickled (sent any other way), a spilled entry is the entry as rendered
        again = pickle.loads(pickle.dumps(entry))
        assert again == plain.entries[path] and type(again) is type(plain.entries[path])
        assert spilled_in(again) is None


def test_a_memo_written_from_a_spilled_one_is_read_back_whole_and_reused(tmp_path: Path, walker: str) -> None:
    state = state_of(snapshot(b"one"))
    into = spill.Spill(tmp_path)
    memo = NodeMemo(code=worker.CODE)
    with fanout.using(renderfork.walk if walker == "forked" else fanout.one_by_one):
        spilled_render(state, memo, into)
    path = tmp_path / "render-memo"
    worker._save_memo(path, memo)
    into.close()  # what the memo file holds no longer depends on the spill
    loaded = worker._load_memo(path)
    assert loaded.entries and all(isinstance(e, bytes) or type(e[0]) is bytes
                                  for kept in loaded.entries.values() for e in kept.entries.values())
    files = render(state, memo=loaded)
    assert (loaded.hits, loaded.misses) == (len(state.nodes), 0)
    assert dict(files) == dict(render(state))
    assert files.entries == render(state, memo=NodeMemo(sentinel=loaded.sentinel)).entries  # plain stays plain


def test_the_next_commit_patched_onto_a_spilled_render_is_the_full_render(tmp_path: Path, walker: str) -> None:
    into = spill.Spill(tmp_path)
    memo = NodeMemo(code=worker.CODE)
    with fanout.using(renderfork.walk if walker == "forked" else fanout.one_by_one):
        first = spilled_render(state_of(snapshot(b"one")), memo, into)
        state = state_of(snapshot(b"two", changed="role: db"))  # one node's labels
        spilled = into.spilled
        second = spilled_render(state, memo, into)
    assert second.since is not None and into.spilled > spilled  # patched, the node rendered again spilled
    assert dict(second) == dict(render(state))
    assert all(spilled_in(e) is not None for kept in memo.entries.values() for e in kept.entries.values()
               if entry_size(e) >= spill.SMALLEST)  # the memo keeps no large bytes in memory
    delta = second.delta_from(first)
    assert not delta.full and 0 < len(delta.entries) < len(second.entries) // 4
    sent = into.resolved(delta.entries.items())
    assert delta.apply(RenderedFiles(into.resolved(first.entries.items()), first.revision, first.sentinel,
                                     first.secret)).entries == into.resolved(second.entries.items())
    assert all(type(e) is bytes or type(e[0]) is bytes for e in sent.values())


def test_a_spill_that_cannot_be_written_keeps_the_bytes_in_memory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state = state_of(snapshot(b"one"))
    into = spill.Spill(tmp_path)
    monkeypatch.setattr(spill, "FLUSH_BYTES", 20_000)  # what was put before the write failed stays readable

    def refused(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill, "_write", refused)
    memo = NodeMemo(code=worker.CODE)
    files = spilled_render(state, memo, into)
    assert into.broken and into.spilled
    assert dict(files) == dict(render(state))
    assert into.resolved(files.entries.items()) == unspilled(files.entries)


def test_a_spilled_render_without_a_stand_in_serves_its_files_as_they_are(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Secure Boot the memo keeps no node: the nodes' files are plain, at the revision, and a
    generation has no stand-in to replace (replacing "" would put the revision between every byte)."""
    monkeypatch.setattr(spill, "SMALLEST", 1)
    site = repo_builder.BASE["netboot.yaml"] + "secure_boot: true\n"
    state = state_of(repo_builder.snapshot({"netboot.yaml": site}, revision=hashlib.sha1(b"sb").hexdigest()))
    into = spill.Spill(tmp_path)
    files = spilled_render(state, NodeMemo(code=worker.CODE), into)
    assert files.sentinel == "" and into.spilled
    assert dict(files) == dict(render(state))
    assert into.resolved(files.entries.items()) == render(state).entries


def test_a_full_render_over_spilled_kept_nodes_parses_only_the_new_user_data(tmp_path: Path, walker: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A node added: the full loop runs over nodes the memo keeps spilled; what `render_served`
    found of their user-data (noted on the spilled entries) is not looked for again."""
    decrypt = load_identity(ROOT / "contrib" / "example-age-identity.txt")
    served = functools.partial(render_served, report_secret=SECRET, decrypt=decrypt)
    into = spill.Spill(tmp_path)
    memo = NodeMemo(code=worker.CODE)
    parsed: list[bytes] = []
    real = secrets.still_yaml

    def counting(data: bytes) -> bool:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(secrets, "still_yaml", counting)
    with fanout.using(renderfork.walk if walker == "forked" else fanout.one_by_one), spilling(into.entries):
        served(state_of(snapshot(b"one")), memo=memo)
        assert parsed
        files = dict(snapshot(b"two").files) | {"nodes/n99999.yaml": make_snapshot(1)["nodes/n00000.yaml"].replace(
            b"52:54:00:00:00:01", b"52:54:00:99:99:01").replace(b"10.0.1.1\n", b"10.0.9.9\n")}
        state = state_of(Snapshot(hashlib.sha1(b"two").hexdigest(), files))
        parsed.clear()
        second = served(state, memo=memo)
    assert len(parsed) <= 2  # the new node's (here and maybe in the forked child), not every kept one's
    assert dict(second) == dict(served(state))


def test_a_worker_whose_spill_files_are_mostly_dead_bytes_is_replaced(tmp_path: Path) -> None:
    """Every node rendered again appends its bytes to the spill files and leaves the old ones there
    (unlinked: `du` does not see them) until the worker process goes: a template every node uses,
    changed commit after commit, grew them without bound (0.4 GB a time at 100,000 nodes). Once
    they hold over twice what the memo reads (past a slack, 0 here: worker.Limits.spill_slack),
    the worker is replaced before the next commit; the fresh one stays, one-node commits included."""
    template = "cloud-init/ubuntu-autoinstall.yaml"
    files = make_snapshot(NODES)
    pool = resident.Worker(render, worker.Limits(spill_slack=0))
    pids, replaced = [], []
    try:
        for number in range(5):
            if number:  # every install node's user-data changes, and a node comes: a whole render again
                files[template] = files[template] + f"\n# change {number}\n".encode()
                files[f"nodes/extra-{number}.yaml"] = files["nodes/n00007.yaml"].replace(
                    b":07:01\n", b":%02x:02\n" % number).replace(b".8\n", b".%d\n" % (200 + number))
            built = pool.build(Snapshot(hashlib.sha1(b"%d" % number).hexdigest(), dict(files)))
            assert dict(built.files) == dict(render(built.state))
            pids.append(built.pid)
            replaced.append(built.timings.get("spill.replace", 0.0))
        # one node's labels, twice: patched commits (the node's bytes spilled again)
        kept = [pool.build(Snapshot(hashlib.sha1(label).hexdigest(), {
            **files, "nodes/n00007.yaml": files["nodes/n00007.yaml"].replace(b"role: worker", label)}))
            for label in (b"role: other", b"role: db")]
    finally:
        pool.close()
    first = replaced.index(1.0)  # the first commit whose files outgrew the memo
    assert first >= 2, replaced  # one render again leaves as many dead bytes as live ones: not yet
    assert pids[first + 1] != pids[first] and len(set(pids[:first + 1])) == 1, pids
    # The fresh worker's files hold what its memo reads, then one render again: it stays for every
    # commit after, and the patched ones do not ask for another.
    assert first + 1 < len(pids) and replaced[first + 1:] == [0.0] * (len(pids) - first - 1), replaced
    assert [*pids[first + 1:], *(built.pid for built in kept)] == [pids[first + 1]] * (len(pids) - first + 1), \
        (pids, [built.pid for built in kept])
    assert not any("spill.replace" in built.timings for built in kept)


def test_kept_nodes_a_forked_child_sends_back_are_the_entries_the_worker_holds(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: a full loop whose fresh nodes (new objects, equal pickles) the memo keeps spilled,
    half of them in a forked render child: their entries come back pickled, as they were before
    they were spilled, plain ones plain. A plain one came back stamped-shaped, `(bytes, "", b"")`,
    and was sent so to a daemon given the whole result. A spilled plain entry was shaped so in the
    worker too, `(SpilledPlain, "", b"")`: a node rendered again on the patch path (not spilled)
    had each of its large plain entries counted as changed and sent, though the bytes were the same."""
    monkeypatch.setenv(renderfork.FANOUT_MIN_ENV, "2")
    # The child reads the worker's spilled bytes from the buffer not yet written: it holds none
    # of the worker's descriptors (`renderfork._bound_to`), so a read from the file fails there
    # and the worker renders the rest of the child's nodes itself.
    monkeypatch.setattr(spill, "FLUSH_BYTES", 1 << 30)
    delivered: list[bool] = []
    take = renderfork._Child.take

    def counted(child: renderfork._Child, index: int) -> tuple[object, float] | None:
        got = take(child, index)
        delivered.append(got is not None)
        return got

    monkeypatch.setattr(renderfork._Child, "take", counted)
    template = "cloud-init/ubuntu-autoinstall.yaml"
    one = make_snapshot(NODES)
    two = {**one, "nodes/n99999.yaml": one["nodes/n00000.yaml"].replace(
        b"52:54:00:00:00:01", b"52:54:00:99:99:01").replace(b"10.0.1.1\n", b"10.0.9.9\n")}
    three = {**two, template: two[template] + b"\n# changed\n"}  # every install node rendered again
    states = [state_of(Snapshot(hashlib.sha1(b"%d" % i).hexdigest(), files)) for i, files in enumerate((one, two))]
    into = spill.Spill(tmp_path)
    memo = NodeMemo(code=worker.CODE)
    with fanout.using(renderfork.walk), spilling(into.entries):
        first = render(states[0], memo=memo)
        delivered.clear()
        # validated again (new Node objects, equal pickles: all fresh) with a node added: the full loop
        second = render(states[1], memo=memo)
        assert delivered and all(delivered)  # the child's share came from the child
        states.append(state_of(Snapshot(hashlib.sha1(b"2").hexdigest(), three)))
        third = render(states[2], memo=memo)  # patched: the install nodes rendered again here
    assert third.since is not None
    scratch = NodeMemo(code=worker.CODE, sentinel=memo.sentinel)
    made = [render(state, memo=scratch) for state in states]  # one process, nothing spilled
    assert into.resolved(first.entries.items()) == made[0].entries
    assert into.resolved(second.entries.items()) == made[1].entries  # a fresh daemon is sent these
    sent, expected = third.delta_from(second), made[2].delta_from(made[1])
    assert into.resolved(sent.entries.items()) == expected.entries and sent.removed == expected.removed


def test_outgrown_sums_the_live_bytes_again_only_once_a_64th_of_them_was_spilled_since(tmp_path: Path) -> None:
    """`Spill.outgrown` does not sum every kept node's size (~0.5 ms at 10,000 nodes) whenever
    anything was spilled (a patched one-node commit's node), only once more than a 64th of the
    live bytes it found was spilled since; then it sees the bound passed."""
    looks: list[int] = []

    class Counted(dict[str, Kept]):
        def values(self) -> Any:
            looks.append(len(self))
            return super().values()

    into = spill.Spill(tmp_path, slack=0)
    memo = NodeMemo(code=worker.CODE)
    memo.entries = Counted({f"n{i}": Kept(None, {}, 1000) for i in range(64)})  # 64,000 live bytes
    for size, outgrown, looked in ((64_000, False, 1), (500, False, 1), (500, False, 1), (64_000, True, 2)):
        into.entries({"ipxe/node.ipxe": b"x" * size})
        assert into.outgrown(memo) == outgrown and len(looks) == looked, (size, looks)
    assert into.spilled == 129_000  # over twice the live bytes: seen 1,000 bytes late at most
