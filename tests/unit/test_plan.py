"""core.plan and core.plan_format: two validated states in, what changes for the machines out."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from reconciler.core import plan_format
from reconciler.core.plan import PLACEHOLDER, ArgsChange, Plan, Side, args_change, compare, reinstall_verdict, side
from reconciler.core.validate import validate
from tests import repo_builder

INSTALL_ONCE = {"profiles/install.yaml": repo_builder.BASE["profiles/install.yaml"] + "install_once: true\n"}


def make_side(edits: Mapping[str, str | None] | None = None, revision: str = "a" * 40) -> Side:
    result = validate(repo_builder.snapshot({**INSTALL_ONCE, **(edits or {})}, revision=revision))
    return side(revision, result.state, result.issues)


def plan_of(head_edits: Mapping[str, str | None], base_edits: Mapping[str, str | None] | None = None) -> Plan:
    return compare(make_side(base_edits, "a" * 40), make_side({**(base_edits or {}), **head_edits}, "b" * 40))


def test_a_new_revision_alone_changes_nothing() -> None:
    base, head = make_side(revision="a" * 40), make_side(revision="b" * 40)
    assert all(PLACEHOLDER in v.decode() for k, v in head.files.items() if k.startswith("ipxe/node-"))
    plan = compare(base, head)
    assert not plan.changed
    assert plan.nodes == () and plan.dhcp == () and plan.other_files == () and plan.sources == ()
    assert "**No change**" in plan_format.markdown(plan)


def test_moving_lines_in_yaml_is_not_a_change() -> None:
    node = "labels: {rack: r1}\n\n\nprofile: install\nip: 10.10.10.201\nmac: 52-54-00-AA-BB-01\n"
    plan = plan_of({"nodes/node-1.yaml": node})
    assert not plan.changed and plan.sources == ()


def test_reinstall_counter_bump() -> None:
    node = repo_builder.BASE["nodes/node-2.yaml"] + "reinstall: 3\n"
    plan = plan_of({"nodes/node-2.yaml": node})
    (n,) = plan.nodes
    assert (n.name, n.status, n.reinstall.verdict) == ("node-2", "changed", "will-reinstall")
    assert [(c.what, c.before, c.after) for c in n.changes] == [("reinstall counter", "0", "3")]
    assert plan.reinstalls == (n,)
    assert "**1 WILL REINSTALL**: `node-2`" in plan_format.markdown(plan)


def test_profile_switch_to_local_disk() -> None:
    node = repo_builder.BASE["nodes/node-1.yaml"].replace("profile: install", "profile: local")
    (n,) = plan_of({"nodes/node-1.yaml": node}).nodes
    assert [(c.what, c.before, c.after) for c in n.changes][:2] == [
        ("profile", "install", "local"),
        ("kernel", "http://10.10.10.12/r/REVISION/assets/vmlinuz", "(local disk)"),
    ]
    assert n.reinstall.verdict == "local-disk"
    assert n.user_data_diff  # the seed goes away


def test_install_once_turned_on_is_a_change_even_when_nothing_renders_differently() -> None:
    plan = compare(
        make_side({"profiles/install.yaml": repo_builder.BASE["profiles/install.yaml"]}), make_side(revision="c" * 40)
    )
    assert plan.changed  # install_once is not in matchbox's JSON, yet what the machines do changes
    assert {n.name for n in plan.nodes} == {"node-1", "node-2"}
    assert plan.nodes[0].changes[0].what == "install-once"


def test_group_change_reaches_machines_without_a_node_file() -> None:
    plan = plan_of({"groups/default.yaml": "profile: install\n"})
    (source,) = plan.sources
    assert (source.kind, source.name, source.reaches) == ("group", "default", ())
    assert source.note.startswith("the default group: serves machines with no node file")
    paths = [d.path for d in plan.other_files]
    assert paths == ["groups/default.json", "grub/group-default.cfg", "ipxe/group-default.ipxe"]
    assert plan.nodes == () and plan.changed


def test_site_change_reaches_every_node() -> None:
    site = repo_builder.BASE["netboot.yaml"].replace("dns_servers: [8.8.8.8]", "dns_servers: [1.1.1.1]")
    plan = plan_of({"netboot.yaml": site})
    assert [(s.kind, s.reaches, s.changed_nodes) for s in plan.sources] == [("site", ("node-1", "node-2"), ())]
    assert [d.path for d in plan.dhcp] == ["dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf"]


def test_invalid_head_has_no_node_changes_and_is_a_change() -> None:
    plan = plan_of({"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nprofile: nope\n"})
    assert not plan.head.valid and plan.changed and plan.nodes == ()
    md = plan_format.markdown(plan)
    assert md.index("error ref-profile") < md.index("HEAD will not be served")
    doc = json.loads(plan_format.as_json(plan))
    assert doc["head"]["errors"] == 1 and doc["changed"] is True


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (("a", "b=1"), ("a", "b=1"), ArgsChange()),
        (("a", "b=1"), ("a", "b=2"), ArgsChange(changed=(("b=1", "b=2"),))),
        (("a", "ip=dhcp"), ("a",), ArgsChange(removed=("ip=dhcp",))),
        (("a",), ("a", "quiet"), ArgsChange(added=("quiet",))),
        (("a", "b"), ("b", "a"), ArgsChange(reordered=True)),
        (("c=1", "c=2"), ("c=3",), ArgsChange(removed=("c=1", "c=2"), added=("c=3",))),  # repeated key: no pairing
        (("x;y=1",), ("x;y=2",), ArgsChange(changed=(("x;y=1", "x;y=2"),))),
    ],
)
def test_args_change(before: tuple[str, ...], after: tuple[str, ...], expected: ArgsChange) -> None:
    assert args_change(before, after) == expected


@pytest.mark.parametrize(
    ("install_once", "boots_kernel", "counter", "plan_changed", "verdict"),
    [
        (True, True, True, False, "will-reinstall"),
        (True, True, True, True, "will-reinstall"),
        (True, True, False, True, "not-installed-only"),
        (True, True, False, False, "no"),
        (False, True, False, True, "next-netboot"),
        (False, True, True, False, "no"),  # the counter means nothing without install-once
        (False, False, False, True, "local-disk"),
        (False, False, False, False, "no"),
    ],
)
def test_reinstall_rule(
    install_once: bool, boots_kernel: bool, counter: bool, plan_changed: bool, verdict: str
) -> None:
    got = reinstall_verdict(
        install_once=install_once, boots_kernel=boots_kernel, counter_changed=counter, plan_changed=plan_changed
    )
    assert got.verdict == verdict


def test_markdown_escapes_backticks_pipes_and_fences() -> None:
    assert plan_format.code("a`b") == "``a`b``"
    assert plan_format.code("`x") == "`` `x ``"
    assert plan_format.cell("`a|b`") == "`a\\|b`"
    block = plan_format.fenced("```\ninside\n```", "diff")
    assert block.startswith("````diff\n") and block.endswith("\n````\n")
    long = plan_format.fenced("\n".join(str(i) for i in range(plan_format.MAX_DIFF_LINES + 5)))
    assert "... 5 more line(s)" in long


def test_one_line_json_is_diffed_one_value_a_line() -> None:
    from reconciler.core.plan import file_diff

    before, after = b'{"boot": {"args": ["a", "b"]}}', b'{"boot": {"args": ["a", "c"]}}'
    d = file_diff("profiles/x.json", before, after)
    assert d is not None and (d.added, d.removed) == (1, 1)
    assert '-      "b"\n+      "c"\n' in d.diff
