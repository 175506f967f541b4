"""validate(snapshot, memo=ValidateMemo()) over any sequence of commits gives what validating each
commit from scratch gives (issue 25): the same findings, in the same order with the same lines,
and the same states; files whose bytes did not change are not parsed again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import build
from reconciler.core.docmemo import ValidateMemo
from reconciler.core.model import Node
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import Validation, validate
from reconciler.core.yamldoc import parse_yaml
from reconciler.daemon import snapdelta
from tests.repo_builder import files as base_files
from tests.unit.test_render_reuse import _apply, _Edit, edits

# Edits whose findings need positions: a field the schema does not know, a key written twice, a
# profile no node names that the sites' nodes do, YAML that does not parse.
_FAULTS = st.sampled_from([
    ("nodes/node-1.yaml", "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\nlabel: {rack: r1}\n"),
    ("nodes/node-2.yaml", "mac: 52:54:00:aa:bb:02\nprofile: install\nprofile: local\n"),
    ("nodes/node-2.yaml", "mac: 52:54:00:aa:bb:02\nprofile: instal\n"),
    ("groups/default.yaml", "profile: local\nselector: {mac: 52:54:00:aa:bb:01}\nbogus: 1\n"),
    ("profiles/local.yaml", "name: Local disk\nboot: {kernel: 7}\n"),
    ("nodes/node-1.yaml", "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\n"),
    # a second file of the same node name, names the format refuses: the node memo's findings
    ("nodes/node-1.yml", "mac: 52:54:00:aa:bb:09\nprofile: install\n"),
    ("nodes/Node_3.yaml", "mac: 52:54:00:aa:bb:03\nprofile: install\n"),
    ("nodes/group-x.yaml", "mac: 52:54:00:aa:bb:04\nprofile: install\n"),
    ("nodes/node-1.yml", "mac: 52:54:00:aa:bb:09\nprofile: [install]\n"),
    # boot templates without the revision (their renders are kept, core.docmemo.BootMemo): one
    # failing for a node without metadata, one unsafe, a user-data that lints
    ("profiles/local.yaml",
     "name: L\nboot:\n  kernel: /assets/k\n  args: ['a={{ metadata.note.x }}', 'b={{ name }}']\n"),
    ("profiles/local.yaml", "name: L\nboot:\n  kernel: /assets/{{ labels.rack }}\n  args: ['{{ hostname }}', '||']\n"),
    ("profiles/local.yaml", "name: L\nboot: {kernel: /assets/k}\ncloud_init: autoinstall\n"),
    ("cloud-init/autoinstall.yaml", "#cloud-config\nhostname: {{ name }}\nhostname: {{ mac }}\n"),
    ("nodes/node-2.yaml", "mac: 52:54:00:aa:bb:02\nprofile: local\nmetadata: {note: {x: 1}}\n"),
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nprofile: local\nlabels: {rack: r3}\n"),
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nprofile: local\nlabels: {rack: 'r 3'}\n"),
    # cross references (core.crossref, its memo): duplicates of MAC, address and name, which node
    # is first, the pool, groups selecting a node with another profile or tied, a group file's
    # lines moved, a one-machine group, a new profile name (the suggestions)
    ("nodes/node-2.yaml", "mac: 52:54:00:aa:bb:01\nip: 10.10.10.202\nprofile: install\n"),
    ("nodes/node-0.yaml", "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\n"),
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nprofile: local\nhostname: node-1\n"),
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nip: 10.10.10.50\nprofile: local\n"),
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nip: 10.10.10.201\nprofile: local\nlabels: {rack: r1}\n"),
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nip: 10.10.11.5\nprofile: lokal\n"),
    ("groups/rack.yaml", "profile: local\nselector: {rack: r1}\n"),
    ("groups/rack.yaml", "# moved down\n\nprofile: local\nselector: {rack: r1}\n"),
    ("groups/rack2.yaml", "profile: install\nselector: {rack: r1}\n"),
    ("groups/m1.yaml", "profile: local\nselector: {mac: 52:54:00:aa:bb:03}\n"),
    ("profiles/locale.yaml", "name: X\nboot: {}\n"),
    # replayed boot checks (core.bootcheck's traces): the same args or user-data for many nodes
    # (linted once, by the first node: which one changes with edits), a finding whose line moves
    # with the profile's text alone, assets listed or not for a path that differs per node
    ("profiles/local.yaml", "name: L\nboot:\n  kernel: /assets/{{ labels.rack }}\n"
     "  args: ['url=/assets/x.iso', '||']\n"),
    ("profiles/local.yaml", "# moved\nname: L\nboot:\n  kernel: /assets/{{ labels.rack }}\n"
     "  args: ['url=/assets/x.iso', '||']\n"),
    ("profiles/local.yaml", "name: L\nboot: {kernel: /assets/k}\ncloud_init: plain\n"),
    ("cloud-init/plain.yaml", "#cloud-config\nhostname: a\nhostname: b\n"),
    ("cloud-init/plain.yaml", "#cloud-config\nhostname: {{ hostname }}\n"),
    ("assets.yaml", "assets:\n  - path: /assets/r1\n    url: https://example.com/r1\n    sha256: " + "ab" * 32 + "\n"),
    ("nodes/node-4.yaml", "mac: 52:54:00:aa:bb:04\nprofile: local\nlabels: {rack: r1}\n"),
    ("nodes/node-0.yaml", "mac: 52:54:00:aa:bb:00\nprofile: local\nlabels: {rack: r2}\n"),
    # bmc: inherited from a group or incomplete (core.bmcinherit's memo), the group's lines moved
    ("nodes/node-3.yaml", "mac: 52:54:00:aa:bb:03\nprofile: install\nlabels: {rack: r1}\nbmc: {address: '10.0.0.3'}\n"),
    ("nodes/node-1.yaml", "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\nlabels: {rack: r1}\n"
     "bmc: {address: '10.0.0.1:6230'}\n"),
    ("groups/rack.yaml", "profile: install\nselector: {rack: r1}\nbmc: {driver: ipmi, credentials: lab}\n"),
    ("groups/rack.yaml", "# moved\nprofile: install\nselector: {rack: r1}\nbmc: {driver: ipmi}\n"),
])


def outcome(result: Validation) -> tuple[object, ...]:
    return result.issues, repr(result.state), repr(sorted(result.sites.items()))


Step = tuple[_Edit | None, tuple[str, str] | None]


_STEPS = st.lists(st.one_of(edits().map(lambda e: (e, None)), _FAULTS.map(lambda f: (None, f))),
                  min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(_STEPS)
def test_validating_with_a_memo_equals_validating_from_scratch(steps: list[Step]) -> None:
    _check_steps(steps, lambda number: f"rev{number}")


@settings(max_examples=40, deadline=None)
@given(_STEPS)
def test_validating_at_git_revisions_with_a_memo_equals_validating_from_scratch(steps: list[Step]) -> None:
    """Revisions spelt like git's: templates naming the revision as a whole output are checked at
    the memo's stand-in and replayed at the next revision (core.bootcheck)."""
    _check_steps(steps, lambda number: hashlib.sha1(str(number).encode()).hexdigest())


