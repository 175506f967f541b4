"""A snapshot sent to the worker as its changes (daemon.snapdelta) rebuilds the snapshot exactly,
order included, over any sequence of edits: changed, added, removed and reordered files, bytes
equal but not the same object, refusals and commit facts; and what crosses is the change only."""

from __future__ import annotations

import dataclasses
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import Issue, Severity
from reconciler.core.snapshot import Changes, Snapshot
from reconciler.daemon import snapdelta

_PATHS = [f"nodes/n{i}.yaml" for i in range(8)] + ["netboot.yaml", "profiles/p.yaml"]
# path, new content number (None: delete), or ("shuffle", seed) / ("copy", 0): the same bytes as new objects
_ops = st.one_of(st.tuples(st.sampled_from(_PATHS), st.one_of(st.none(), st.integers(0, 2))),
                 st.tuples(st.just("shuffle"), st.integers(0, 1000)), st.tuples(st.just("copy"), st.just(0)))


def _snap(n: int, files: dict[str, bytes]) -> Snapshot:
    refused = (Issue(f"nodes/bad{n % 2}", 0, 0, "symlink", Severity.ERROR, "no"),) if n % 3 else ()
    return Snapshot(f"{n:040x}", files, refused=refused, origin="repo (main)", extra={"message": f"c{n}"})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_ops, min_size=0, max_size=4), min_size=1, max_size=12))
def test_a_snapshot_rebuilt_from_its_changes_is_the_snapshot_order_included(
        commits: list[list[tuple[str, int | None]]]) -> None:
    files: dict[str, bytes] = {"netboot.yaml": b"site\n"}
    held = _snap(0, dict(files))
    for n, ops in enumerate(commits, 1):
        for path, value in ops:
            if path == "shuffle":
                keys = sorted(files, key=lambda k: hash((k, value)))
                files = {k: files[k] for k in keys}
            elif path == "copy":
                files = {k: bytes(bytearray(v)) for k, v in files.items()}
            elif value is None:
                files.pop(path, None)
            else:
                files[path] = f"{path} {value}\n".encode()
        after = _snap(n, dict(files))
        delta = pickle.loads(pickle.dumps(snapdelta.between(held, after)))  # as it crosses the pipe
        rebuilt = snapdelta.apply(held, delta)
        assert rebuilt == after and list(rebuilt.files) == list(after.files)
        assert snapdelta.differences(rebuilt, after) == ()
        assert set(delta.changed) == {p for p in after.files if held.files.get(p) != after.files[p]}
        held = rebuilt


def test_an_unchanged_file_costs_nothing_and_the_order_is_not_sent_when_kept() -> None:
    before = _snap(1, {f"nodes/n{i}.yaml": f"{i}\n".encode() for i in range(1000)})
    after = _snap(2, {**before.files, "nodes/n5.yaml": b"five\n"})
    delta = snapdelta.between(before, after)
    assert delta.changed == {"nodes/n5.yaml": b"five\n"} and delta.removed == () and delta.order is None
    assert len(pickle.dumps(delta)) < len(pickle.dumps(after)) / 20


def test_differences_names_what_a_wrong_rebuild_got_wrong() -> None:
    right = _snap(1, {"a": b"1", "b": b"2"})
    assert snapdelta.differences(_snap(1, {"a": b"1", "b": b"3"}), right) == ("b",)
    assert snapdelta.differences(_snap(1, {"b": b"2", "a": b"1"}), right) == ("(the order of the files)",)
    assert snapdelta.differences(_snap(2, {"a": b"1", "b": b"2"}), right) == ("extra", "refused", "revision")


def test_changes_a_reader_says_give_the_same_delta_and_others_are_not_trusted() -> None:
    before = _snap(1, {f"nodes/n{i}.yaml": f"{i}\n".encode() for i in range(100)})
    files = {**before.files, "nodes/n5.yaml": b"five\n", "nodes/n7.yaml": bytes(bytearray(b"7\n"))}
    plain = snapdelta.between(before, _snap(2, files))
    said = snapdelta.between(before, _snap(2, files).with_changes(Changes(before.revision, ("nodes/n5.yaml",
                                                                                        "nodes/n7.yaml"))))
    assert said == plain and said.changed == {"nodes/n5.yaml": b"five\n"}
    # Said against another snapshot, or naming a path not there: every path is compared.
    other = _snap(2, files).with_changes(Changes(f"{9:040x}", ()))
    assert snapdelta.between(before, other) == plain
    wrong = _snap(2, files).with_changes(Changes(before.revision, ("nodes/n5.yaml", "nodes/gone.yaml")))
    assert snapdelta.between(before, wrong) == plain
    # Not a part of the value, and not carried to another snapshot by dataclasses.replace.
    assert other == _snap(2, files) and dataclasses.replace(other, files={}).changes is None
    assert snapdelta.differences(other, _snap(2, files)) == ()  # a rebuilt snapshot says nothing of it
