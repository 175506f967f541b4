"""reconciler.heap: the served state leaves the collector's passes; a commit does not pay a full
pass over the heap (the 100-400 ms GIL stall per commit bench/reconcile_serving.py showed), and
garbage frozen with the served state is still reclaimed, once the frozen heap has doubled."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import heap
from reconciler.adapters.dirsource import read_directory
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from reconciler.generation import Generation

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"


class _Node:
    """A stand-in for a state object that sits in a reference cycle."""

    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    return a, weakref.ref(b)


def _full_passes(settle: Any) -> int:
    """How many generation-2 (full) collections `settle()` ran."""
    passes: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            passes.append(1)

    gc.callbacks.append(seen)
    try:
        settle()
    finally:
        gc.callbacks.remove(seen)
    return len(passes)


def test_settled_objects_are_skipped_by_later_collections() -> None:
    state, _ = _cycle()
    heap.FrozenHeap().settle()
    assert gc.get_freeze_count() > 0
    assert state not in gc.get_objects(generation=2)  # a full pass does not walk it


def test_a_commit_that_replaces_the_served_state_runs_no_full_pass() -> None:
    frozen = heap.FrozenHeap()
    served = [[i] for i in range(20000)]
    assert _full_passes(frozen.settle) == 1  # the first: nothing frozen yet
    served = [[i] for i in range(20000)]  # the next generation replaces it
    assert _full_passes(frozen.settle) == 0
    assert len(served) == 20000


def test_frozen_garbage_is_reclaimed_once_the_frozen_heap_has_doubled() -> None:
    frozen = heap.FrozenHeap()
    state, probe = _cycle()
    frozen.settle()
    del state
    assert _full_passes(frozen.settle) == 0
    assert probe() is not None  # frozen garbage, bounded by the live heap
    grown = [[i] for i in range(int(gc.get_freeze_count() * heap.GROWTH))]
    assert _full_passes(frozen.settle) == 1
    assert probe() is None
    assert grown


def test_a_replaced_generation_is_freed_without_the_collector() -> None:
    """Why settle() need not collect on every commit: a generation, its state and its views
    hold no reference cycles, so dropping the last reference frees them at once."""
    result = validate(read_directory(EXAMPLE))
    assert result.state is not None
    generation = Generation("a" * 40, result.state, render_generation(result.state, report_secret=b"k"), None)
    generation.warm()
    views: list[Any] = [generation, generation.state, generation.boot_index, generation.dhcp_plan]
    probes = [weakref.ref(v) for v in views]
    del views
    del result
    gc.disable()
    try:
        del generation
        assert [p() for p in probes] == [None] * 4
    finally:
        gc.enable()


def test_a_reconcile_that_leaves_many_young_objects_has_them_frozen_not_walked() -> None:
    """`freeze_young` (the daemon, once a reconcile is concluded, before its paused collector
    resumes): past the threshold the young objects are frozen as they are, and the pass that
    would have walked them finds none; under it nothing is frozen."""
    gc.collect()
    gc.disable()
    try:
        frozen = gc.get_freeze_count()
        few = [[i] for i in range(100)]
        assert not heap.freeze_young(threshold=10_000)
        assert gc.get_freeze_count() == frozen
        many = [[i] for i in range(20_000)]
        assert heap.freeze_young(threshold=10_000)
        assert gc.get_freeze_count() >= frozen + 20_000
        assert gc.get_count()[0] == 0  # nothing young left for the next pass to walk
        assert many[-1] not in gc.get_objects(generation=0)
    finally:
        gc.enable()
    del few
