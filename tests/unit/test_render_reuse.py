"""Rendering with a memo of earlier commits (core.render.reuse) gives, for any sequence of
commits, byte for byte what rendering each commit from scratch gives (issue 25): random edits of
nodes, profiles, groups, templates, netboot.yaml and assets.yaml, renames and deletions, random
revisions and report secrets, templates that use the revision verbatim and ones that do not."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.docmemo import ValidateMemo
from reconciler.core.render import NodeMemo, RenderedFiles, patch, render_generation, render_served
from reconciler.core.render.reuse import verbatim_only
from reconciler.core.secrets import SecretValues
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from tests.render_support import example_snapshot, valid_state
from tests.repo_builder import files as base_files

_REVISION = st.from_regex(r"[0-9a-f]{40}", fullmatch=True)
_WORD = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_ARGS = st.sampled_from([
    "ip=dhcp", "quiet", "rev={{ revision }}", "short={{ revision[:7] }}", "up={{ cloud_init_url | upper }}",
    "ds=nocloud;s={{ cloud_init_url }};dsmode=net", "tok={{ report_token }}", "name={{ name }}",
    "{% if revision.startswith('a') %}a{% else %}b{% endif %}", "h={{ hostname }}", "m={{ mac_hyphen }}",
])
_USER_DATA = st.sampled_from([
    "#cloud-config\nhostname: {{ hostname }}\n",
    "#cloud-config\nhostname: {{ hostname }}\n# built from {{ revision }}\n",
    "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    hostname: {{ hostname }}\n"
    "    username: ops\n    password: \"$6$x$y\"\n",
    "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    hostname: {{ hostname }}\n"
    "    username: ops\n    password: \"$6$x$y\"\n# {% filter upper %}{{ revision }}{% endfilter %}\n",
    "#cloud-config\nruncmd:\n  - [echo, \"{{ report_url }}?t={{ report_token }}\"]\n",
    "#cloud-config\n{% set r = revision %}runcmd:\n  - [echo, \"{{ r[:12] }}\"]\n",
])

_Edit = tuple[str, Any]


@st.composite
def edits(draw: st.DrawFn) -> _Edit:
    kind = draw(st.sampled_from(["node", "node", "node", "add", "delete", "rename", "profile", "kernel",
                                 "template", "site", "group", "assets", "broken", "nothing", "dhcp", "switch"]))
    return kind, draw(st.tuples(st.integers(0, 9), _WORD, st.lists(_ARGS, max_size=3), _USER_DATA))


def _node(i: int, profile: str, extra: str = "") -> str:
    return f"mac: 52:54:00:aa:cc:{i:02x}\nprofile: {profile}\n{extra}"


def _apply(files: dict[str, bytes], edit: _Edit) -> None:
    kind, (i, word, args, user_data) = edit
    nodes = sorted(p for p in files if p.startswith("nodes/"))
    if kind == "node" and nodes:
        path = nodes[i % len(nodes)]
        text = files[path].decode().split("metadata:")[0].rstrip("\n") + "\n"
        files[path] = (text + f"metadata: {{note: {word}}}\n").encode()
    elif kind == "dhcp" and nodes:  # a field of the DHCP configs, the file's name kept
        path = nodes[i % len(nodes)]
        text = files[path].decode().split("hostname:")[0].rstrip("\n") + "\n"
        files[path] = (text + f"hostname: {word}\n").encode()
    elif kind == "switch" and nodes:  # another profile: other files (local has no user-data)
        path = nodes[i % len(nodes)]
        old = files[path].decode()
        swapped = ("install", "local") if "profile: install" in old else ("local", "install")
        files[path] = old.replace(f"profile: {swapped[0]}", f"profile: {swapped[1]}").encode()
    elif kind == "add":
        files[f"nodes/x{i}.yaml"] = _node(i, "install" if len(word) % 2 else "local", f"labels: {{rack: {word}}}\n"
                                          ).encode()
    elif kind == "delete" and nodes:
        del files[nodes[i % len(nodes)]]
    elif kind == "rename" and nodes:
        files[f"nodes/{word}-r.yaml"] = files.pop(nodes[i % len(nodes)])
    elif kind == "profile":
        files["profiles/install.yaml"] = json.dumps({
            "name": f"Install {word}", "cloud_init": "autoinstall",
            "boot": {"kernel": "/assets/vmlinuz", "initrd": ["/assets/initrd"], "args": ["autoinstall", *args]},
        }).encode()
    elif kind == "kernel":
        files["profiles/local.yaml"] = (f"name: {word}\nboot:\n  kernel: /assets/{word}\n  args: {json.dumps(args)}\n"
                                        if i % 2 else "name: Local disk\nboot: {}\n").encode()
    elif kind == "template":
        files["cloud-init/autoinstall.yaml"] = user_data.encode()
    elif kind == "site":
        port = [80, 8080, 8081][i % 3]
        files["netboot.yaml"] = files["netboot.yaml"].replace(b"http_port: 80\n", f"http_port: {port}\n".encode()) \
            .replace(b"http_port: 8080\n", f"http_port: {port}\n".encode())
    elif kind == "group":
        files[f"groups/{word}.yaml"] = f"profile: install\nselector: {{rack: {word}}}\n".encode()
    elif kind == "broken" and nodes:
        files[nodes[i % len(nodes)]] = f"mac: [unclosed\nprofile: {word}\n".encode()
    elif kind == "assets":
        files["assets.yaml"] = (f"assets:\n  - path: /assets/{word}\n    url: https://example.com/{word}\n"
                                f"    sha256: {'ab' * 32}\n").encode()


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(edits(), _REVISION), min_size=1, max_size=12),
       secret=st.sampled_from([None, b"report-secret"]))
def test_rendering_with_a_memo_equals_rendering_from_scratch(steps: list[tuple[_Edit, str]],
                                                              secret: bytes | None) -> None:
    """And the lazy form holds: the served generation, iterated, read or rebuilt in another
    process from the previous one plus its changed entries (`Delta`), is the full render."""
    files = base_files()
    memo = NodeMemo()
    served: RenderedFiles | None = None  # what another process holds, built from deltas only
    previous: RenderedFiles | None = None
    for edit, revision in steps:
        _apply(files, edit)
        state = validate(Snapshot(revision, dict(files))).state
        if state is None:
            continue  # an invalid commit renders nothing; the memo waits for the next
        lazy, full = render_served(state, secret, memo=memo), render_served(state, secret)
        assert lazy == full
        again = render_served(state, secret, memo=memo)  # the same Node objects again: not re-keyed
        assert again == full
        assert list(lazy.items()) == list(full.items())  # the same order, the same bytes
        # A patched render names the paths that may differ (`since`): what it finds changed is
        # what a look at every entry finds.
        assert lazy.changed_since(previous) == RenderedFiles(lazy.entries, lazy.revision, lazy.sentinel,
                                                             lazy.secret).changed_since(previous)
        delta = pickle.loads(pickle.dumps(lazy.delta_from(previous)))
        served = delta.apply(served)
        assert list(served.items()) == list(full.items())
        previous = again  # the memo's last generation: the next commit is patched from it


def test_an_unchanged_node_is_taken_from_the_memo_and_a_changed_one_rendered() -> None:
    memo = NodeMemo()
    files = base_files()
    render_generation(valid_state(Snapshot("a" * 40, files)), b"s", memo=memo)
    assert (memo.hits, memo.misses) == (0, 2)
    files["nodes/node-2.yaml"] += b"metadata: {x: 1}\n"
    state = valid_state(Snapshot("b" * 40, files))
    assert render_generation(state, b"s", memo=memo) == render_generation(state, b"s")
    assert (memo.hits, memo.misses) == (1, 1)


def test_the_example_repository_renders_the_same_with_a_memo() -> None:
    memo = NodeMemo()
    for revision in ("1" * 40, "2" * 40):
        state = valid_state(example_snapshot(revision))
        assert render_generation(state, b"k", memo=memo) == render_generation(state, b"k")


def test_templates_are_reused_only_when_the_revision_is_written_as_it_is() -> None:
    assert verbatim_only("ds=nocloud;s={{ cloud_init_url }};dsmode=net")
    assert verbatim_only("{% if hostname %}{{ revision }}{% endif %}")
    assert verbatim_only("plain")
    assert verbatim_only("password: {{ secrets.pw | tojson }}")
    for text in ("{{ revision[:7] }}", "{{ cloud_init_url | upper }}", "{% if revision %}x{% endif %}",
                 "{% filter upper %}{{ revision }}{% endfilter %}", "{% set r %}{{ revision }}{% endset %}{{ r }}",
                 "{{ revision ~ 'x' }}", "{% for revision in [1] %}{{ revision }}{% endfor %}",
                 "{{ revision"):
        assert not verbatim_only(text), text


def test_a_changed_secret_value_renders_the_nodes_again() -> None:
    """example-repo's install profiles put secrets.yaml's password hash in user-data: a node
    rendered with one value is not reused when the value changes, and is when it does not."""
    state = valid_state(example_snapshot("1" * 40))
    assert state.secrets is not None
    names = list(state.secrets.secrets)
    memo = NodeMemo()
    for revision, value in (("1" * 40, "first"), ("2" * 40, "first"), ("3" * 40, "second"), ("4" * 40, "x\ny")):
        values = SecretValues({n: f"{value}-{n}" for n in names}, {n: f"fp-{value}-{n}" for n in names}, revealed=True)
        state = valid_state(example_snapshot(revision))
        assert render_generation(state, b"k", values, memo) == render_generation(state, b"k", values)



def test_a_one_node_commit_renders_that_node_only_and_keeps_the_dhcp_configs() -> None:
    """Patched from the last generation (core.render.patch): one node rendered, the other nodes'
    entries and the DHCP configs (the node's DHCP fields unchanged) the very objects of the last
    generation; a hostname change renders the configs again. Bytes as from scratch each time."""
    memo = NodeMemo()
    files = base_files()
    for i in range(5):
        files[f"nodes/x{i}.yaml"] = _node(i, "install", f"ip: 10.10.10.{210 + i}\n").encode()
    first = render_generation(valid_state(Snapshot("a" * 40, files)), b"s", memo=memo)
    files["nodes/x2.yaml"] += b"metadata: {note: changed}\n"
    state = valid_state(Snapshot("b" * 40, files))
    second = render_generation(state, b"s", memo=memo)
    assert list(second.items()) == list(render_generation(state, b"s").items())
    assert (memo.hits, memo.misses) == (6, 1)
    changed = second.changed_since(first).changed
    assert "metadata/x2.env" in changed and "ipxe/group-default.ipxe" in changed  # groups carry the revision
    assert not [p for p in changed if "x2" not in p and "aa:cc:02" not in p and "group-" not in p], changed
    for path in ("dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf", "ipxe/x1.ipxe"):
        assert second.raw(path) is first.raw(path)
    files["nodes/x2.yaml"] += b"hostname: other\n"
    state = valid_state(Snapshot("c" * 40, files))
    third = render_generation(state, b"s", memo=memo)
    assert list(third.items()) == list(render_generation(state, b"s").items())
    assert b"other" in third["dhcpd.conf"] and third.raw("dhcpd.conf") is not second.raw("dhcpd.conf")


def test_a_revision_a_template_takes_back_from_a_block_or_a_recursive_loop_is_not_kept() -> None:
    """`self.block()` and a recursive loop's `loop(...)` hand a template its own rendered output,
    which it may transform (`| upper`): a revision written inside is then not verbatim, and a node
    kept at the memo's stand-in would serve the stand-in, transformed, instead of the revision."""
    texts = ("#cloud-config\n# {% block b %}{{ revision }}{% endblock %} {{ self.b() | upper }}\n",
             "#cloud-config\n# {% for x in [[1]] recursive %}{{ revision }}{% if x is iterable %}"
             "{{ loop(x) | upper }}{% endif %}{% endfor %}\n")
    for text in texts:
        assert not verbatim_only(text), text
        files = base_files()
        files["cloud-init/autoinstall.yaml"] = text.encode()
        memo = NodeMemo()
        for revision in ("a" * 40, "b" * 40):
            state = valid_state(Snapshot(revision, dict(files)))
            assert list(render_generation(state, b"s", memo=memo).items()) == \
                list(render_generation(state, b"s").items())


def test_a_memo_written_after_a_first_render_and_read_back_keeps_its_nodes() -> None:
    """A first render leaves the nodes' keys to be made when the memo is written (the daemon's
    worker writes it after serving): read back, it reuses every unchanged node, and a changed
    one is rendered again."""
    files = base_files()
    memo = NodeMemo()
    render_generation(valid_state(Snapshot("a" * 40, files)), b"s", memo=memo)
    memo = pickle.loads(pickle.dumps(memo))
    assert all(kept.key for kept in memo.entries.values())
    state = valid_state(Snapshot("b" * 40, files))
    assert list(render_generation(state, b"s", memo=memo).items()) == list(render_generation(state, b"s").items())
    assert (memo.hits, memo.misses) == (2, 0)
    files["nodes/node-2.yaml"] += b"metadata: {x: 1}\n"
    state = valid_state(Snapshot("c" * 40, files))
    memo = pickle.loads(pickle.dumps(memo))
    assert list(render_generation(state, b"s", memo=memo).items()) == list(render_generation(state, b"s").items())
    assert (memo.hits, memo.misses) == (1, 1)


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.tuples(edits(), _REVISION, st.booleans()), min_size=1, max_size=12))
def test_with_both_memos_each_commit_renders_as_from_scratch(steps: list[tuple[_Edit, str, bool]]) -> None:
    """As the daemon's worker runs: the validation memo hands back unchanged nodes as the same
    objects in the same tuple places, so the render's patch and its skipped sort work from the
    places that hold other objects (core.places); renames, deletions, additions, profile and
    group edits through that path give the bytes of a render from scratch. After some commits
    the entries are copied ahead for the next patch (`Last.copy_ahead`, as the worker does once
    a result is sent); the generation served before is left as it was."""
    files = base_files()
    validated, memo = ValidateMemo(), NodeMemo()
    served: list[tuple[RenderedFiles, list[tuple[str, bytes]]]] = []
    for edit, revision, ahead in steps:
        _apply(files, edit)
        state = validate(Snapshot(revision, dict(files)), memo=validated).state
        if state is None:
            continue
        lazy = render_served(state, b"k", memo=memo)
        assert list(lazy.items()) == list(render_served(state, b"k").items())
        if ahead and isinstance(memo.previous, patch.Last):
            memo.previous.copy_ahead()
        served.append((lazy, list(lazy.items())))
    for generation, items in served:
        assert list(generation.items()) == items  # no later patch wrote into an earlier generation


