"""How the full render loop walks its nodes: one after another here, on two CPUs where the caller
installs a forking walker (issue 25: the first render of 100,000 nodes took ~47 s on one CPU
while the daemon's other CPU waited).

`render_generation`'s full loop consumes `walk(...)` in node order, as it consumed
`render(node)` before; so does a first validation's boot check (`core.bootcheck`, whose "render"
is a node's check and whose side effects carry from node to node). Pure: the walker that forks
(`adapters.renderfork`) is installed by the daemon's worker around its validation and render, and
by the `validate`, `render` and `diff` commands around their validation (`using`); without one
the nodes go here one by one. A walker must give what this one gives: the same results in order,
the same first exception, and `adopt`ed side effects, with this process's renders and adoptions
in node order.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
K = TypeVar("K")  # what is walked: a Node (the render, the boot check), a path (the parse)


class Walker(Protocol):
    def __call__(
        self,
        nodes: Sequence[K],
        render: Callable[[K], T],
        fresh: Callable[[K], bool],
        capture: Callable[[K, T], object],
        adopt: Callable[[K, Any], T],
        size: Callable[[T], int],
        max_bytes: int,
    ) -> Iterator[tuple[K, T]]:
        """Each node of `nodes`, in order, with `render(node)`. `fresh(node)`: whether it needs
        real rendering (the others are cheap: taken from a memo). A walker that renders a node
        elsewhere sends back `capture(node, result)` (picklable, taken right after the render,
        where its side effects are visible) and yields `adopt(node, captured)` here, which
        replays them. `size(result)`: its bytes; past `max_bytes` of them the loop raises
        `generation-too-large`, so a walker need not render further ahead."""
        ...


def one_by_one(
    nodes: Sequence[K],
    render: Callable[[K], T],
    fresh: Callable[[K], bool],
    capture: Callable[[K, T], object],
    adopt: Callable[[K, Any], T],
    size: Callable[[T], int],
    max_bytes: int,
) -> Iterator[tuple[K, T]]:
    for node in nodes:
        yield node, render(node)


_WALKER: contextvars.ContextVar[Walker] = contextvars.ContextVar("render_walker", default=one_by_one)


@contextlib.contextmanager
def using(walker: Walker) -> Iterator[None]:
    """Full render loops in this block walk their nodes with `walker`."""
    token = _WALKER.set(walker)
    try:
        yield
    finally:
        _WALKER.reset(token)


def walker() -> Walker:
    return _WALKER.get()
