"""A first validation's parse and boot check on two CPUs (core.build's and core.bootcheck's walks,
adapters.renderfork): a forked child parses half of the files, then another checks half of the
nodes, and this process adopts what each did, in order, so the findings are one process's, in the
same order, with the same DesiredState (issue 25: the cold
validation of 100,000 nodes on one CPU while the other waited). Real forks and pipes; the walker
is forced to fork at a few nodes (`minimum=1`), as it does at thousands."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters import renderfork
from reconciler.core import bootcheck, build, template, yamldoc
from reconciler.core.docmemo import ValidateMemo
from reconciler.core.model import Issue, Node
from reconciler.core.render import fanout
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import Validation, validate
from reconciler.core.yamldoc import Document
from tests.render_support import ROOT

FORKING = functools.partial(renderfork.walk, minimum=1)
NODES = 120
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx8 ops@lab.example"

SITE = {"server": {"address": "10.0.0.2", "http_port": 80},
        "dhcp": {"mode": "full", "unknown_clients": "boot",
                 "subnets": [{"subnet": "10.0.0.0/16", "pool": ["10.0.0.10", "10.0.0.200"], "routers": ["10.0.0.1"]}]}}
# Per-node args (each node lints its own), a label that makes some unsafe, a shared console arg.
ODD = {"boot": {"kernel": "/assets/ubuntu/2404/vmlinuz{{ ' x' if labels.k else '' }}",
                "initrd": ["/assets/ubuntu/2404/initrd"],
                "args": ["ip=dhcp", "console={{ metadata.con }}", "c={{ metadata.con }}-{{ hostname }}",
                         "ds=nocloud;s={{ cloud_init_url }};dsmode=net"]},
       "cloud_init": "odd"}
# A duplicate key for some nodes, an undefined variable for others, clean for the rest.
ODD_CI = ("#cloud-config\nhostname: \"{{ hostname }}\"\n"
          "{% if labels.dup %}hostname: again\n{% endif %}"
          "{% if labels.undef %}extra: {{ metadata.missing }}\n{% endif %}"
          "{% if labels.bad %}runcmd: [unclosed\n{% endif %}")


def repository(nodes: int = NODES) -> Snapshot:
    files = {p: b for p, b in _example().items() if not p.startswith("nodes/")}
    files["netboot.yaml"] = json.dumps(SITE).encode()
    files["profiles/odd.yaml"] = json.dumps(ODD).encode()
    files["cloud-init/odd.yaml"] = ODD_CI.encode()
    profiles = ["odd", "odd", "ubuntu-2404-install", "local-disk", "odd", "missing"]
    for i in range(nodes):
        metadata = {"con": "ttyS0" if i % 7 else "tty'0", "ssh_authorized_keys": [KEY]}
        labels = {"k": "" if i % 11 else "x",
                  "dup": "y" if i % 13 == 5 else "", "undef": "y" if i % 17 == 9 else "",
                  "bad": "y" if i % 19 == 3 else ""}
        node = {"mac": f"52:54:00:00:{i >> 8:02x}:{i & 0xFF:02x}", "ip": f"10.0.{1 + i // 200}.{1 + i % 200}",
                "profile": profiles[i % len(profiles)], "labels": labels, "metadata": metadata}
        if i % 29 == 6:
            node["colour"] = "red"  # a schema error, found by whichever process parses the file
        files[f"nodes/n{i:04d}.yaml"] = json.dumps(node).encode() if i % 23 != 4 else b"mac: [unclosed\n"
    return Snapshot(revision="ab" * 20, files=files)


@functools.cache
def _example() -> dict[str, bytes]:
    from reconciler.adapters.dirsource import read_directory

    return dict(read_directory(ROOT / "example-repo").files)


def _validated(snapshot: Snapshot, walker: fanout.Walker, memo: ValidateMemo | None = None) -> Validation:
    with fanout.using(walker):
        return validate(snapshot, memo=memo)


def test_a_forked_validation_finds_what_one_process_finds_in_the_same_order() -> None:
    snapshot = repository()
    alone = _validated(snapshot, fanout.one_by_one)
    forked_before = renderfork.counts["forked"]
    forked = _validated(snapshot, FORKING)
    assert renderfork.counts["forked"] - forked_before > NODES // 3  # the child checked half of them
    codes = {i.code for i in alone.issues}
    # errors and warnings of every kind the walk carries across: findings a node adds, lints run
    # once per validation, template failures (checked here again), a missing profile
    assert {"yaml-syntax", "schema", "boot-value-unsafe", "user-data-duplicate-key", "user-data-yaml",
            "template-undefined", "ref-profile", "asset-not-listed"} <= codes, codes
    assert [i for i in alone.issues if i.file.startswith("nodes/n00")]  # nodes of both halves named
    assert forked.issues == alone.issues
    assert forked.state == alone.state and forked.sites == alone.sites


def test_a_valid_repository_gives_the_same_state_forked_and_with_a_memo_the_same_next_commit() -> None:
    snapshot = repository()
    files = {p: b for p, b in snapshot.files.items()
             if not (p.startswith("nodes/") and (b.startswith(b"mac: [") or json.loads(b)["profile"] == "missing"))}
    for p, b in list(files.items()):
        if p.startswith("nodes/"):
            node = json.loads(b)
            node.pop("colour", None)
            node["labels"] = {"k": "", "dup": "", "undef": "", "bad": ""}
            node["metadata"] = {**node["metadata"], "con": "ttyS0"}
            files[p] = json.dumps(node).encode()
    valid = dataclasses.replace(snapshot, files=files)
    memos = ValidateMemo(), ValidateMemo()
    alone, forked = _validated(valid, fanout.one_by_one, memos[0]), _validated(valid, FORKING, memos[1])
    assert alone.state is not None and not alone.errors
    assert (forked.state, forked.issues) == (alone.state, alone.issues)
    # the memo the forked walk filled serves the next commit as one process's does
    changed = dict(files)
    changed["nodes/n0001.yaml"] = changed["nodes/n0001.yaml"].replace(b'"ttyS0"', b'"tty\'1"')
    nxt = dataclasses.replace(valid, revision="cd" * 20, files=changed)
    hits = [memo.hits for memo in memos]
    again = [_validated(nxt, fanout.one_by_one, memo) for memo in memos]
    assert memos[1].hits - hits[1] == memos[0].hits - hits[0]  # as many parses reused
    assert again[0].issues == again[1].issues and again[0].sites == again[1].sites
    assert any(i.code == "boot-value-unsafe" for i in again[0].issues)
    assert memos[1].boot[""].kept.keys() == memos[0].boot[""].kept.keys()


@pytest.mark.parametrize("dies_at", [70, 61, 119])  # mid-way, the child's first node, its last
def test_a_child_failing_mid_way_leaves_its_nodes_here_and_the_findings_are_the_same(
        monkeypatch: pytest.MonkeyPatch, dies_at: int) -> None:
    snapshot = repository()
    alone = _validated(snapshot, fanout.one_by_one)
    parent = os.getpid()
    check = bootcheck.BootPlanChecker.check_node

    def dying(self: bootcheck.BootPlanChecker, node: Node, cloud_init: object) -> None:
        if os.getpid() != parent and node.name == f"n{dies_at:04d}":
            os._exit(3)  # the child dies as a killed one would: no message, a torn stream at worst
        check(self, node, cloud_init)  # type: ignore[arg-type]

    monkeypatch.setattr(bootcheck.BootPlanChecker, "check_node", dying)
    assert _validated(snapshot, FORKING).issues == alone.issues


def test_a_check_raising_in_the_child_is_checked_here_and_raised_where_one_process_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = repository()
    alone = _validated(snapshot, fanout.one_by_one)
    parent = os.getpid()
    check = bootcheck.BootPlanChecker.check_node

    def deeper(self: bootcheck.BootPlanChecker, node: Node, cloud_init: object) -> None:
        if os.getpid() != parent and node.name == "n0080":
            raise RecursionError("the child's stack is deeper")  # met only there: checked here again
        check(self, node, cloud_init)  # type: ignore[arg-type]

    monkeypatch.setattr(bootcheck.BootPlanChecker, "check_node", deeper)
    assert _validated(snapshot, FORKING).issues == alone.issues


def test_a_parse_child_dying_mid_way_leaves_its_files_here_and_the_findings_are_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = repository()
    alone = _validated(snapshot, fanout.one_by_one)
    parent = os.getpid()
    parse = yamldoc.parse_yaml

    def dying(path: str, content: bytes) -> tuple[Document | None, tuple[Issue, ...]]:
        if os.getpid() != parent and path == "nodes/n0100.yaml":
            os._exit(3)
        return parse(path, content)

    monkeypatch.setattr(build, "parse_yaml", dying)
    forked_before = renderfork.counts["forked"]
    assert _validated(snapshot, FORKING).issues == alone.issues
    assert renderfork.counts["forked"] - forked_before > NODES * 3 // 4  # the parse's files, the boot check's nodes


SHARED_CI = ("#cloud-config\nhostname: {% if labels.h %}{{ hostname }}{% else %}fixed{% endif %}\n"
             "{% if labels.v == 's' %}storage: {layout: direct}\n{% elif labels.v == 'm' %}autoinstal: {version: 1}\n"
             "{% endif %}")
BOOT = {"kernel": "/assets/ubuntu/2404/vmlinuz", "initrd": ["/assets/ubuntu/2404/initrd"]}
SHARING = {"ai": ["autoinstall", "ip=dhcp"], "plain": ["ip=dhcp"], "maybe": ["{{ metadata.mode }}", "ip=dhcp"]}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(SHARING)), st.sampled_from(["s", "m", "n"]), st.booleans(),
                          st.sampled_from(["autoinstall", "quiet"])), min_size=2, max_size=40))
def test_one_user_data_template_under_both_autoinstall_flags_gives_the_same_findings_forked(
        drawn: list[tuple[str, str, bool, str]]) -> None:
    """Texts repeated across nodes and linted once, with and without `autoinstall` (its lint
    differs, its key does not), each process comparing with its own first clean text."""
    files = {p: b for p, b in _example().items() if not p.startswith(("nodes/", "profiles/"))}
    files["netboot.yaml"] = json.dumps(SITE).encode()
    files["cloud-init/shared.yaml"] = SHARED_CI.encode()
    for pid, args in SHARING.items():
        files[f"profiles/{pid}.yaml"] = json.dumps({"boot": {**BOOT, "args": args}, "cloud_init": "shared"}).encode()
    for i, (pid, v, h, mode) in enumerate(drawn):
        node = {"mac": f"52:54:00:00:01:{i:02x}", "profile": pid, "labels": {"v": v, "h": "y" if h else ""},
                "metadata": {"mode": mode}}
        files[f"nodes/n{i:04d}.yaml"] = json.dumps(node).encode()
    snapshot = Snapshot(revision="ab" * 20, files=files)
    alone = _validated(snapshot, fanout.one_by_one)
    for memo in (None, ValidateMemo()):  # the worker's validation has a memo
        forked = _validated(snapshot, FORKING, memo)
        assert (forked.issues, forked.state) == (alone.issues, alone.state)


SLOW_CI = "#cloud-config\nhostname: \"{{ hostname }}\"\n{% for i in range(30000) %}{% endfor %}\n"


def _slow_repository(nodes: int = 80) -> Snapshot:
    """Nodes whose user-data takes ~2 ms of CPU each to render: the boot check is most of the validation."""
    files = {p: b for p, b in _example().items() if not p.startswith("nodes/")}
    files["netboot.yaml"] = json.dumps(SITE).encode()
    files["cloud-init/slow.yaml"] = SLOW_CI.encode()
    boot = {"kernel": "/assets/ubuntu/2404/vmlinuz", "initrd": ["/assets/ubuntu/2404/initrd"],
            "args": ["ip=dhcp", "console={{ metadata.con }}", "ds=nocloud;s={{ cloud_init_url }};dsmode=net"]}
    files["profiles/slow.yaml"] = json.dumps({"boot": boot, "cloud_init": "slow"}).encode()
    for i in range(nodes):
        node = {"mac": f"52:54:00:00:02:{i:02x}", "profile": "slow", "metadata": {"con": "ttyS0"}}
        files[f"nodes/n{i:04d}.yaml"] = json.dumps(node).encode()
    return Snapshot(revision="ab" * 20, files=files)


def _failures(result: Validation) -> set[tuple[str, str, int, str]]:
    """The template failures, without the node each names nor, for a budget used up, the line (the
    node it runs out at, and the line that node's render was on, depend on the CPU's pace, in one
    process as in two: line 3 of SLOW_CI, inside the loop, or 0, none left at the node's start;
    seen to differ 1 run in 5 at load 2-3)."""
    return {(i.code, i.file, 0 if "used up its CPU time" in i.message else i.line,
             i.message.split(" (rendering for")[0])
            for i in result.issues if i.code.startswith("template-")}


def test_the_commits_template_budget_is_spent_once_across_both_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forked child had its own copy of what remained of the commit's CPU budget, so a
    validation on two CPUs could spend it twice and pass where one process runs out (found by
    review). The child's CPU per node is charged here: the budget (0.7 of what the validation
    takes, measured here first; each process's half takes ~0.5) runs out on both paths, with the
    same findings."""
    snapshot = _slow_repository()
    _validated(snapshot, fanout.one_by_one)  # templates compiled, caches warm
    started = time.thread_time()
    assert not _failures(_validated(snapshot, fanout.one_by_one))
    spent = time.thread_time() - started
    monkeypatch.setattr(template, "COMMIT_CPU_SECONDS", 0.7 * spent)
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 0.0)
    alone = _failures(_validated(snapshot, fanout.one_by_one))
    assert any("used up its CPU time" in f[3] for f in alone), alone
    forked_before = renderfork.counts["forked"]
    assert _failures(_validated(snapshot, FORKING)) == alone
    assert renderfork.counts["forked"] - forked_before >= 40  # the child checked its half


