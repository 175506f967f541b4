"""Validation and rendering of one commit in a child process: the serving process's GIL is never
held by them, and a commit cannot take the daemon's memory or CPU.

Called by the generation loader (daemon.loader, validating a stored generation's `.source/`);
the reconcile steps use the long-lived worker built on its parts (daemon.resident). Why: the
daemon is one process whose packet threads (DHCP, TFTP, HTTP) need the GIL back within
milliseconds, and validating plus rendering 10,000 nodes is seconds of pure Python; in a child
they run beside the servers instead of between their packets. The child is a fresh fork of a
forkserver that has imported the core once (`preload`), lives for one commit (its memory goes
back to the system when it exits), and runs under RLIMIT_AS and RLIMIT_CPU (`Limits`): a commit
that exhausts either is invalid, a `resource-limit` finding, never retried. It runs at a lower
CPU priority (nice +10) than the daemon, so on a shared or busy CPU the packet threads come first.

With a memo file (`build(memo=...)`, the state directory's `render-memo`), the child renders
with the memo of the last commit (core.render.reuse: a node whose inputs did not change is not
rendered again) and writes it back for the next (daemon.resident keeps it in memory instead);
`verify` also renders from scratch, and a difference is reported (`Built.mismatched`) and the
from-scratch files are the result.

Results come back over a pipe in bounded chunks (the state without its nodes, then nodes, then
files): each chunk is unpickled in the parent holding the GIL for a few milliseconds, and the
packet threads get it back in between (one 10,000-node state in one piece held it ~0.4 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import resource
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.adapters import renderfork
from reconciler.core import codes
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState, Issue, Location, Node
from reconciler.core.render import fanout, reuse
from reconciler.core.render.files import spilled_in, unspilled
from reconciler.core.render.reuse import NodeMemo
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate

log = logging.getLogger(__name__)

Renderer = Callable[[DesiredState], Mapping[str, bytes]]
CHUNK_NODES = 200
CHUNK_FILES = 2000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 4 << 30  # RLIMIT_AS of the child: address space, not resident memory
    cpu_seconds: int = 600  # RLIMIT_CPU of the child (the core's templates have their own deadline)
    wall_seconds: float = 1800.0  # a child that neither finishes nor burns CPU (blocked) is killed
    # Added to the child's nice value (capped at 19 by the kernel): on a busy CPU the packet
    # threads win it. Not SCHED_IDLE: on a host kept busy by others that could starve a commit.
    nice: int = 10
    # Dead bytes in the long-lived worker's spill files (daemon.spill) past twice the live ones and
    # this many: the worker is replaced before the next commit (`Spill.outgrown`).
    spill_slack: int = 64 << 20


@dataclass(frozen=True)
class Built:
    issues: tuple[Issue, ...]
    state: DesiredState
    files: dict[str, bytes] | None  # None: validation only
    timings: Mapping[str, float]
    mismatched: tuple[str, ...] = ()  # paths the memo rendered differently from scratch (`verify`)


@functools.cache
def _mp() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["reconciler.daemon.worker"])
    return ctx


def build(snapshot: Snapshot, renderer: Renderer | None, limits: Limits = Limits(), site: str | None = None, *,
          memo: Path | None = None, verify: bool = False) -> Built:
    """Validate `snapshot` (and render what `site` serves with `renderer`) in a child process.
    InvalidRevision when it is invalid, has no such site, cannot be rendered, or exceeds a limit;
    RuntimeError on a bug. `memo`: the file the render memo is kept in between commits; `verify`:
    check it (module docstring)."""
    ctx = _mp()
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(writer, snapshot, renderer, limits, site, memo, verify),
                        name="netboot-worker", daemon=True)
    child.start()
    writer.close()
    try:
        return _receive(reader, child, limits, snapshot.revision)
    finally:
        reader.close()
        if child.is_alive():
            child.kill()
        child.join(5)


def _receive(reader: Any, child: Any, limits: Limits, revision: str) -> Built:
    deadline = time.monotonic() + limits.wall_seconds
    head: tuple[DesiredState, tuple[Issue, ...]] | None = None
    nodes: list[Node] = []
    files: dict[str, bytes] | None = None
    while True:
        if not reader.poll(max(0.0, deadline - time.monotonic())):
            child.kill()
            raise _limit_issue(f"validating and rendering took over {limits.wall_seconds:.0f} s (wall clock)")
        try:
            message = reader.recv()
        except EOFError:
            child.join(5)
            raise _died(child.exitcode, limits) from None
        kind = message[0]
        if kind == "state":
            head = (message[1], message[2])
        elif kind == "nodes":
            nodes.extend(message[1])
        elif kind == "files":
            files = files if files is not None else {}
            files.update(message[1])
        elif kind == "done":
            assert head is not None
            state = dataclasses.replace(head[0], nodes=tuple(nodes))
            return Built(head[1], state, files if message[2] else None, message[1], message[3])
        elif kind == "invalid":
            raise InvalidRevision(message[1], message[2])
        elif kind == "memory":
            raise _limit_issue(f"validating and rendering ran out of memory (the worker's bound is "
                               f"{limits.memory_bytes >> 20} MiB of address space)")
        else:
            raise RuntimeError(f"revision={revision} worker failed:\n{message[1]}")


def _died(exitcode: int | None, limits: Limits) -> InvalidRevision:
    if exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        return _limit_issue(f"validating and rendering used over {limits.cpu_seconds} s of CPU time")
    return _limit_issue(f"the worker validating and rendering the commit died (exit {exitcode}): "
                        f"most likely out of memory (bound {limits.memory_bytes >> 20} MiB)")


def _limit_issue(message: str) -> InvalidRevision:
    issue = codes.issue("resource-limit", Location("."), message)
    return InvalidRevision(message, (issue,))


# -- the child ------------------------------------------------------------------------------


def _lower(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above the one the daemon itself runs under (systemd's LimitAS=, a
    container's, `prlimit`): raising a hard limit is refused, and would make every commit fail."""
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))


