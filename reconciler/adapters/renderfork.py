"""A `core.render.fanout` walker on two CPUs: a forked child renders half of the nodes that need
rendering while this process renders the rest (issue 25: the first render of 100,000 nodes took
~47 s on one CPU while the daemon's other CPU waited for it).

Installed by the daemon's worker process around its render (`daemon.worker.render_reusing`'s
callers in `daemon.resident` and `daemon.worker`) and its validation (a first one's boot check,
`core.bootcheck`), and by the commands around theirs (`commands.validate`): never in the daemon
itself, whose serving threads a fork would copy mid-flight. Below `FANOUT_MIN` nodes to render, on one CPU, or when the
system gives no process, the nodes render one by one. The child shares the parent's memory
copy-on-write (nothing is pickled to it) and streams back, per node, what `capture` takes of its
rendering; the parent `adopt`s each in order as the loop reaches it, so the loop sees what it
would have seen: the same entries, the same memo. At a node whose render fails the child stops,
and the parent renders that node and the child's later ones itself: a failure is met where one
process meets it (a RecursionError depends on the stack's depth, and the child's is deeper). A
child that dies leaves its nodes to the parent the same way; it dies with the worker
(PR_SET_PDEATHSIG) and holds none of its descriptors but its pipe. The commit's template CPU
budget (`template.commit_budget`) is spent once, as in one process: the child sends each node's
CPU time, charged to this process's budget as the node is adopted (`template.charge`); a node
whose CPU the budget no longer covers is rendered here, where it fails as one process's would.
(The child's own budget, what remained at the fork, only stops it sooner.) The worker's
RLIMIT_CPU that remained is the child's too: a forked render may use up to twice that in CPU. The
child stops after `max_bytes` of its own output: past that the loop raises `generation-too-large`
first.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import os
import pickle
import queue
import resource
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from reconciler.core import template
from reconciler.core.render import fanout

T = TypeVar("T")
K = TypeVar("K")

FANOUT_MIN = 4_000  # nodes to render: below this a fork and the pipe cost more than half the render
# The same, set for a process (the daemon's tests set it low so that small repositories fork too).
FANOUT_MIN_ENV = "NETBOOT_RECONCILE_FANOUT_MIN"
# "forked": nodes handed to children; "child_maxrss_kb": the largest child's peak resident set, its
# pages shared with this process included (the worker's timings).
counts: collections.Counter[str] = collections.Counter()
_CHUNK = 256  # nodes per message from the child
_FRAME = struct.Struct("<Q")
_END = "end"
_PR_SET_PDEATHSIG = 1  # prctl(2)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def walk(
    nodes: Sequence[K],
    render: Callable[[K], T],
    fresh: Callable[[K], bool],
    capture: Callable[[K, T], object],
    adopt: Callable[[K, Any], T],
    size: Callable[[T], int],
    max_bytes: int,
    minimum: int | None = None,
) -> Iterator[tuple[K, T]]:
    """Each node of `nodes`, in order, with `render(node)`. `fresh(node)`: whether it needs real
    rendering (the others are cheap: taken from a memo); `capture(node, result)`: what the child
    sends of a rendering (picklable; taken right after it, where side effects like the memo's are
    visible); `adopt(node, captured)`: the result in this process, side effects replayed.
    `minimum`: the fewest fresh nodes that fork (None: `FANOUT_MIN_ENV`, else `FANOUT_MIN`)."""
    if minimum is None:
        minimum = int(os.environ.get(FANOUT_MIN_ENV) or FANOUT_MIN)
    todo = [i for i, node in enumerate(nodes) if fresh(node)]
    theirs = todo[len(todo) // 2:]
    child = None
    if len(todo) >= max(minimum, 2) and cpus() >= 2 and hasattr(os, "fork"):
        child = _Child.start(nodes, theirs, render, capture, size, max_bytes)
    if child is None:  # too few, one CPU, or no fork to be had (a process limit, memory)
        yield from fanout.one_by_one(nodes, render, fresh, capture, adopt, size, max_bytes)
        return
    counts["forked"] += len(theirs)
    mine: dict[int, T] = {}
    failed: BaseException | None = None
    total = 0
    theirs_set = set(theirs)
    try:
        # This process's share first, while the child renders its own: the nodes before the
        # child's first, so that renders here and adoptions happen in node order (a validation's
        # boot check carries state from node to node: `core.bootcheck`).
        for i, node in enumerate(nodes[:theirs[0]]):
            try:
                result = mine[i] = render(node)
            except BaseException as exc:  # raised when the loop reaches this node, as it would have been
                failed = exc
                break
            total += size(result)
            if total > max_bytes:
                break
        else:
            # This process would wait for the child's share now: what the caller needs after the
            # loop and not of it (the DHCP configs) is done here meanwhile (`fanout.meanwhile`),
            # not charged to the templates' budget (one process does it after the last template).
            with template.outside_budget():
                fanout.run_meanwhile()
        for i, node in enumerate(nodes):
            if i in theirs_set:
                got = child.take(i)
                # here: what the child could not render, and what the commit's budget no longer covers
                yield node, adopt(node, got[0]) if got is not None and _charged(got[1]) else render(node)
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

    def __init__(self, pid: int, reader: int, arrived: Callable[[Any], None] | None = None) -> None:
        self.pid = pid
        self._fd = reader
        self._arrived = arrived  # `fanout.arriving`'s hook, called here on each capture as it comes
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending: collections.deque[tuple[int, Any, float]] = collections.deque()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name="render-fanout", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, nodes: Sequence[K], theirs: list[int], render: Callable[[K], T],
              capture: Callable[[K, T], object], size: Callable[[T], int], max_bytes: int) -> _Child | None:
        """The child started, or None when the system gives no process (EAGAIN, ENOMEM) or no thread
        to read it (the child is then killed and reaped)."""
        remaining = template.commit_remaining()
        cpu = _cpu_left()
        parent = os.getpid()
        try:
            reader, writer = os.pipe()
        except OSError:
            return None
        _widen(writer)
        try:
            pid = os.fork()
        except OSError:
            os.close(reader)
            os.close(writer)
            return None
        if pid == 0:  # the child: never returns
            code = 1
            try:
                _bound_to(parent, keep=writer, cpu=cpu)
                budget = template.commit_budget(remaining) if remaining is not None else contextlib.nullcontext()
                with budget:
                    _serve(writer, nodes, theirs, render, capture, size, max_bytes)
                code = 0
            finally:
                os._exit(code)
        os.close(writer)
        try:
            return cls(pid, reader, fanout.arrival_hook())
        except BaseException as exc:  # its reader thread did not start: no child left running or unreaped
            _end(pid)
            os.close(reader)
            if isinstance(exc, RuntimeError):  # "can't start new thread": as when no fork is to be had
                return None
            raise

    def _read(self) -> None:
        with os.fdopen(self._fd, "rb") as pipe:
            while True:
                head = pipe.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    break
                body = pipe.read(_FRAME.unpack(head)[0])
                try:
                    batch = pickle.loads(body)  # noqa: S301 (our own child's bytes)
                except Exception:  # a torn message: the child died mid-write
                    break
                del body
                if self._arrived is not None:
                    self._arrive(batch)
                self._queue.put(("chunk", batch))
        self._queue.put((_END, None))

    def _arrive(self, batch: list[tuple[int, Any, float]]) -> None:
        assert self._arrived is not None
        try:
            for _, captured, _ in batch:
                self._arrived(captured)
        except Exception:  # the hook's work is redone or done without at `adopt`
            self._arrived = None

    def take(self, index: int) -> tuple[Any, float] | None:
        """(what `capture` took of node `index`, the CPU seconds its render took there), or None when
        the child ended without it (it stopped at a failure, or died): then this process renders it."""
        while True:
            while self._pending:
                at, captured, cpu = self._pending[0]
                if at > index:
                    break
                self._pending.popleft()
                if at == index:
                    return captured, cpu
            if self._ended:
                return None
            kind, chunk = self._queue.get()
            if kind == _END:
                self._ended = True
            else:
                self._pending.extend(chunk)

    def close(self) -> None:
        _end(self.pid)  # done already, or no longer needed (the loop raised)
        self._thread.join()


def _end(pid: int) -> None:
    """The child killed and reaped (its peak resident set counted)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        usage = os.wait4(pid, 0)[2]
        counts["child_maxrss_kb"] = max(counts["child_maxrss_kb"], usage.ru_maxrss)


