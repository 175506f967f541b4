"""The render loop on two CPUs (adapters.renderfork): what a forked child renders comes back as if
this process had rendered it, in order, with the same first failure and the same memo (issue 25:
a first render of 100,000 nodes on one CPU while the other waited). Real forks and pipes; the
walker is forced to fork at a few nodes (`minimum=1`), as it does at thousands in the daemon."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters import renderfork
from reconciler.adapters.agecrypt import load_identity
from reconciler.core import render as render_module
from reconciler.core import secrets, template
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState, Node
from reconciler.core.render import NodeMemo, fanout, render_generation, render_served
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from tests.integration.daemon_support import DEMO_IDENTITY
from tests.render_support import ROOT, example_state, random_repo, secure_override_state

FORKING = functools.partial(renderfork.walk, minimum=1)


def _forked(state: object, secret: bytes | None = b"k", memo: NodeMemo | None = None) -> object:
    with fanout.using(FORKING):
        return render_generation(state, secret, memo=memo)  # type: ignore[arg-type]


def _nodes(count: int) -> list[Node]:
    state = example_state()
    return [dataclasses.replace(state.nodes[0], name=f"n{i:03d}") for i in range(count)]


def _walk(nodes: list[Node], render: object, fresh: object = lambda n: True, minimum: int = 1,
          max_bytes: int = 1 << 40) -> Iterator[tuple[Node, object]]:
    return renderfork.walk(nodes, render, fresh, lambda node, result: result,  # type: ignore[arg-type]
                           lambda node, captured: captured, lambda result: 1, max_bytes, minimum=minimum)


def test_half_of_the_fresh_nodes_render_in_another_process_and_come_back_in_order() -> None:
    nodes = _nodes(40)
    fresh = {n.name for n in nodes[::2]}  # the others are memo hits: rendered here, never sent
    got = list(_walk(nodes, lambda n: (n.name, os.getpid()), lambda n: n.name in fresh))
    assert [n.name for n, _ in got] == [n.name for n in nodes]
    assert all(result[0] == node.name for node, result in got)  # type: ignore[index]
    pids = {result[1] for _, result in got}  # type: ignore[index]
    assert len(pids) == 2 and os.getpid() in pids
    elsewhere = [node.name for node, result in got if result[1] != os.getpid()]  # type: ignore[index]
    assert elsewhere == sorted(fresh)[10:]  # the second half of the fresh ones, nothing else


def test_below_the_minimum_everything_renders_here() -> None:
    got = list(_walk(_nodes(10), lambda n: os.getpid(), minimum=11))
    assert {pid for _, pid in got} == {os.getpid()}


@pytest.mark.parametrize("failing", [3, 35])  # in this process's half, in the child's
def test_the_first_failure_in_node_order_is_raised_where_the_loop_reaches_it(failing: int) -> None:
    nodes = _nodes(40)

    def render(node: Node) -> str:
        if node.name in (f"n{failing:03d}", "n038"):
            template.render("{{ 1 // 0 }}", {})  # a real TemplateFailure, pickled back from the child
        return node.name

    seen: list[str] = []
    with pytest.raises(template.TemplateFailure):
        for node, _ in _walk(nodes, render):
            seen.append(node.name)
    assert seen == [n.name for n in nodes[:failing]]


def test_a_render_that_fails_only_in_the_child_is_done_here() -> None:
    """The child's stack is deeper: a RecursionError there may not be one here. The child stops at
    the failure and this process renders that node and the child's later ones (found by review)."""
    parent = os.getpid()

    def render(node: Node) -> str:
        if os.getpid() != parent and node.name == "n025":
            raise RecursionError("maximum recursion depth exceeded")
        return f"{node.name}@{os.getpid()}"

    got = [r for _, r in _walk(_nodes(40), render)]
    assert [str(r).split("@")[0] for r in got] == [f"n{i:03d}" for i in range(40)]
    here = [str(r).endswith(f"@{parent}") for r in got]
    assert all(here[:20] + here[25:]) and not any(here[20:25])  # the child's from n025 on: here


def test_no_fork_to_be_had_renders_one_by_one_and_leaks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # EAGAIN: a process limit

    monkeypatch.setattr(os, "fork", refused)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        assert [r for _, r in _walk(_nodes(10), lambda n: n.name)] == [f"n{i:03d}" for i in range(10)]
    assert len(os.listdir("/proc/self/fd")) == before


def _children() -> set[int]:
    """This process's child processes, zombies included (what no wait has reaped)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def test_a_reader_thread_that_cannot_start_leaves_no_child_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child is forked before the thread that reads it starts: when that start fails the child
    is killed and reaped and the nodes render here (found by review: it was left running, then a
    zombie). Thread.start is made to raise as it does when the system gives no thread (RuntimeError
    "can't start new thread"): no limit makes a real thread start fail but not a real fork, as a
    process limit (RLIMIT_NPROC) refuses both, and a thread limit cannot be set for one process."""
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    forks: list[int] = []
    fork = os.fork

    def counted() -> int:
        pid = fork()
        if pid:
            forks.append(pid)
        return pid

    before, fds = _children(), len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    monkeypatch.setattr(os, "fork", counted)
    got = list(_walk(_nodes(40), lambda n: (n.name, os.getpid())))
    monkeypatch.undo()
    assert forks, "no child was forked"
    assert [r for _, r in got] == [(f"n{i:03d}", os.getpid()) for i in range(40)]  # all rendered here
    assert _children() - before == set()  # neither running nor a zombie
    assert len(os.listdir("/proc/self/fd")) == fds  # its pipe closed


