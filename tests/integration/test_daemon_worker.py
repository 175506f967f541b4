"""Validation and rendering in the worker process (daemon.worker): the same state and files as in
process, findings for an invalid commit, and a commit past the worker's memory or CPU bound is
invalid (`resource-limit`) instead of taking the daemon down.

The pathological renderers below stand in for a pathological commit: the core's sandbox already
bounds what a template can do (tests/unit for core.sandbox), so no template reaches these limits;
the worker's RLIMIT_AS and RLIMIT_CPU are the backstop behind it, tested with real limits on a
real child process.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.dirsource import read_directory
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from reconciler.daemon import worker
from tests.integration.daemon_support import EXAMPLE, INVALID_NODE, WorkTree

SECRET = b"worker-test-secret"


def spin(state: DesiredState) -> dict[str, bytes]:
    while True:
        pass


def hog(state: DesiredState) -> dict[str, bytes]:
    return {"x": b"x" * (3 << 30)}


def test_the_worker_builds_what_the_daemon_builds_in_process() -> None:
    snapshot = read_directory(EXAMPLE)
    built = worker.build(snapshot, functools.partial(render_generation, report_secret=SECRET))
    here = validate(snapshot)
    assert here.state is not None
    assert built.state == here.state and built.issues == here.issues
    assert built.state.node_by_mac(here.state.nodes[0].mac) == here.state.nodes[0]
    assert built.files == dict(render_generation(here.state, report_secret=SECRET))
    assert set(built.timings) == {"validate", "render"}
    assert worker.build(snapshot, None).files is None  # validation only (the generation loader)


def test_an_invalid_commit_comes_back_with_its_findings(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    tree.write({"nodes/node-1.yaml": INVALID_NODE})
    with pytest.raises(InvalidRevision) as caught:
        worker.build(read_directory(tree.path), render_generation)
    assert any(i.file == "nodes/node-1.yaml" and "no-such-profile" in i.message for i in caught.value.findings)


@pytest.mark.parametrize(("renderer", "limits", "says"), [
    (spin, worker.Limits(cpu_seconds=1), "CPU time"),
    (hog, worker.Limits(memory_bytes=1 << 30), "memory"),
])
def test_a_commit_past_the_workers_bound_is_invalid(renderer: worker.Renderer, limits: worker.Limits,
                                                     says: str) -> None:
    with pytest.raises(InvalidRevision) as caught:
        worker.build(read_directory(EXAMPLE), renderer, limits)
    [finding] = caught.value.findings
    assert finding.code == "resource-limit" and finding.is_error and says in finding.message


def niceness(state: DesiredState) -> dict[str, bytes]:
    return {"nice": str(os.nice(0)).encode()}


def test_the_worker_runs_at_a_lower_cpu_priority_than_the_daemon() -> None:
    """A commit's validation and rendering yield the CPU to the packet threads (nice +10)."""
    built = worker.build(read_directory(EXAMPLE), niceness)
    assert built.files == {"nice": str(min(os.nice(0) + worker.Limits().nice, 19)).encode()}
    assert worker.Limits().nice > 0


def test_the_worker_does_not_import_the_daemon_loop_servers_or_database_drivers() -> None:
    # What the forkserver preloads and every worker runs: the package import must not bring in
    # the rest of the daemon (~30 MB in the forkserver and again in each worker, issue 25's 2 GB).
    code = ("import sys, reconciler.daemon.worker, reconciler.daemon.resident; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'waitress') "
            "or m in ('reconciler.daemon.loop', 'reconciler.daemon.steps', 'reconciler.servers'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == []
    from reconciler.daemon import Daemon  # the package's names are still there, imported when asked for
    assert Daemon.__module__ == "reconciler.daemon.loop"