@settings(max_examples=40, deadline=None)
@given(_STEPS)
def test_validating_snapshots_rebuilt_from_deltas_told_what_changed_equals_from_scratch(steps: list[Step]) -> None:
    """As the daemon's worker validates: each snapshot rebuilt from the last one and the daemon's
    delta (daemon.snapdelta), the memo told which paths the delta names (`ValidateMemo.since`),
    so the parse looks at those alone: edits, additions, deletions and renames as from scratch."""
    files = base_files()
    memo = ValidateMemo()
    held: Snapshot | None = None
    for number, (edit, fault) in enumerate(steps):
        if edit is not None:
            _apply(files, edit)
        if fault is not None:
            files[fault[0]] = fault[1].encode()
        snapshot = Snapshot(f"rev{number}", dict(files))
        delta = snapdelta.between(held, snapshot) if held is not None else None
        rebuilt = snapdelta.apply(held, delta) if held is not None and delta is not None else snapshot
        memo.since = snapdelta.since(held, rebuilt, delta)
        assert outcome(validate(rebuilt, memo=memo)) == outcome(validate(snapshot))
        held = rebuilt


def _check_steps(steps: list[Step], revision: Callable[[int], str]) -> None:
    files = base_files()
    memo = ValidateMemo()
    for number, (edit, fault) in enumerate(steps):
        if edit is not None:
            _apply(files, edit)
        if fault is not None:
            files[fault[0]] = fault[1].encode()
        snapshot = Snapshot(revision(number), dict(files))
        assert outcome(validate(snapshot, memo=memo)) == outcome(validate(snapshot))


def test_unchanged_files_are_not_parsed_again() -> None:
    files = base_files()
    memo = ValidateMemo()
    first = validate(Snapshot("rev1", dict(files)), memo=memo)
    parsed = memo.misses
    files["nodes/node-1.yaml"] = files["nodes/node-1.yaml"].replace(b"r1", b"r9")
    second = validate(Snapshot("rev2", dict(files)), memo=memo)
    assert memo.misses == parsed + 1  # only the changed file
    assert first.state is not None and second.state is not None
    assert {n.name: n.labels for n in second.state.nodes}["node-1"] == {"rack": "r9"}