def render_reusing(renderer: Renderer, state: DesiredState, memo: NodeMemo | None,
                   verify: bool, walker: fanout.Walker = fanout.one_by_one,
                   ) -> tuple[Mapping[str, bytes], tuple[str, ...]]:
    """`renderer(state)` with `memo` (None: from scratch); with `verify`, also from scratch, and
    then the paths that differ and the from-scratch files (the memo, DHCP chunks included, is
    dropped: it is wrong). `walker`: how the render loop walks the nodes (the worker's processes
    pass `adapters.renderfork.walk`, which forks; the daemon itself, with its threads, must not).
    The renderer's mapping as it is (a `RenderedFiles` stamps on access: not copied here)."""
    with reuse.using(memo), fanout.using(walker):
        files = renderer(state)
    if memo is None or not verify:
        return files, ()
    full = renderer(state)
    mismatched = tuple(sorted(p for p in full.keys() | files.keys() if full.get(p) != files.get(p)))
    if not mismatched:
        return files, ()  # the same bytes: the memo's mapping, whose entries later commits share
    memo.entries.clear()  # all of it: a wrong DHCP chunk would be reused as surely as a wrong node
    memo.chunks.clear()
    memo.last.clear()
    memo.previous = None  # the generation render.patch would start from is the wrong one
    return full, mismatched