def _deep_json(depth: int) -> Snapshot:
    """A repository whose matchbox profile nests `depth` lists in a field the schema types: a
    document that reaches the schema check gets a `schema` finding there."""
    files = {p: b for p, b in repository(8).files.items() if not p.startswith("nodes/n000")}
    files["profiles/deep.json"] = (b'{"id": "deep",\n "boot": {"kernel": "/assets/k"},\n "name": '
                                   + b"[" * depth + b"]" * depth + b"}")
    return Snapshot(revision="ab" * 20, files=files)


def test_json_nested_near_the_recursion_limit_gives_one_finding_in_one_process_and_forked() -> None:
    """json's bound on nesting is the recursion limit less the stack in use: a file nested just
    below it gave `schema` in one process and `json-syntax` when forked, whose parse runs deeper
    (found by review). Past 64 levels it is `json-too-deep` wherever it is read, naming the file,
    the line and the field; every depth around where json itself gives up is tried here."""
    here = len(inspect.stack())  # json's limit, seen from this test: about the recursion limit less this
    found: set[tuple[str, int, str]] = set()
    for depth in [65, *range(sys.getrecursionlimit() - here - 60, sys.getrecursionlimit() - here + 5)]:
        snapshot = _deep_json(depth)
        alone = [i for i in _validated(snapshot, fanout.one_by_one).issues if i.file == "profiles/deep.json"]
        forked = [i for i in _validated(snapshot, FORKING).issues if i.file == "profiles/deep.json"]
        assert forked == alone, (depth, alone, forked)
        found.update((i.code, i.line, i.message) for i in alone)
    assert found == {("json-too-deep", 3, "name: nested deeper than 64")}
