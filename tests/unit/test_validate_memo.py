"""validate(snapshot, memo=ValidateMemo()) over any sequence of commits gives what validating each
commit from scratch gives (issue 25): the same findings, in the same order with the same lines,
and the same states; files whose bytes did not change are not parsed again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.docmemo import ValidateMemo
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import Validation, validate
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
])


def outcome(result: Validation) -> tuple[object, ...]:
    return result.issues, repr(result.state), repr(sorted(result.sites.items()))


Step = tuple[_Edit | None, tuple[str, str] | None]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(edits().map(lambda e: (e, None)), _FAULTS.map(lambda f: (None, f))),
                min_size=1, max_size=12))
def test_validating_with_a_memo_equals_validating_from_scratch(steps: list[Step]) -> None:
    files = base_files()
    memo = ValidateMemo()
    for number, (edit, fault) in enumerate(steps):
        if edit is not None:
            _apply(files, edit)
        if fault is not None:
            files[fault[0]] = fault[1].encode()
        snapshot = Snapshot(f"rev{number}", dict(files))
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
