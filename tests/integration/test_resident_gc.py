"""The serving process pauses its cyclic collector while a worker's result comes in
(daemon.resident.Worker.build): a first result is every node and file, and each pass would walk
the daemon's whole heap holding the GIL its servers need. A real worker process; the collector
made eager in this one (threshold 1), so any pass while results are received would be seen."""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.dirsource import read_directory
from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from reconciler.daemon import resident
from tests.integration.daemon_support import WorkTree
from tests.support import collections_inside

render = functools.partial(render_generation, report_secret=b"gc-test-secret")


@pytest.fixture
def receiving_collections() -> Iterator[list[int]]:
    """Generations of the passes that started with Worker._receive on this process's stack."""
    with collections_inside("_receive") as seen:
        yield seen


def test_no_collection_while_a_result_is_received_and_the_collector_is_back_after(
        tmp_path: Path, receiving_collections: list[int]) -> None:
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": f"mac: 52:54:06:00:00:{i:02x}\nprofile: local-disk\n" for i in range(30)})
    snap = read_directory(tree.path)
    snap = dataclasses.replace(snap, revision=hashlib.sha1(snap.revision.encode()).hexdigest())
    pool = resident.Worker(render)
    try:
        gc.enable()
        built = pool.build(snap)
        assert receiving_collections == []
        assert gc.isenabled()
        assert dict(built.files) == dict(render(built.state))
    finally:
        pool.close()


_SEEN: list[int] = []  # in the worker process: collections with resident._build on the stack


def _watching_render(state: DesiredState) -> dict[str, bytes]:
    """The worker's renderer (runs in the worker process): from its first call on, the collector
    made eager and every pass started inside `_build` counted; the count so far is a served file."""
    import sys

    if not _SEEN:
        _SEEN.append(0)
        gc.set_threshold(1, 1, 1)

        def count(phase: str, info: dict[str, int]) -> None:
            frame = sys._getframe(1)
            while phase == "start" and frame is not None:
                if frame.f_code.co_name == "_build":
                    _SEEN[0] += 1
                    return
                frame = frame.f_back  # type: ignore[assignment]

        gc.callbacks.append(count)
    files = dict(render(state))
    files["gc-passes"] = str(_SEEN[0]).encode()
    return files


def test_the_worker_makes_its_results_with_the_collector_paused(tmp_path: Path) -> None:
    """In the worker process, no pass between validation and rendering or while the result is
    sent (each would walk every object the commit made: ~0.7 s at 100,000 nodes); its heap is
    frozen after, beside the daemon's activation."""
    tree = WorkTree(tmp_path / "repo")
    tree.write({f"nodes/bulk-{i}.yaml": f"mac: 52:54:06:00:01:{i:02x}\nprofile: local-disk\n" for i in range(30)})
    pool = resident.Worker(_watching_render)
    try:
        for n in range(3):
            tree.write({"nodes/bulk-0.yaml": f"mac: 52:54:06:00:01:00\nprofile: local-disk\nlabels: {{n: c{n}}}\n"})
            snap = read_directory(tree.path)
            snap = dataclasses.replace(snap, revision=hashlib.sha1(f"{n}".encode()).hexdigest())
            built = pool.build(snap)
            assert built.files["gc-passes"] == b"0", n  # the passes of the commits before this one
    finally:
        pool.close()