def test_a_patch_fills_the_entries_copied_ahead_and_leaves_the_served_ones_alone() -> None:
    memo = NodeMemo()
    files = base_files()
    for i in range(5):
        files[f"nodes/x{i}.yaml"] = _node(i, "install", f"ip: 10.10.10.{210 + i}\n").encode()
    first = render_generation(valid_state(Snapshot("a" * 40, files)), b"s", memo=memo)
    kept = list(first.items())
    last = memo.previous
    assert isinstance(last, patch.Last)
    last.copy_ahead()
    ahead = last.ahead[0].entries
    files["nodes/x2.yaml"] += b"metadata: {note: changed}\n"
    state = valid_state(Snapshot("b" * 40, files))
    second = render_generation(state, b"s", memo=memo)
    assert second.entries is ahead and not last.ahead  # taken, not copied again
    assert list(second.items()) == list(render_generation(state, b"s").items())
    assert list(first.items()) == kept


def test_nodes_out_of_name_order_are_rendered_in_name_order() -> None:
    """A state whose nodes are the last render's with two of them swapped (one with a new
    hostname, so the DHCP configs are made again): not a state validation makes (it sorts), but
    the render's shortcut that keeps the state's order must see it and sort, as from scratch."""
    files = base_files()
    for i in range(6):
        files[f"nodes/x{i}.yaml"] = _node(i, "install").encode()
    memo = NodeMemo()
    state = valid_state(Snapshot("a" * 40, files))
    render_generation(state, b"s", memo=memo)
    listed = list(state.nodes)
    a, b = (next(i for i, n in enumerate(listed) if n.name == name) for name in ("x1", "x4"))
    listed[a], listed[b] = dataclasses.replace(listed[b], hostname="renamed"), listed[a]
    swapped = dataclasses.replace(state, revision="b" * 40, nodes=tuple(listed))
    assert list(render_generation(swapped, b"s", memo=memo).items()) == \
        list(render_generation(swapped, b"s").items())