def _code_digest() -> str:
    """A digest of the package's files. A memo holds what this code rendered: kept
    across an upgrade, a fix to rendering or parsing would never reach a node whose inputs did
    not change (it would be served the old code's bytes until they do)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".json")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


CODE = _code_digest()  # once per process: in the forkserver (preloaded), before any commit's child


# The memo file: this line, a header (the code that made it, the stand-in revision, how many nodes
# and DHCP chunks follow), then the nodes and the chunks in pickles of up to MEMO_CHUNK each.
# In pieces: one pickle of the whole memo kept a table of every object written until its end (at
# stop, +20-27 MB over the worker's peak at 20,000 nodes; +1-3 in pieces). A file that does not
# start with the line (the single pickle written before it) is not read: every node is rendered.
# Last, the SHA-256 of everything before it: the memo's bytes are served as they are read, so a
# file changed on disk (a flipped bit) is not used, and whatever its pickles raise is caught.
MEMO_MAGIC = b"netboot-reconcile render-memo 3\n"
MEMO_CHUNK = 1000


class _Hashed:
    """A memo file read or written through SHA-256 (the file's trailer); no `peek` or `readinto`,
    so the unpickler reads exactly what it consumes and all of it is hashed."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return int(self.fh.write(data))

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.fh.read(size)
        self.sha.update(data)
        return data

    def readline(self) -> bytes:
        data: bytes = self.fh.readline()
        self.sha.update(data)
        return data


def _load_memo(path: Path) -> NodeMemo:
    try:
        with open(path, "rb") as raw:
            fh = _Hashed(raw)
            if fh.read(len(MEMO_MAGIC)) != MEMO_MAGIC:
                return NodeMemo(code=CODE)  # another format (an older release's): render every node
            code, sentinel, nodes, chunks = pickle.load(fh)  # noqa: S301 (our own file, in the daemon's state directory)
            if code != CODE:
                return NodeMemo(code=CODE)  # made by other code (an upgrade): render every node
            memo = NodeMemo(sentinel=sentinel, code=code)
            for table, count in ((memo.entries, nodes), (memo.chunks, chunks)):
                read = 0
                while read < count:
                    piece = pickle.load(fh)  # noqa: S301
                    if not isinstance(piece, dict) or not piece:
                        raise ValueError("a memo piece that is not a non-empty dict")
                    table.update(piece)
                    read += len(piece)
            if raw.read() != fh.sha.digest():
                return NodeMemo(code=CODE)  # changed on disk since it was written
    except Exception:  # none yet, torn, changed on disk (any error its pickles raise): render every node
        return NodeMemo(code=CODE)
    return memo


def _save_memo(path: Path, memo: NodeMemo) -> None:
    """Atomically (a crash leaves the old memo or the new one; a torn one is never read), in
    pieces (MEMO_MAGIC). A state directory that refuses it costs the next commit a full render,
    nothing else."""
    tmp = path.with_name(path.name + ".tmp")
    names = memo.storable()
    with contextlib.suppress(OSError):  # entries are keyed by their inputs: an older memo is still right
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as raw:
            fh = _Hashed(raw)
            fh.write(MEMO_MAGIC)
            pickle.dump((memo.code, memo.sentinel, len(names), len(memo.chunks)), fh, pickle.HIGHEST_PROTOCOL)
            for i in range(0, len(names), MEMO_CHUNK):
                piece = {name: _unspilled(memo.keyed(name)) for name in names[i:i + MEMO_CHUNK]}
                pickle.dump(piece, fh, pickle.HIGHEST_PROTOCOL)
            chunks = iter(memo.chunks.items())
            while part := dict(itertools.islice(chunks, MEMO_CHUNK * 3)):
                pickle.dump(part, fh, pickle.HIGHEST_PROTOCOL)
            raw.write(fh.sha.digest())
        os.replace(tmp, path)


def _unspilled(kept: reuse.Kept) -> reuse.Kept:
    """The node's entries as rendered, their bytes read back where the worker spilled them (daemon.spill)."""
    if all(spilled_in(entry) is None for entry in kept.entries.values()):
        return kept
    return kept._replace(entries=unspilled(kept.entries))


def _child(conn: Any, snapshot: Snapshot, renderer: Renderer | None, limits: Limits, site: str | None,
           memo_path: Path | None = None, verify: bool = False) -> None:
    os.nice(limits.nice)
    _lower(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)
    _lower(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5)
    try:
        t0 = time.monotonic()
        with fanout.using(renderfork.walk):  # its boot check on two CPUs (core.bootcheck)
            result = validate(snapshot)
        t1 = time.monotonic()
        state = result.for_site(site)  # InvalidRevision: sent below
        mismatched: tuple[str, ...] = ()
        files = None
        timings: dict[str, float] = {}
        memo = _load_memo(memo_path) if memo_path is not None and renderer is not None else None
        t_loaded = time.monotonic()
        if renderer is not None:
            files, mismatched = render_reusing(renderer, state, memo, verify, renderfork.walk)
        t2 = time.monotonic()
        conn.send(("state", dataclasses.replace(state, nodes=()), result.issues))
        for i in range(0, len(state.nodes), CHUNK_NODES):
            conn.send(("nodes", state.nodes[i:i + CHUNK_NODES]))
        if files is not None:
            items = list(files.items())
            for i in range(0, len(items), CHUNK_FILES):
                conn.send(("files", dict(items[i:i + CHUNK_FILES])))
        if memo is not None and memo_path is not None:  # while the parent takes the files in
            t3 = time.monotonic()
            _save_memo(memo_path, memo)
            timings = {"memo.load": t_loaded - t1, "memo.save": time.monotonic() - t3,
                       "memo.reused": float(memo.hits), "memo.rendered": float(memo.misses)}
        conn.send(("done", {"validate": t1 - t0, "render": t2 - t1, **timings}, files is not None, mismatched))
    except InvalidRevision as exc:
        conn.send(("invalid", str(exc), exc.findings))
    except MemoryError:
        conn.send(("memory",))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
