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
