"""core.render pauses the cyclic collector while it renders a generation (as validation does): at
100,000 nodes each collection walked the growing heap for nothing. The collector must be back as it
was afterwards, and the files the same as with it running."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from reconciler.core.render import render_generation
from reconciler.core.snapshot import Snapshot
from tests.render_support import valid_state
from tests.repo_builder import files as base_files
from tests.support import collections_inside


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Generations of the collections that started inside the render proper (core.render's
    _render_generation on the stack), with the collector made eager (threshold 1)."""
    with collections_inside("_render_generation") as seen:
        yield seen


def test_no_collection_runs_during_a_render_and_the_collector_is_back_after(collections: list[int]) -> None:
    state = valid_state(Snapshot("b" * 40, base_files()))
    gc.enable()
    collections.clear()
    files = render_generation(state, b"secret")
    assert collections == []
    assert gc.isenabled()
    gc.disable()
    assert dict(render_generation(state, b"secret")) == dict(files)
    assert not gc.isenabled()  # left off when it was off
