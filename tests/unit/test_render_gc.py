"""core.render pauses the cyclic collector while it renders a generation (as validation does): at
100,000 nodes each collection walked the growing heap for nothing. The collector must be back as it
was afterwards, and the files the same as with it running."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from reconciler.core.render import render_generation
from reconciler.core.snapshot import Snapshot
from tests.render_support import valid_state
from tests.repo_builder import files as base_files


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Generations of the collections that started inside the render proper (core.render's
    _render_generation on the stack), with the collector made eager (threshold 1)."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        frame: FrameType | None = sys._getframe(1)
        while phase == "start" and frame is not None:
            if frame.f_code.co_name == "_render_generation":
                seen.append(info["generation"])
                return
            frame = frame.f_back

    threshold = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    gc.callbacks.append(count)
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
        gc.enable()


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
