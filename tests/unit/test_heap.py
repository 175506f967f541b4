"""reconciler.heap: the served state leaves the collector's passes, and is still reclaimed
once a later generation replaces it (frozen cycles must not leak across commits)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from reconciler import heap


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


def test_settled_objects_are_skipped_by_later_collections() -> None:
    state, _ = _cycle()
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert state not in gc.get_objects(generation=2)  # a full pass does not walk it


def test_a_replaced_generation_in_a_cycle_is_reclaimed_at_the_next_settle() -> None:
    state, probe = _cycle()
    heap.settle()
    del state
    gc.collect()
    assert probe() is not None  # frozen: even a full pass leaves it alone
    heap.settle()  # the next activation
    assert probe() is None
