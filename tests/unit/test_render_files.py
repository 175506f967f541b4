"""The generation's files as the renderer hands them over (core.render.files, issue 25): a
`RenderedFiles` that reads like the dict it replaced, holds a node the memo kept as one shared
entry from commit to commit, and names what a commit changed by those entries: a one-node commit
changes that node's files, not the ~20,000 revision-carrying files of every other node."""

from __future__ import annotations

import pickle

from reconciler.core.docmemo import ValidateMemo
from reconciler.core.render import NodeMemo, render_generation
from reconciler.core.render.files import Older, RenderedFiles
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.generation import Generation, GenerationHolder
from tests.render_support import valid_state
from tests.repo_builder import files as base_files

SECRET = b"report-secret"


def _commit(files: dict[str, bytes], revision: str, memo: NodeMemo) -> RenderedFiles:
    return render_generation(valid_state(Snapshot(revision, dict(files))), SECRET, memo=memo)


def test_it_reads_like_the_dict_a_render_without_memo_gives() -> None:
    memo = NodeMemo()
    _commit(base_files(), "a" * 40, memo)
    files = _commit(base_files(), "b" * 40, memo)
    full = render_generation(valid_state(Snapshot("b" * 40, base_files())), SECRET)
    assert list(files) == sorted(files) == list(full)
    assert len(files) == len(full) and dict(files) == dict(full)
    for path in full:
        assert files[path] == files.get(path) == full[path] and path in files
    assert files.get("nope") is None and "nope" not in files
    assert b"/r/" + b"b" * 40 in files["ipxe/node-1.ipxe"]
    assert pickle.loads(pickle.dumps(files)) == full


def test_a_one_node_commit_changes_only_that_nodes_entries() -> None:
    memo = NodeMemo()
    tree = base_files()
    before = _commit(tree, "a" * 40, memo)
    tree["nodes/node-2.yaml"] += b"metadata: {x: 1}\n"
    after = _commit(tree, "b" * 40, memo)
    changes = after.changed_since(before)
    assert changes.removed == ()
    assert {p for p in changes.changed if "node-1" in p or "52:54:00:aa:bb:01" in p} == set()
    assert any("node-2" in p for p in changes.changed)
    assert not {"dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf"} & set(changes.changed)
    # the unchanged node is served at the new revision, with its token at it, from the same entry
    assert after.raw("ipxe/node-1.ipxe") is before.raw("ipxe/node-1.ipxe")
    assert before["ipxe/node-1.ipxe"] != after["ipxe/node-1.ipxe"]
    full = render_generation(valid_state(Snapshot("b" * 40, dict(tree))), SECRET)
    assert dict(after) == dict(full)
    delta = after.delta_from(before)
    assert not delta.full and set(delta.entries) == set(changes.changed)


def test_a_dhcp_change_changes_the_site_configs_and_a_deleted_node_is_removed() -> None:
    memo = NodeMemo()
    tree = base_files()
    before = _commit(tree, "a" * 40, memo)
    tree["nodes/node-2.yaml"] = tree["nodes/node-2.yaml"].replace(b"10.10.10.202", b"10.10.10.203")
    del tree["nodes/node-1.yaml"]
    after = _commit(tree, "b" * 40, memo)
    changes = after.changed_since(before)
    assert {"dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf"} <= set(changes.changed)
    assert "ipxe/node-1.ipxe" in changes.removed
    assert after.delta_from(before).apply(before) == render_generation(valid_state(Snapshot("b" * 40, dict(tree))),
                                                                       SECRET)


def test_a_patched_generation_names_what_it_changed_and_forgets_its_base_when_asked() -> None:
    """The render's patch knows the paths it touched (`since`): a one-node commit's changes are
    found among them, the same as a look at every entry finds; pickled or let go of, the
    earlier generation is not held."""
    memo, parsed = NodeMemo(), ValidateMemo()  # the validation memo: unchanged nodes as the same objects
    tree = base_files()

    def commit(revision: str) -> RenderedFiles:
        state = validate(Snapshot(revision, dict(tree)), memo=parsed).state
        assert state is not None
        return render_generation(state, SECRET, memo=memo)
    before = commit("a" * 40)
    tree["nodes/node-2.yaml"] = tree["nodes/node-2.yaml"].replace(b"10.10.10.202", b"10.10.10.203")
    after = commit("b" * 40)
    assert after.since is not None and after.since.entries is before.entries
    assert "ipxe/node-1.ipxe" not in after.since.paths  # the unchanged node is not looked at
    scan = RenderedFiles(after.entries, after.revision, after.sentinel, after.secret)
    assert after.changed_since(before) == scan.changed_since(before)
    changed = after.changed_since(before).changed
    assert "dhcpd.conf" in changed and not [p for p in changed if "node-1" in p or "aa:bb:01" in p]
    assert pickle.loads(pickle.dumps(after)).since is None
    after.forget_since()
    assert after.since is None and after.changed_since(before) == scan.changed_since(before)


def test_retained_generations_share_the_newest_ones_entries_and_serve_what_they_served() -> None:
    """Issue 25 (the daemon's memory): a generation the worker's patch superseded holds the newer
    one's dict and its few differences (`GenerationHolder.share`, `Older`) instead of a dict of
    every path of its own; each older generation still serves, lists and counts exactly what it
    did, through a node changed, a node removed and one added."""
    memo = NodeMemo()
    tree = base_files()
    gens = [_commit(tree, "a" * 40, memo)]
    edits: list[dict[str, bytes | None]] = [{"nodes/node-2.yaml": tree["nodes/node-2.yaml"] + b"metadata: {x: 1}\n"},
             {"nodes/node-1.yaml": None},
             {"nodes/node-9.yaml": tree["nodes/node-2.yaml"].replace(b"aa:bb:02", b"aa:bb:09")
              .replace(b"10.10.10.202", b"10.10.10.209")}]
    holder = GenerationHolder()
    served = [dict(gens[0])]
    holder.swap(Generation("a" * 40, valid_state(Snapshot("a" * 40, dict(tree))), gens[0]))
    for n, edit in enumerate(edits):
        for path, data in edit.items():
            if data is None:
                del tree[path]
            else:
                tree[path] = data
        revision = "bcd"[n] * 40
        rendered = _commit(tree, revision, memo)
        changes = rendered.changed_since(gens[-1])
        patched = gens[-1].patched(revision, {p: rendered.raw(p) for p in changes.changed}, changes.removed)
        assert dict(patched) == dict(rendered)
        holder.swap(Generation(revision, valid_state(Snapshot(revision, dict(tree))), patched))
        assert holder.share(gens[-1], patched, (*changes.changed, *changes.removed)) == len(gens)
        gens.append(patched)
        served.append(dict(patched))
        for old, seen in zip(gens[:-1], served, strict=False):
            assert isinstance(old.entries, Older) and old.entries.base is patched.entries
            assert list(old) == list(seen) and len(old) == len(seen) and dict(old) == seen
            assert all(old.get(p) == seen[p] and p in old for p in seen)
            assert "ipxe/node-9.ipxe" in seen or ("ipxe/node-9.ipxe" not in old and old.get("ipxe/node-9.ipxe") is None)
    assert "ipxe/node-1.ipxe" in gens[0] and "ipxe/node-1.ipxe" not in gens[2]
    assert isinstance(gens[-1].entries, dict)