def test_unchanged_node_files_give_the_same_node_objects() -> None:
    """The render memo's identity shortcut (`NodeMemo.last`) applies only to the very Node object
    of the last commit: a node whose file did not change must be that object, not an equal one."""
    files = base_files()
    memo = ValidateMemo()
    first = validate(Snapshot("rev1", dict(files)), memo=memo)
    files["nodes/node-1.yaml"] = files["nodes/node-1.yaml"].replace(b"r1", b"r9")
    second = validate(Snapshot("rev2", dict(files)), memo=memo)
    assert first.state is not None and second.state is not None
    before = {n.name: n for n in first.state.nodes}
    after = {n.name: n for n in second.state.nodes}
    assert after["node-1"] is not before["node-1"]
    unchanged = [name for name in after if name != "node-1" and before[name].bmc is None]
    assert unchanged and all(after[name] is before[name] for name in unchanged)


def test_unchanged_nodes_boot_templates_are_not_rendered_again() -> None:
    """A node, its profile and templates unchanged, and templates that do not name the revision:
    the boot check replays its renders (core.docmemo.BootMemo); a changed node is rendered."""
    files = base_files()
    files["profiles/local.yaml"] = b"name: L\nboot:\n  kernel: /assets/k\n  args: ['h={{ hostname }}']\n"
    for i in range(3):
        files[f"nodes/l{i}.yaml"] = f"mac: 52:54:00:aa:cc:0{i}\nprofile: local\n".encode()
    memo = ValidateMemo()
    validate(Snapshot("rev1", dict(files)), memo=memo)
    files["nodes/l0.yaml"] = b"mac: 52:54:00:aa:cc:00\nprofile: local\nhostname: other\n"
    validate(Snapshot("rev2", dict(files)), memo=memo)
    assert sum(m.hits for m in memo.boot.values()) == 2  # l1 and l2; l0 changed, node-1/2 name the revision


def test_nodes_whose_templates_name_the_revision_are_replayed_at_the_next_git_revision() -> None:
    """The install profile's args name `cloud_init_url` (it holds the revision): at revisions
    spelt like git's, its unchanged nodes are replayed from renders at the memo's stand-in, and
    the outcome is what checking them at the new revision gives, a finding quoting the revision
    too; a template using the revision otherwise (`revision[:7]`) is checked afresh."""
    files = base_files()
    for i in range(3):
        files[f"nodes/i{i}.yaml"] = f"mac: 52:54:00:aa:cc:0{i}\nprofile: install\n".encode()
    memo = ValidateMemo()

    def revision(number: int) -> str:
        return hashlib.sha1(str(number).encode()).hexdigest()
    validate(Snapshot(revision(0), dict(files)), memo=memo)
    files["nodes/i0.yaml"] = b"mac: 52:54:00:aa:cc:00\nprofile: install\nhostname: other\n"
    snapshot = Snapshot(revision(1), dict(files))
    assert outcome(validate(snapshot, memo=memo)) == outcome(validate(snapshot))
    assert sum(m.replayed for m in memo.boot.values()) == 4  # node-1, node-2, i1, i2; i0 changed
    # an unsafe value holding the revision: its finding names the revision of the commit
    files["profiles/install.yaml"] = files["profiles/install.yaml"].replace(b"dsmode=net", b"dsmode=net '")
    for number in (2, 3):
        snapshot = Snapshot(revision(number), dict(files))
        result = validate(snapshot, memo=memo)
        assert outcome(result) == outcome(validate(snapshot))
        assert any(revision(number) in i.message for i in result.issues)
    files["profiles/install.yaml"] = files["profiles/install.yaml"].replace(
        b"dsmode=net '", b"dsmode=net\n    - v={{ revision[:7] }}")
    for number in (4, 5):
        before = sum(m.replayed for m in memo.boot.values())
        snapshot = Snapshot(revision(number), dict(files))
        assert outcome(validate(snapshot, memo=memo)) == outcome(validate(snapshot))
        assert sum(m.replayed for m in memo.boot.values()) == before


