"""A `core.render.fanout` walker on two CPUs: a forked child renders half of the nodes that need
rendering while this process renders the rest (issue 25: the first render of 100,000 nodes took
~47 s on one CPU while the daemon's other CPU waited for it).

Installed by the daemon's worker process around its render (`daemon.worker.render_reusing`'s
callers in `daemon.resident` and `daemon.worker`): never in the daemon itself, whose serving
threads a fork would copy mid-flight. Below `FANOUT_MIN` nodes to render, or on one CPU, the
nodes render one by one. The child shares the parent's memory copy-on-write (nothing is pickled
to it) and streams back, per node, what `capture` takes of its rendering; the parent `adopt`s
each in order as the loop reaches it, so the loop sees what it would have seen: the same entries,
the same first exception (raised when the loop reaches that node), the same memo. A child that
dies leaves its nodes to this process. Each process keeps the commit's CPU budget that remained
at the fork (`template.commit_budget`): the render stays within it in wall time. The child stops
after `max_bytes` of its own output: past that the loop raises `generation-too-large` first.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import struct
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from reconciler.core import template
from reconciler.core.model import Node

T = TypeVar("T")

FANOUT_MIN = 4_000  # nodes to render: below this a fork and the pipe cost more than half the render
# The same, set for a process (the daemon's tests set it low so that small repositories fork too).
FANOUT_MIN_ENV = "NETBOOT_RECONCILE_FANOUT_MIN"
# "forked": nodes handed to children; "child_maxrss_kb": the largest child's peak resident set, its
# pages shared with this process included (the worker's timings).
counts: collections.Counter[str] = collections.Counter()
_CHUNK = 256  # nodes per message from the child
_FRAME = struct.Struct("<Q")
_END, _RAISED = "end", "raised"


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def walk(
    nodes: Sequence[Node],
    render: Callable[[Node], T],
    fresh: Callable[[Node], bool],
    capture: Callable[[Node, T], object],
    adopt: Callable[[Node, Any], T],
    size: Callable[[T], int],
    max_bytes: int,
    minimum: int | None = None,
) -> Iterator[tuple[Node, T]]:
    """Each node of `nodes`, in order, with `render(node)`. `fresh(node)`: whether it needs real
    rendering (the others are cheap: taken from a memo); `capture(node, result)`: what the child
    sends of a rendering (picklable; taken right after it, where side effects like the memo's are
    visible); `adopt(node, captured)`: the result in this process, side effects replayed.
    `minimum`: the fewest fresh nodes that fork (None: `FANOUT_MIN_ENV`, else `FANOUT_MIN`)."""
    if minimum is None:
        minimum = int(os.environ.get(FANOUT_MIN_ENV) or FANOUT_MIN)
    todo = [i for i, node in enumerate(nodes) if fresh(node)]
    if len(todo) < max(minimum, 2) or cpus() < 2 or not hasattr(os, "fork"):
        for node in nodes:
            yield node, render(node)
        return
    theirs = todo[len(todo) // 2:]
    counts["forked"] += len(theirs)
    child = _Child.start(nodes, theirs, render, capture, size, max_bytes)
    mine: dict[int, T] = {}
    failed: BaseException | None = None
    total = 0
    theirs_set = set(theirs)
    try:
        for i, node in enumerate(nodes):  # this process's share first, while the child renders its own
            if i in theirs_set:
                continue
            try:
                result = mine[i] = render(node)
            except BaseException as exc:  # raised when the loop reaches this node, as it would have been
                failed = exc
                mine.pop(i, None)
                break
            total += size(result)
            if total > max_bytes:
                break
        for i, node in enumerate(nodes):
            if i in theirs_set:
                got = child.take(i)
                yield node, adopt(node, got[0]) if got is not None else render(node)
            elif i in mine:
                yield node, mine.pop(i)
            elif failed is not None:
                raise failed
            else:
                yield node, render(node)
    finally:
        child.close()


class _Child:
    """The forked renderer and the thread that reads its messages into a queue."""

    def __init__(self, pid: int, reader: int) -> None:
        self.pid = pid
        self._fd = reader
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name="render-fanout", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, nodes: Sequence[Node], theirs: list[int], render: Callable[[Node], T],
              capture: Callable[[Node, T], object], size: Callable[[T], int], max_bytes: int) -> _Child:
        remaining = template.commit_remaining()
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(reader)
            code = 1
            try:
                budget = template.commit_budget(remaining) if remaining is not None else contextlib.nullcontext()
                with budget:
                    _serve(writer, nodes, theirs, render, capture, size, max_bytes)
                code = 0
            finally:
                os._exit(code)
        os.close(writer)
        return cls(pid, reader)

    def _read(self) -> None:
        with os.fdopen(self._fd, "rb") as pipe:
            while True:
                head = pipe.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    break
                body = pipe.read(_FRAME.unpack(head)[0])
                try:
                    self._queue.put(("chunk", pickle.loads(body)))  # noqa: S301 (our own child's bytes)
                except Exception:  # a torn message: the child died mid-write
                    break
        self._queue.put((_END, None))

    def take(self, index: int) -> tuple[Any] | None:
        """(what `capture` took of node `index`,), raising what the child raised there; None when
        the child ended without it (then this process renders it)."""
        while True:
            while self._pending:
                at, message = self._pending[0]
                if at > index:
                    break
                self._pending.popleft()
                if at == index:
                    kind, value = message
                    if kind == _RAISED:
                        raise value
                    return (value,)
            if self._ended:
                return None
            kind, chunk = self._queue.get()
            if kind == _END:
                self._ended = True
            else:
                self._pending.extend(chunk)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)  # done already, or no longer needed (the loop raised)
        with contextlib.suppress(ChildProcessError):
            usage = os.wait4(self.pid, 0)[2]
            counts["child_maxrss_kb"] = max(counts["child_maxrss_kb"], usage.ru_maxrss)
        self._thread.join()


def _serve(writer: int, nodes: Sequence[Node], theirs: list[int], render: Callable[[Node], T],
           capture: Callable[[Node, T], object], size: Callable[[T], int], max_bytes: int) -> None:
    total = 0
    batch: list[tuple[int, tuple[str, object]]] = []
    with os.fdopen(writer, "wb") as pipe:
        for i in theirs:
            try:
                result = render(nodes[i])
                batch.append((i, ("ok", capture(nodes[i], result))))
                total += size(result)
            except BaseException as exc:
                batch.append((i, (_RAISED, _picklable(exc))))
                break
            if total > max_bytes:
                break
            if len(batch) >= _CHUNK:
                _send(pipe, batch)
                batch = []
        _send(pipe, batch)


def _send(pipe: Any, batch: list[tuple[int, tuple[str, object]]]) -> None:
    body = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_FRAME.pack(len(body)) + body)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (round trip of our own object)
    except Exception:
        return RuntimeError("".join(traceback.format_exception(exc)))
    return exc