_ORPHAN = """
import os, resource, sys, time
sys.path.insert(0, {root!r})
from tests.unit.test_renderfork import _nodes, _walk
resource.setrlimit(resource.RLIMIT_CPU, (500, resource.RLIM_INFINITY))
held = os.open("/dev/null", os.O_RDONLY)  # a descriptor of the worker's the child must not keep
while time.process_time() < 1.5:  # CPU the worker has used: the child gets what is left
    pass
parent = os.getpid()
def render(node):
    if os.getpid() != parent:
        if not os.path.exists({out!r}):
            holds = os.path.exists(f"/proc/self/fd/{{held}}") and os.readlink(f"/proc/self/fd/{{held}}") == "/dev/null"
            cpu = resource.getrlimit(resource.RLIMIT_CPU)[0]
            with open({out!r} + ".tmp", "w") as fh:
                fh.write(f"{{os.getpid()}} {{cpu}} {{holds}}")
            os.rename({out!r} + ".tmp", {out!r})
        time.sleep(0.05)
    return node.name
print(len(list(_walk(_nodes(400), render))))
"""


def test_the_child_dies_with_the_worker_and_holds_nothing_of_it(tmp_path: Path) -> None:
    """A worker killed for its limits must not leave a renderer holding its heap and its end of
    the daemon's pipe (found by review: it rendered on for as long as its nodes took). And the
    child starts with the worker's CPU limit less what the worker had used, not more."""
    out = tmp_path / "child"
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN.format(root=str(ROOT), out=str(out))])
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no child rendered"
            time.sleep(0.05)
        pid, cpu, holds = out.read_text().split()
        assert 0 < int(cpu) < 500 and holds == "False"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "Z" not in _state(int(pid)):
        assert time.monotonic() < deadline, "the render child outlived the worker"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_a_child_that_dies_leaves_its_nodes_to_this_process() -> None:
    parent = os.getpid()

    def render(node: Node) -> str:
        if os.getpid() != parent and node.name == "n030":
            os._exit(3)  # killed mid-render: no message for this node or after
        return node.name

    assert [r for _, r in _walk(_nodes(40), render)] == [f"n{i:03d}" for i in range(40)]


@settings(max_examples=15, deadline=None)
@given(files=random_repo(), secret=st.sampled_from([None, b"report-secret"]))
def test_a_forked_render_is_the_render_and_fills_the_memo_alike(files: dict[str, bytes], secret: bytes | None) -> None:
    state = validate(Snapshot("a" * 40, files)).state
    if state is None:
        return
    alone, forked = NodeMemo(), NodeMemo()
    forked.sentinel = alone.sentinel = "f" * 40
    expected = render_generation(state, secret, memo=alone)
    got = _forked(state, secret, forked)
    assert list(got.items()) == list(expected.items())  # type: ignore[attr-defined]
    assert forked.entries == alone.entries and (forked.hits, forked.misses) == (alone.hits, alone.misses)
    by_name = {n.name: n for n in state.nodes}
    assert {k: v[1] for k, v in forked.last.items()} == {k: v[1] for k, v in alone.last.items()}
    assert all(node is by_name[name] for name, (node, _) in forked.last.items())  # this process's Node objects
    again = validate(Snapshot("b" * 40, files)).state
    assert again is not None  # the next commit: from the memo the fork filled, the same bytes again
    assert list(_forked(again, secret, forked).items()) == list(render_generation(again, secret).items())  # type: ignore[attr-defined]


@pytest.mark.parametrize("site_secure", [True, False])
def test_secure_boot_configs_list_the_nodes_in_order_when_forked(site_secure: bool) -> None:
    state = secure_override_state(site_secure)
    assert list(_forked(state).items()) == list(render_generation(state, b"k").items())  # type: ignore[attr-defined]


def test_the_size_bound_names_the_same_node_when_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    state = example_state()
    monkeypatch.setattr(template, "MAX_GENERATION_BYTES", len(render_generation(state, b"k").raw("boot.ipxe")) * 30)
    with pytest.raises(InvalidRevision) as alone:
        render_generation(state, b"k")
    with pytest.raises(InvalidRevision) as forked:
        _forked(state)
    assert forked.value.findings == alone.value.findings


def test_the_example_repository_renders_the_same_forked() -> None:
    state = example_state("2" * 40)
    assert list(_forked(state).items()) == list(render_generation(state, b"k").items())  # type: ignore[attr-defined]


class _Breaking:
    """A Decrypter whose every value breaks YAML where a template writes it bare."""

    key = b"k" * 32

    def __call__(self, ciphertext: str) -> str:
        return 'x: "\n  - ['