def _charged(cpu: float) -> bool:
    """Whether the commit's template budget left here covers `cpu` seconds the child spent on a
    node: then they are charged to it (`template.charge`), as if spent here. Not covered, the node
    is rendered here: one process would have run out of budget within it."""
    remaining = template.commit_remaining()
    if remaining is not None and remaining <= cpu:
        return False
    template.charge(cpu)
    return True


def _widen(fd: int) -> None:
    """The pipe as large as the system allows (up to 4 MiB): the reader is a thread of a process
    whose main thread renders, so it runs when that thread lets go of the GIL (every 5 ms); with a
    64 KiB pipe the child stalled on a full pipe most of the time and the fork gained nothing
    (20,000 nodes: 2.67 s rendering alone, 2.65 s forked)."""
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(limit, 4 << 20))


def _cpu_left() -> int | None:
    """This process's CPU seconds left under its soft RLIMIT_CPU (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_CPU)
    if soft == resource.RLIM_INFINITY:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return max(1, soft - int(usage.ru_utime + usage.ru_stime))


def _bound_to(parent: int, keep: int, cpu: int | None) -> None:
    """The child dies with the process that forked it (a worker killed for its limits must not
    leave a renderer holding its heap and its end of the daemon's pipe), holds no other of its
    descriptors, and has the CPU the worker had left (its own count starts at 0)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)
    os.closerange(3, keep)
    os.closerange(keep + 1, _max_fd())
    if cpu is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu if hard == resource.RLIM_INFINITY else min(cpu, hard), hard))


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 65536 if soft == resource.RLIM_INFINITY else int(soft)


def _serve(writer: int, nodes: Sequence[K], theirs: list[int], render: Callable[[K], T],
           capture: Callable[[K, T], object], size: Callable[[T], int], max_bytes: int) -> None:
    """Render `theirs` in order and send each capture, with the CPU time its render took (what the
    parent charges to the commit's budget). At a node whose render fails, stop: the parent renders
    it and the rest itself, so the failure is its own, met where one process would meet it (a
    RecursionError depends on how deep the stack already is; this one is deeper)."""
    total = 0
    batch: list[tuple[int, object, float]] = []
    with os.fdopen(writer, "wb") as pipe:
        for i in theirs:
            try:
                started = time.thread_time()
                result = render(nodes[i])
                cpu = time.thread_time() - started
                batch.append((i, capture(nodes[i], result), cpu))
            except Exception:
                break
            total += size(result)
            if total > max_bytes:
                break
            if len(batch) >= _CHUNK:
                _send(pipe, batch)
                batch = []
        _send(pipe, batch)


def _send(pipe: Any, batch: list[tuple[int, object, float]]) -> None:
    body = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_FRAME.pack(len(body)) + body)