def test_a_changed_node_is_checked_with_fresh_renders() -> None:
    """Its profile and templates unchanged, the node's own change reaches the boot check: a label
    that makes its kernel path unsafe is found (with the memo as without)."""
    files = base_files()
    files["profiles/local.yaml"] = b"name: L\nboot:\n  kernel: /assets/{{ labels.rack }}\n"
    files["nodes/l0.yaml"] = b"mac: 52:54:00:aa:cc:00\nprofile: local\nlabels: {rack: r3}\n"
    memo = ValidateMemo()
    for number, rack in enumerate([b"r3", b"'r 3'", b"r3", b"'r 4'"]):
        files["nodes/l0.yaml"] = b"mac: 52:54:00:aa:cc:00\nprofile: local\nlabels: {rack: " + rack + b"}\n"
        snapshot = Snapshot(f"rev{number}", dict(files))
        assert outcome(validate(snapshot, memo=memo)) == outcome(validate(snapshot))
    assert any(i.code == "boot-value-unsafe" for i in validate(snapshot).issues)


@pytest.mark.parametrize("user_data", [False, True])
def test_a_lint_run_once_per_validation_is_run_by_the_next_node_when_the_first_changes(user_data: bool) -> None:
    """Nodes whose args (or user-data) render alike are linted once, by the first node: its
    findings are replayed from the memo (core.bootcheck's traces) only by a node that linted;
    when the first one changes or goes, the next must lint, as a validation from scratch does.
    The kernel path differs per node, so which node lints shows in the asset finding."""
    files = base_files()
    # with user-data, args of each node's own (each lints its args): the user-data alone is shared
    files["profiles/local.yaml"] = (b"name: L\nboot:\n  kernel: /assets/{{ labels.rack }}\n"
                                    + (b"  args: ['url=/assets/x.iso', 'h={{ name }}']\ncloud_init: plain\n"
                                       if user_data else b"  args: ['url=/assets/x.iso']\n"))
    files["cloud-init/plain.yaml"] = b"#cloud-config\nhostname: a\nhostname: b\n"
    files["assets.yaml"] = (b"assets:\n  - path: /assets/k\n    url: https://example.com/k\n"
                            b"    sha256: " + b"ab" * 32 + b"\n")
    for i in range(3):
        files[f"nodes/l{i}.yaml"] = f"mac: 52:54:00:aa:cc:0{i}\nprofile: local\nlabels: {{rack: r{i}}}\n".encode()
    memo = ValidateMemo()
    steps: list[tuple[str, bytes | None]] = [
        ("nodes/l0.yaml", b"mac: 52:54:00:aa:cc:00\nprofile: install\n"),  # l1 lints now
        ("nodes/l1.yaml", None),  # l2 does
        ("nodes/l0.yaml", b"mac: 52:54:00:aa:cc:00\nprofile: local\nlabels: {rack: r0}\n"),  # l0 again
    ]
    snapshot = Snapshot("rev0", dict(files))
    assert outcome(validate(snapshot, memo=memo)) == outcome(validate(snapshot))
    for number, (path, content) in enumerate(steps, start=1):
        if content is None:
            del files[path]
        else:
            files[path] = content
        snapshot = Snapshot(f"rev{number}", dict(files))
        result = validate(snapshot, memo=memo)
        assert outcome(result) == outcome(validate(snapshot))
        first = sorted(p for p in files if p.startswith("nodes/l") and b"local" in files[p])[0]
        rack = files[first].split(b"rack: ")[1].split(b"}")[0].decode()
        assert any(i.code == "asset-not-listed" and f"/assets/{rack}" in i.message for i in result.issues)
        assert any(i.file == "cloud-init/plain.yaml" for i in result.issues) == user_data
    assert sum(m.replayed for m in memo.boot.values()) > 0


def test_a_one_node_commit_checks_that_nodes_cross_references_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """core.crossref with the memo: a node the validation memo hands back unchanged is not checked
    against the profiles, sites and groups again, and a MAC it shares with the changed node is
    still found (the duplicate index), as from scratch."""
    from reconciler.core import crossref

    files = base_files()
    files["groups/rack.yaml"] = b"profile: local\nselector: {rack: r1}\n"
    for i in range(5):
        files[f"nodes/l{i}.yaml"] = f"mac: 52:54:00:aa:cc:0{i}\nprofile: local\n".encode()
    memo = ValidateMemo()
    validate(Snapshot("rev1", dict(files)), memo=memo)
    checked: list[str] = []
    def counting(real: Any) -> Any:
        def check(node: Node, *rest: Any) -> Any:
            checked.append(node.name)
            return real(node, *rest)
        return check
    for name in ("_own", "_selected"):
        monkeypatch.setattr(crossref, name, counting(getattr(crossref, name)))
    files["nodes/l3.yaml"] = b"mac: 52:54:00:aa:cc:01\nprofile: local\n"
    snapshot = Snapshot("rev2", dict(files))
    result = validate(snapshot, memo=memo)
    assert checked == ["l3", "l3"]
    assert [i.code for i in result.issues if i.file == "nodes/l3.yaml"] == ["duplicate-mac"]
    monkeypatch.undo()
    assert outcome(result) == outcome(validate(snapshot))


