"""The daemon's writer (daemon.persist) gives way to a commit on its way: while a reconcile holds
`giving_way`, the write of the last served generation waits between files, and goes on when the
commit is served, or when `give_way_max` is up (a long reconcile must not keep `current` behind).

Real files: an `ArtifactStore` in a temporary state directory, written by a real `Persister`
thread with the pace the daemon's steps pass (daemon.steps `_persist`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from reconciler.adapters.artifacts import PACE_EVERY, ArtifactStore
from reconciler.daemon import persist

FILES = 10 * PACE_EVERY


def writer(tmp_path: Path, give_way_max: float) -> tuple[persist.Persister, ArtifactStore]:
    store = ArtifactStore(tmp_path / "state")
    store.prepare()

    def write(job: persist.Job) -> None:
        store.write(job.revision, job.files, job.source, pace=persister.pace)
        store.swap_current(job.revision)

    persister = persist.Persister(write, give_way_max=give_way_max)
    return persister, store


def job(revision: str) -> persist.Job:
    files = {f"nodes/n{i:05d}/boot.ipxe": f"#!ipxe\n# {revision} {i}\n".encode() for i in range(FILES)}
    return persist.Job(revision, files, {"netboot.yaml": b"site: {}\n"}, (), time.monotonic())


def written(store: ArtifactStore, revision: str) -> int:
    tmp = store.path_of(revision).with_name(revision + ".tmp")
    return sum(len(names) for _dir, _subdirs, names in os.walk(tmp))


def test_the_write_waits_while_a_commit_is_on_its_way_and_finishes_once_it_is_served(tmp_path: Path) -> None:
    persister, store = writer(tmp_path, give_way_max=60.0)
    with persister.giving_way():
        persister.submit(job("a" * 40))
        time.sleep(0.5)
        assert written(store, "a" * 40) <= PACE_EVERY  # stopped at the first pace
        assert persister.view()["persisted_revision"] is None
    assert persister.flush(30.0)
    assert persister.view()["persisted_revision"] == "a" * 40
    assert store.current_revision() == "a" * 40
    assert len(list((store.path_of("a" * 40) / "nodes").iterdir())) == FILES
    persister.stop(5.0)


def test_a_commit_that_takes_long_keeps_the_write_waiting_only_give_way_max(tmp_path: Path) -> None:
    persister, store = writer(tmp_path, give_way_max=0.3)
    with persister.giving_way():  # never served while the write runs
        t0 = time.monotonic()
        persister.submit(job("b" * 40))
        assert persister.flush(30.0)
        assert time.monotonic() - t0 >= 0.3
        assert store.current_revision() == "b" * 40
    persister.stop(5.0)


def test_without_a_commit_on_its_way_the_write_does_not_wait(tmp_path: Path) -> None:
    persister, store = writer(tmp_path, give_way_max=60.0)
    persister.submit(job("c" * 40))
    assert persister.flush(30.0)
    assert store.current_revision() == "c" * 40
    persister.stop(5.0)
