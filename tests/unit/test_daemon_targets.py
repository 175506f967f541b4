"""The targets the daemon records after each activation (daemon.targets) reuse the last commit's
plan digests for unchanged nodes, and equal `bootplan.targets` computed from scratch for any
sequence of commits: the render-memo edits of test_render_reuse (nodes, profiles, templates with
and without the report token, netboot.yaml, renames, deletions) plus reinstall counters,
install-once and Secure Boot per profile; rendered with the memo, as the worker does; with and
without the worker's `Change` (the nodes and entries each commit changed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import bootplan
from reconciler.core.model import DesiredState, Node
from reconciler.core.render import NodeMemo, render_served
from reconciler.core.render.files import RenderedFiles
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.daemon.resident import _same
from reconciler.daemon.targets import Change, TargetMemo, plan_digests
from tests.repo_builder import files as base_files
from tests.unit.test_render_reuse import _REVISION, _apply, _Edit, edits

_MORE = st.sampled_from(["none", "none", "reinstall", "install_once", "secure_boot"])


def _more(files: dict[str, bytes], kind: str, n: int) -> None:
    nodes = sorted(p for p in files if p.startswith("nodes/"))
    if kind == "reinstall" and nodes:
        path = nodes[n % len(nodes)]
        text = b"".join(line for line in files[path].splitlines(keepends=True) if not line.startswith(b"reinstall:"))
        files[path] = text + f"reinstall: {n}\n".encode()
    elif kind in ("install_once", "secure_boot") and "profiles/install.yaml" in files:
        text = b"".join(line for line in files["profiles/install.yaml"].splitlines(keepends=True)
                        if not line.startswith(kind.encode()))
        if b"{" not in text[:1]:  # YAML (a profile edit writes JSON: left alone)
            files["profiles/install.yaml"] = text + f"{kind}: {'true' if n % 2 else 'false'}\n".encode()


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(edits(), _MORE, _REVISION), min_size=1, max_size=12),
       secret=st.sampled_from([None, b"report-secret"]))
def test_reused_digests_equal_the_digests_computed_from_scratch(steps: list[tuple[_Edit, str, str]],
                                                                 secret: bytes | None) -> None:
    files = base_files()
    render_memo, targets, told, planned = NodeMemo(), TargetMemo(), TargetMemo(), TargetMemo()
    before: tuple[DesiredState, RenderedFiles] | None = None
    for n, (edit, more, revision) in enumerate(steps):
        _apply(files, edit)
        _more(files, more, n)
        state = validate(Snapshot(revision, dict(files))).state
        if state is None:
            continue
        served = render_served(state, secret, memo=render_memo)
        expected = bootplan.targets(state, served)
        got, wrong = targets.targets(state, served, verify=True)
        assert wrong == ()
        assert got == expected
        assert told.targets(state, served, change=_change(before, state, served))[0] == expected
        # The worker's digests after a whole result (a fresh worker every third commit), else its
        # change; what they leave to reuse made at once or by the next call.
        digests = plan_digests(state, served)
        assert [d for d in digests if d is not None] == [t.plan for t in expected]
        whole = before is None or n % 3 == 0
        assert planned.targets(state, served, change=None if whole else _change(before, state, served),
                               planned=digests if whole else None) == (expected, ())
        if n % 2:
            planned.settle()
        before = (state, served)


def _change(before: tuple[DesiredState, RenderedFiles] | None, state: DesiredState,
            served: RenderedFiles) -> Change | None:
    """What the worker sends for this commit against the one before (daemon.resident)."""
    if before is None:
        return None
    nodes: dict[str, Node] = {n.name: n for n in before[0].nodes}
    changes = served.changed_since(before[1])
    changed = {n.name: n for n in state.nodes if n.name not in nodes or not _same(nodes[n.name], n)}
    return Change(before[1], changed, {name: nodes[name] for name in changed if name in nodes},
                  (*changes.changed, *changes.removed), list(nodes) == [n.name for n in state.nodes])


def test_a_one_node_commit_computes_one_digest() -> None:
    files = base_files({f"nodes/bulk-{i}.yaml": f"mac: 52:54:00:ee:00:{i:02x}\nprofile: install\n"
                        for i in range(30)})
    render_memo, targets = NodeMemo(), TargetMemo()
    state = validate(Snapshot("1" * 40, dict(files))).state
    assert state is not None
    targets.targets(state, render_served(state, b"k", memo=render_memo))
    assert targets.reused == 0
    files["nodes/bulk-3.yaml"] = b"mac: 52:54:00:ee:00:63\nprofile: install\n"
    state = validate(Snapshot("2" * 40, dict(files))).state
    assert state is not None
    served = render_served(state, b"k", memo=render_memo)
    second, _ = targets.targets(state, served)
    assert second == bootplan.targets(state, served)
    assert targets.reused == len(second) - 1


def test_a_one_node_commit_told_by_the_worker_looks_at_that_node() -> None:
    files = base_files({f"nodes/bulk-{i}.yaml": f"mac: 52:54:00:ee:00:{i:02x}\nprofile: local\n"
                        for i in range(30)})
    render_memo, targets = NodeMemo(), TargetMemo()
    first = validate(Snapshot("1" * 40, dict(files))).state
    assert first is not None
    before = render_served(first, None, memo=render_memo)
    targets.targets(first, before)
    files["nodes/bulk-3.yaml"] = b"mac: 52:54:00:ee:00:63\nprofile: local\n"
    state = validate(Snapshot("2" * 40, dict(files))).state
    assert state is not None
    served = render_served(state, None, memo=render_memo)
    change = _change((first, before), state, served)
    assert change is not None and list(change.nodes) == ["bulk-3"]
    second, _ = targets.targets(state, served, change=change)
    assert second == bootplan.targets(state, served)
    assert targets.reused == len(second) - 1


def test_digests_the_worker_got_wrong_are_named_under_verify_and_the_computed_ones_used() -> None:
    files = base_files({f"nodes/bulk-{i}.yaml": f"mac: 52:54:00:ee:00:{i:02x}\nprofile: install\n"
                        for i in range(10)})
    state = validate(Snapshot("1" * 40, dict(files))).state
    assert state is not None
    served = render_served(state, b"k", memo=NodeMemo())
    expected = bootplan.targets(state, served)
    digests = plan_digests(state, served)
    at = next(i for i, n in enumerate(state.nodes) if n.name == "bulk-3")
    digests[at] = "0" * 16
    assert TargetMemo().targets(state, served, planned=digests)[0] != expected  # taken as they come
    assert TargetMemo().targets(state, served, verify=True, planned=digests) == (expected, ("bulk-3",))
    digests[at] = None  # a targeted node without one: not taken
    assert TargetMemo().targets(state, served, planned=digests) == (expected, ())