@pytest.mark.parametrize("changed", ["i3", "l0"], ids=["a node at the stand-in", "the first to lint shared args"])
def test_a_one_node_commit_replays_the_unchanged_nodes_boot_checks_in_runs(changed: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """core.bootpass: once a pass has looked at every node, the next commit's boot check visits
    the changed node only (and any whose replay depends on the nodes before it), the others'
    lints and sizes added in runs; the outcome is the one from scratch. `l0` is the node whose
    args lint the nodes after it lean on (their traces say another node ran it): changed, it
    still lints them, so they are not visited either."""
    from reconciler.core.bootcheck import BootPlanChecker

    files = base_files()
    files["profiles/local.yaml"] = b"name: L\nboot:\n  kernel: /assets/k\n  args: [quiet]\n"
    for i in range(6):
        files[f"nodes/i{i}.yaml"] = f"mac: 52:54:00:aa:cc:0{i}\nprofile: install\n".encode()
        files[f"nodes/l{i}.yaml"] = f"mac: 52:54:00:aa:dd:0{i}\nprofile: local\n".encode()
    memo = ValidateMemo()
    for number in range(3):  # the memo filled, then a pass over every node that leaves the index
        validate(Snapshot(_git(number), dict(files)), memo=memo)
    visited: list[str] = []
    real_replay, real_check = BootPlanChecker._replay, BootPlanChecker.check_node

    def replay(checker: BootPlanChecker, trace: Any, profile: Any, cloud_init: Any, node: str) -> bool:
        visited.append(node)
        return real_replay(checker, trace, profile, cloud_init, node)

    def check(checker: BootPlanChecker, node: Node, cloud_init: Any) -> None:
        visited.append(node.name)
        real_check(checker, node, cloud_init)
    monkeypatch.setattr(BootPlanChecker, "_replay", replay)
    monkeypatch.setattr(BootPlanChecker, "check_node", check)
    path = f"nodes/{changed}.yaml"
    files[path] = files[path] + b"labels: {rack: r9}\n"
    snapshot = Snapshot(_git(3), dict(files))
    result = validate(snapshot, memo=memo)
    assert set(visited) == {changed}
    monkeypatch.undo()
    assert outcome(result) == outcome(validate(snapshot))


def _git(number: int) -> str:
    """A revision spelt like git's (the boot check's stand-in needs one)."""
    return hashlib.sha1(str(number).encode()).hexdigest()


def test_a_memo_told_to_keep_nothing_forgets_what_it_made_too() -> None:
    """The daemon's check (`--verify`) empties a memo whose outcome differed from scratch with
    keep_only(()): the next validation parses every file again, and keeps no node's checks."""
    files = base_files()
    memo = ValidateMemo()
    validate(Snapshot("rev1", dict(files)), memo=memo)
    memo.keep_only(())
    misses = memo.misses
    files["nodes/node-1.yaml"] = files["nodes/node-1.yaml"].replace(b"r1", b"r9")
    snapshot = Snapshot("rev2", dict(files))
    assert outcome(validate(snapshot, memo=memo)) == outcome(validate(snapshot))
    assert memo.misses - misses == len([p for p in files if not p.startswith("cloud-init/")])


def test_a_node_file_parsed_anew_still_tells_what_it_built_last() -> None:
    """`ValidateMemo.built` answers with a node file's last build after the file's new bytes are
    parsed (what `build.nodes` puts only the changed files in by, instead of looking at every node
    file per commit), `node` builds the new Document anew, and the same Document again gives the
    same Node (the render memo's identity shortcut)."""
    memo, path = ValidateMemo(), "nodes/a.yaml"
    first, _ = memo.parse(path, b"mac: 52:54:00:aa:bb:01\nprofile: local\n", parse_yaml)
    assert first is not None and memo.built(path) is None
    built = memo.node(path, first, build.node_of)
    again, _ = memo.parse(path, b"mac: 52:54:00:aa:bb:02\nprofile: local\n", parse_yaml)
    assert again is not None and memo.built(path) == built
    now = memo.node(path, again, build.node_of)
    assert now[2] is not None and now[2].mac == "52:54:00:aa:bb:02"
    assert memo.node(path, again, build.node_of)[2] is now[2] and memo.built(path) == now