def test_user_data_a_child_rendered_is_parsed_there_once_and_still_refused_when_broken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """render_served parses each user-data holding a secret to see the values left it YAML; the
    user-data a forked child rendered is parsed in the child, not again here, and a value that
    breaks it is refused with the same findings as on one CPU."""
    state = example_state("3" * 40)
    private = secrets.private_paths(state)
    assert len(private) >= 2
    identity = load_identity(DEMO_IDENTITY)
    expected = render_served(state, b"k", identity)
    parsed_here: list[bytes] = []
    real = secrets.still_yaml

    def counting(data: bytes) -> bool:
        parsed_here.append(data)
        return real(data)

    monkeypatch.setattr(secrets, "still_yaml", counting)
    monkeypatch.setattr(render_module, "_PARSED", {})
    with fanout.using(FORKING):
        got = render_served(state, b"k", identity)
    assert list(got.items()) == list(expected.items())
    assert 0 < len(parsed_here) < len(private)  # the child's were parsed in the child
    with pytest.raises(InvalidRevision) as alone:
        render_served(state, b"k", _Breaking())
    monkeypatch.setattr(render_module, "_PARSED", {})
    with pytest.raises(InvalidRevision) as forked, fanout.using(FORKING):
        render_served(state, b"k", _Breaking())
    assert forked.value.findings == alone.value.findings and len(alone.value.findings) == len(private)


def _slow_state() -> tuple[DesiredState, float]:
    """test_validatefork's slow repository (templates ~2 ms of CPU a node), validated, and the CPU
    seconds its render takes here once its templates are compiled."""
    from tests.unit.test_validatefork import _slow_repository

    state = validate(_slow_repository()).state
    assert state is not None
    render_generation(state, b"k")  # templates compiled, caches warm
    started = time.thread_time()
    render_generation(state, b"k")
    return state, time.thread_time() - started


def test_a_forked_render_spends_the_commits_template_budget_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The render's side of the budget (see test_validatefork's): the child's CPU per node is
    charged here, so a render needing 1/0.7 of the budget fails forked as it fails in one
    process instead of passing on two CPUs' worth of it. The finding names the node the budget
    ran out at, which depends on the CPU's pace (in one process too): compared without it."""
    state, spent = _slow_state()
    monkeypatch.setattr(template, "COMMIT_CPU_SECONDS", 0.7 * spent)
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 0.0)
    failed = []
    for walker in (fanout.one_by_one, FORKING):
        with pytest.raises(template.TemplateFailure) as raised, fanout.using(walker):
            render_generation(state, b"k")
        failed.append([(i.code, re.sub(r"n00\d\d", "n00..", f"{i.file}: {i.message}"))
                       for i in raised.value.findings])  # the line too: inside the loop, or 0 at a node's start
    assert failed[0] == failed[1] and "used up its CPU time" in str(failed[0]), failed


def test_the_dhcp_configs_made_while_the_child_renders_are_not_charged_to_the_template_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked render makes the DHCP configs while it waits for its child (`fanout.meanwhile`);
    one process makes them after the loop, where no template is checked against the budget any
    more. Charged, they made a commit whose templates fit the budget pass in one process and
    fail forked (found by review). The configs are slowed here to stand for a large site's
    (~1.2 s of CPU at 100,000 nodes): they take as long as the templates, which take 1/1.4 of
    the budget."""
    state, spent = _slow_state()
    real = render_module.dhcpd.render

    def slow_dhcpd(*args: object, **kwargs: object) -> bytes:
        until = time.thread_time() + spent
        while time.thread_time() < until:
            pass
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(render_module.dhcpd, "render", slow_dhcpd)
    monkeypatch.setattr(template, "COMMIT_CPU_SECONDS", 1.4 * spent)
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 0.0)
    forked_before = renderfork.counts["forked"]
    expected = None
    for walker in (fanout.one_by_one, FORKING):
        with fanout.using(walker):
            files = dict(render_generation(state, b"k"))
        assert expected is None or files == expected
        expected = files
    assert renderfork.counts["forked"] - forked_before >= 40  # the child rendered its half


def test_work_needed_after_the_loop_is_done_here_while_the_child_renders_its_failure_raised_after() -> None:
    """`fanout.meanwhile` (the render's DHCP configs): a forked walk does it in this process once
    its own share is rendered; one by one it waits for the caller; its exception is the caller's
    when it asks, after the loop's (the order one process gives)."""
    done: list[tuple[int, int]] = []
    seen: list[str] = []

    def work() -> str:
        done.append((os.getpid(), len(seen)))
        raise ValueError("the configs")

    with fanout.meanwhile(work) as forked:
        for node, _ in _walk(_nodes(40), lambda n: n.name):
            seen.append(node.name)
    assert done == [(os.getpid(), 0)]  # before the loop had its first node: while the child rendered
    with pytest.raises(ValueError, match="the configs"):
        forked.result()
    done.clear()
    with fanout.meanwhile(work) as alone:
        list(_walk(_nodes(40), lambda n: n.name, minimum=41))
    assert done == []
    with pytest.raises(ValueError, match="the configs"):
        alone.result()
    assert len(done) == 1
