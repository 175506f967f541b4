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

`meanwhile(work)`: work the caller needs after the loop and that does not depend on it (the
render's DHCP configs, ~1.2 s at 100,000 nodes); a walker that forks does it in this process once
its own share is rendered, while it waits for the child's (`run_meanwhile`), else it is done when
the caller asks for it (`Meanwhile.result`), after the loop as before. Its exception is raised
there too, after any of the loop's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

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


class Meanwhile(Generic[T]):
    """`work` done at most once: by a walker (`run_meanwhile`) or when its result is asked for."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._done: tuple[T] | BaseException | None = None

    def run(self) -> None:
        if self._done is None:
            try:
                self._done = (self._work(),)
            except Exception as exc:  # raised when the caller asks for the result, as it would have been
                self._done = exc

    def result(self) -> T:
        self.run()
        done = self._done
        if isinstance(done, BaseException):
            raise done
        assert done is not None
        return done[0]


_MEANWHILE: contextvars.ContextVar[Meanwhile[Any] | None] = contextvars.ContextVar("render_meanwhile", default=None)


@contextlib.contextmanager
def meanwhile(work: Callable[[], T]) -> Iterator[Meanwhile[T]]:
    """Full render loops in this block may do `work` while a child renders (module docstring)."""
    pending = Meanwhile(work)
    token = _MEANWHILE.set(pending)
    try:
        yield pending
    finally:
        _MEANWHILE.reset(token)


_ARRIVED: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar("render_arrived", default=None)


@contextlib.contextmanager
def arriving(hook: Callable[[Any], None] | None) -> Iterator[None]:
    """A walker that renders elsewhere calls `hook(captured)` on each capture as it arrives, on
    the thread that receives it, ahead of its `adopt` (the worker spills the bytes of the nodes a
    forked child rendered as they come, not once the loop reaches them: daemon.spill)."""
    token = _ARRIVED.set(hook)
    try:
        yield
    finally:
        _ARRIVED.reset(token)


def arrival_hook() -> Callable[[Any], None] | None:
    return _ARRIVED.get()


def run_meanwhile() -> None:
    """For a walker that forks: do the enclosing `meanwhile` work now (this process would wait)."""
    pending = _MEANWHILE.get()
    if pending is not None:
        pending.run()
