"""The long-lived worker: one child process validating and rendering commit after commit.

Called by the reconcile steps (daemon.steps, the `validate` step, when `Settings.worker`;
`close` at shutdown). Built on daemon.worker's parts (the forkserver, `Limits`, the memo file,
`render_reusing`); why a child at all is said there. What staying alive buys (issue 25):
- the validation memo (core.docmemo: each file's parse, by its bytes) and the render memo
  (core.render.reuse) stay in the child's memory; the render memo: no pickle of every rendered
  node loaded and saved per commit; it is written to the state directory's `render-memo` every
  `MEMO_SAVE_EVERY` commits and when the child stops, and read when one starts;
- the child keeps the files and nodes it last sent and sends only what changed (changed and
  removed paths, changed nodes, the node order when it changed); `Worker.build` patches the
  previous result (a dict copy plus the updates), so the pipe carries the change, not the site.
  A request names the result it is to be patched onto (`base`): a child that does not hold that
  one (a fresh child) sends everything.
- the other way, the child keeps the snapshot it last built and the parent sends only the files
  that changed (daemon.snapdelta); a fresh child (the first commit, after a crash, a limit, a
  restart) is sent the whole snapshot.
- after a whole result the child sends its nodes' plan digests (daemon.targets, `plan_digests`),
  made while the daemon checks and activates the result; `Built.plans` waits for them.
Limits per commit: RLIMIT_AS for the child's life; RLIMIT_CPU counts the whole life of a process,
so before each commit its soft limit is set to the CPU used so far plus the budget (SIGXCPU past
it); the wall-clock bound kills the child. A child that died, exceeded a limit, failed or ran out
of memory is not reused: the next commit gets a fresh one (and the memo from `render-memo`).
`verify` (--verify-incremental) renders from scratch as well (`Built.mismatched`), and sends the
whole result too: a patched result that differs from it is reported (`Built.patch_mismatched`)
and the whole one is used; the parent sends the whole snapshot beside its changes, and a snapshot
rebuilt from the changes that differs from it is reported likewise ("snapshot: <path>").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import pickle
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler import heap
from reconciler.adapters import renderfork
from reconciler.core import bootpass, places
from reconciler.core.docmemo import ValidateMemo
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState, Issue, Node
from reconciler.core.render import fanout, patch
from reconciler.core.render.files import Copy, Delta, RenderedFiles
from reconciler.core.render.reuse import NodeMemo, spilling
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import gc_paused, validate
from reconciler.daemon import snapdelta, spill, targets, worker
from reconciler.daemon.targets import Change
from reconciler.daemon.worker import CHUNK_FILES, CHUNK_NODES, Limits, Renderer

log = logging.getLogger(__name__)

MEMO_SAVE_EVERY = 20  # commits between writes of `render-memo` (and at stop)
STOP_TIMEOUT = 30.0  # seconds a stopping child has to write its memo
RESTART_EVERY = 500  # commits a child builds before a fresh one replaces it (its caches only grow)
PLANS_CHUNK = 20_000  # plan digests per message (`Worker.plans`)


@dataclass(frozen=True)
class Built:
    issues: tuple[Issue, ...]
    state: DesiredState
    files: Mapping[str, bytes]  # a `RenderedFiles` when the renderer made one
    timings: Mapping[str, float]
    mismatched: tuple[str, ...] = ()  # paths the memo rendered differently from scratch (`verify`)
    patch_mismatched: tuple[str, ...] = ()  # paths (or "state") the patched result got wrong (`verify`)
    pid: int = 0  # of the child that built it
    change: Change | None = None  # what it changed against the result before it, when patched onto that
    # The child's `targets.plan_digests(state, files)` with their stamps, when it makes them (a whole
    # result): waits for them (None: none came).
    plans: Callable[[], tuple[targets.Stamps, list[str | None]] | None] | None = None


@dataclass
class _Whole:
    """A commit's result whole: what the child last sent and the parent last received, the two
    sides agreeing by `token`; the next result is sent and patched as a difference from it."""

    token: int
    files: Mapping[str, bytes]
    nodes: dict[str, Node]
    order: tuple[str, ...]
    listed: tuple[Node, ...] = ()  # the parent's: the nodes in order (its state's)
    index: Mapping[str, int] | None = None  # the parent's: each node's place in them


class Worker:
    """The parent's side: starts the child when there is none, sends commits, patches results."""

    def __init__(self, renderer: Renderer, limits: Limits | None = None, site: str | None = None, *,
                 memo: Path | None = None, reuse: bool = True, verify: bool = False) -> None:
        limits = limits or Limits()
        self.renderer, self.limits, self.site, self.memo, self.verify = renderer, limits, site, memo, verify
        self.reuse = reuse  # render with the memo (core.render.reuse); `memo`: the file it is kept in
        self._proc: Any = None
        self._conn: Any = None
        self._last: _Whole | None = None
        self._held: Snapshot | None = None  # the snapshot the running child holds (sent last)
        self._tokens = itertools.count(1)
        self._sent_at = 0.0
        self._sent_files = 0  # files (and removals) of the snapshot the last request carried
        self._handled = 0  # commits the running child built: what it holds grew with each
        self._grown = False  # the last failure was memory or death: the child's size may be to blame
        self._outgrown = False  # the running child's spill files are mostly dead bytes (`spill.Spill.outgrown`)
        self._starting: threading.Thread | None = None  # a `prestart` under way
        self._plans: int | None = None  # the token whose plan digests the child sends after its result
        self._ahead: Copy | None = None  # the last result's entries copied ahead (`copy_ahead`)
        # Given the dhcpd.conf of a whole result as soon as it comes, ahead of the rest (the daemon's
        # peer check starts on it: daemon.steps).
        self.on_peer: Callable[[bytes], None] | None = None

    def prestart(self) -> None:
        """Start the child now, on a thread (the daemon, before its first commit): the forkserver's
        interpreter and imports (~1.3 s) then overlap that commit's snapshot instead of following
        it. A start that fails here is tried again by `build`."""
        if self._proc is None and self._starting is None:
            self._starting = threading.Thread(target=self._start_early, name="netboot-worker-start", daemon=True)
            self._starting.start()

    def _start_early(self) -> None:
        try:
            self._start()
        except Exception as exc:
            log.warning("starting the worker process ahead of the first commit failed (%s): tried again then", exc)
            self._discard()

    def _started(self) -> None:
        """Wait for a `prestart` under way (every use of the child does, first)."""
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.join()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def build(self, snapshot: Snapshot) -> Built:
        """Validate and render `snapshot`. InvalidRevision when it is invalid, has no such site,
        cannot be rendered, or exceeds a limit; RuntimeError on a bug. A child that built earlier
        commits holds what they left (memos, the templates' lru caches): when it runs out of
        memory or dies, the commit is tried once more in a fresh child before it is refused."""
        self._started()
        if self._proc is not None and (self._handled >= RESTART_EVERY or self._outgrown):
            self.close()  # its caches only grow: a fresh child (the memo goes through its file)
        handled = self._handled if self._proc is not None else 0
        try:
            return self._build_once(snapshot)
        except InvalidRevision:
            if not (self._grown and handled):
                raise
            log.warning("revision=%s the worker process that had built %d commit(s) ran out of memory or died: "
                        "trying it once in a fresh one", snapshot.revision, handled)
        return self._build_once(snapshot)

    def _build_once(self, snapshot: Snapshot) -> Built:
        self._grown = False
        if self._proc is None or not self._proc.is_alive():
            self._start()
        token = next(self._tokens)
        t0 = time.monotonic()
        try:
            self._send(snapshot, token)
        except OSError:  # it died while idle (killed by hand, the OOM killer): not this commit's doing
            log.warning("worker process %s is gone: starting another", self.pid)
            self._start()
            self._send(snapshot, token)
        keep = False
        try:
            # The collector paused while the results come in (a first one is every node and file:
            # 100,000 nodes unpickled here), as the worker pauses it while it makes them: a pass
            # walks this process's whole heap holding the GIL the servers' threads need.
            with gc_paused():
                built = self._receive(token, snapshot.revision)
            keep = True
            self._handled += 1
            # Its spill files are mostly bytes no memo entry reads any more (daemon.spill): a fresh
            # child, whose files hold only what its memo reads, before the next commit.
            self._outgrown = bool(built.timings.get("spill.replace"))
            return dataclasses.replace(built, timings={**built.timings, "request": self._sent_at - t0,
                                                       "snapshot.sent": float(self._sent_files)})
        except InvalidRevision as exc:
            keep = not any(i.code == "resource-limit" for i in exc.findings)
            raise
        except (BrokenPipeError, EOFError, ConnectionError):
            self._proc.join(5)
            self._grown = self._proc.exitcode != -signal.SIGXCPU
            raise worker._died(self._proc.exitcode, self.limits) from None
        finally:
            if not keep:
                self._discard()

    def _send(self, snapshot: Snapshot, token: int) -> None:
        if self._plans is not None:  # never taken: read first, or both sides could block writing
            self.plans(self._plans)
            if self._conn is None:
                raise OSError("the worker process failed to send its plan digests")
        base = self._last.token if self._last is not None else 0  # 0: send everything
        held = self._held
        delta = snapdelta.between(held, snapshot) if held is not None else None
        whole = snapshot if delta is None or self.verify else None
        self._held = None  # until it is sent: a send that fails leaves the child's copy unknown
        self._conn.send(("build", delta, whole, base, token))
        self._held = snapshot
        self._sent_at = time.monotonic()
        self._sent_files = len(delta.changed) + len(delta.removed) if delta is not None else len(snapshot.files)

    def copy_ahead(self) -> None:
        """Copy the last result's entries now, for the next commit's patch to fill (the daemon's
        after-serving thread calls it, off the commit's path: 10,000 nodes, ~2.8 ms of CPU that
        the next commit otherwise spends beside its child's work on a CPU the two share). Any
        thread; a copy of entries that are no longer the last result's is not used."""
        last = self._last.files if self._last is not None else None
        if isinstance(last, RenderedFiles) and (self._ahead is None or self._ahead.of is not last.entries):
            self._ahead = last.copy_entries()

    def close(self) -> None:
        """Stop the child (it writes its memo first, within STOP_TIMEOUT)."""
        self._started()
        if self._proc is None:
            return
        if self._plans is not None:
            self.plans(self._plans, STOP_TIMEOUT)
            if self._proc is None:
                return
        pid = self._proc.pid
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
            self._proc.join(STOP_TIMEOUT)
        if self._proc.is_alive():
            log.warning("worker process %d did not stop within %.0f s (writing its render memo): killed; the next "
                        "start renders what the memo lacks", pid, STOP_TIMEOUT)
            self._proc.kill()
            self._proc.join(5)
            if self._proc.is_alive():
                log.warning("worker process %d still there 5 s after it was killed: not waiting for it", pid)
        self._discard()

    def _start(self) -> None:
        self._discard()
        ctx = worker._mp()
        self._conn, child_conn = ctx.Pipe(duplex=True)
        args = (child_conn, self.renderer, self.limits, self.site, self.memo, self.reuse, self.verify)
        self._proc = ctx.Process(target=_serve, args=args, name="netboot-worker", daemon=True)
        self._proc.start()
        child_conn.close()
        self._last = self._held = None
        log.info("worker process %d started", self._proc.pid)

    def _discard(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = self._last = self._held = self._plans = None
        self._handled = 0
        self._outgrown = False

    def plans(self, token: int, timeout: float | None = None) -> tuple[targets.Stamps, list[str | None]] | None:
        """The plan digests the child sends after result `token` (`_send_plans`) and their stamps;
        None when they are not to come (another result's, or none), or the child failed to send
        them (it is then replaced at the next build)."""
        if self._plans != token or self._conn is None:
            return None
        self._plans = None
        conn = self._conn
        deadline = time.monotonic() + (self.limits.wall_seconds if timeout is None else timeout)
        digests: list[str | None] = []
        try:
            while conn.poll(max(0.0, deadline - time.monotonic())):
                message = conn.recv()
                if message[0] == "plans":
                    digests.extend(message[1])
                elif message[0] == "plans-done":
                    return None if message[1] is None else (message[1], digests)
                else:
                    break
        except (OSError, EOFError):
            pass
        log.warning("worker process %s did not send its plan digests: starting another", self.pid)
        self._discard()
        return None

    def _receive(self, token: int, revision: str) -> Built:
        deadline = time.monotonic() + self.limits.wall_seconds
        conn = self._conn
        head: Any = None
        delta: tuple[Any, ...] | None = None  # revision, sentinel, secret, full: files came as a Delta
        nodes: dict[str, Node] = {}
        files: dict[str, bytes] = {}
        removed: list[str] = []
        whole_nodes: list[Node] = []
        whole_files: dict[str, bytes] = {}
        # The last result's entries copied ahead (`copy_ahead`), or now while the child works: the
        # patch fills the copy instead of copying them once the result is in.
        last = self._last.files if self._last is not None else None
        copy, self._ahead = self._ahead, None
        if copy is None or copy.of is not getattr(last, "entries", None):
            copy = last.copy_entries() if isinstance(last, RenderedFiles) else None
        shared = _Shapes().shared  # for this result only: a site whose nodes share nothing keeps no table
        while True:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise worker._limit_issue(f"validating and rendering took over {self.limits.wall_seconds:.0f} s "
                                          f"(wall clock)")
            message = conn.recv()
            kind = message[0]
            if kind == "peer":
                if self.on_peer is not None:
                    self.on_peer(message[1])
            elif kind == "state":
                head = message[1:]  # state without nodes, issues, patched onto `base`?, the node order or None
            elif kind == "nodes":
                nodes.update((n.name, shared(n)) for n in message[1])
            elif kind == "delta":
                delta = message[1:]
            elif kind == "files":
                files.update(message[1])
            elif kind == "removed":
                removed.extend(message[1])
            elif kind == "whole-nodes":
                whole_nodes.extend(message[1])
            elif kind == "whole-files":
                whole_files.update(message[1])
            elif kind == "done":
                assert head is not None
                t_patch = time.monotonic()
                patched = self._patch_files(head[2], delta, files, removed, copy)
                built = self._assemble(token, head, nodes, patched, (*files, *removed), message[1], message[2],
                                       (whole_nodes, whole_files) if self.verify else None)
                wrong = tuple(f"snapshot: {p}" for p in message[3])
                follow = len(message) > 4 and message[4]  # its plan digests follow (`_send_plans`)
                self._plans = token if follow else None
                return dataclasses.replace(built, timings={**built.timings, "patch": time.monotonic() - t_patch},
                                           patch_mismatched=(*wrong, *built.patch_mismatched),
                                           plans=functools.partial(self.plans, token) if follow else None)
            elif kind == "invalid":
                raise InvalidRevision(message[1], message[2])
            elif kind == "memory":
                self._grown = True
                raise worker._limit_issue(f"validating and rendering ran out of memory (the worker's bound is "
                                          f"{self.limits.memory_bytes >> 20} MiB of address space)")
            else:
                raise RuntimeError(f"revision={revision} worker failed:\n{message[1]}")

    def _patch_files(self, patched: bool, delta: tuple[Any, ...] | None, files: dict[str, Any],
                     removed: list[str], copy: Copy | None = None) -> Mapping[str, bytes]:
        """The new files: the last ones (a dict copy) with the changes; all of them when not `patched`."""
        before = self._last.files if patched and self._last is not None else None
        if delta is not None:
            revision, sentinel, secret, full = delta
            if full:  # the entries just received, not a copy of them (100,000 nodes: a 30 MB dict)
                return RenderedFiles(files, revision, sentinel, secret)
            prior = before if isinstance(before, RenderedFiles) else None
            return Delta(revision, sentinel, secret, files, tuple(removed), full).apply(prior, copy)
        if before is None:
            return files
        out = dict(before)
        out.update(files)
        for path in removed:
            del out[path]
        return out

    def _assemble(self, token: int, head: Any, nodes: dict[str, Node], all_files: Mapping[str, bytes],
                  paths: tuple[str, ...], timings: dict[str, float], mismatched: tuple[str, ...],
                  whole: tuple[list[Node], dict[str, bytes]] | None) -> Built:
        state, issues, patched, order = head
        last = self._last
        change = None
        if patched and last is not None:
            was = {name: last.nodes[name] for name in nodes if name in last.nodes}
            change = Change(last.files, nodes, was, frozenset(paths), order is None)
        sent = len(paths)
        index: Mapping[str, int] | None = None
        if patched and order is None and last is not None and last.index is not None \
                and nodes.keys() <= last.index.keys():
            # The same nodes in the same order: the last ones with the changed put in their places
            # (the last whole is replaced by this one, so its dict is updated in place).
            listed, index, order = list(last.listed), last.index, last.order
            for name, node in nodes.items():
                listed[index[name]] = node
            by_name = last.nodes
            by_name.update(nodes)
            nodes_in_order = tuple(listed)
        else:
            if patched:
                assert last is not None
                by_name = {**last.nodes, **nodes}
                order = last.order if order is None else tuple(order)
            else:
                by_name, order = nodes, tuple(order)
            nodes_in_order = tuple(by_name[name] for name in order)
            by_name = {name: by_name[name] for name in order}
        timings = {**timings, "files.sent": float(sent), "nodes.sent": float(len(nodes))}
        state = dataclasses.replace(state, nodes=nodes_in_order)
        wrong: tuple[str, ...] = ()
        if whole is not None:
            full_state = dataclasses.replace(state, nodes=tuple(whole[0]))
            wrong = tuple(sorted(p for p in whole[1].keys() | all_files.keys()
                                 if whole[1].get(p) != all_files.get(p)))
            if len(whole[0]) != len(state.nodes) or not all(map(_same, whole[0], state.nodes)) \
                    or dataclasses.replace(state, nodes=()) != dataclasses.replace(full_state, nodes=()):
                wrong = ("state", *wrong)
            if wrong:
                state, all_files, change = full_state, whole[1], None
        # After a wrong patch the next result comes whole (base 0): nothing is patched onto this one.
        if index is None:
            index = {name: i for i, name in enumerate(order)}
        self._last = None if wrong else _Whole(token, all_files, by_name, order, state.nodes, index)
        return Built(issues, state, all_files, timings, mismatched, wrong, self._proc.pid, change)


class _Shapes:
    """One node of a result per value of its `labels` and `metadata` (`shared`): unpickled, each
    node has dicts of its own, where most sites repeat a few (racks, roles, the same SSH keys).
    Issue 25: the daemon holds every node; at 20,000 nodes of bench/render_scale's repository
    ~450 bytes a node. Values are matched by their pickles, as `_same` matches nodes: 1, 1.0 and
    True (equal in Python, rendered differently), 0.0 and -0.0, a YAML anchor's shared list and
    two equal ones are never taken for one another (~0.5 us a node). Nobody changes them (a
    frozen Node's Mappings), so sharing them is not seen."""

    def __init__(self) -> None:
        self._labels: dict[bytes, Mapping[str, str]] = {}
        self._metadata: dict[bytes, Mapping[str, Any]] = {}

    def shared(self, node: Node) -> Node:
        labels, metadata = node.labels, node.metadata
        found = self._labels.setdefault(pickle.dumps(labels, pickle.HIGHEST_PROTOCOL), labels)
        if found is not labels:
            object.__setattr__(node, "labels", found)  # the frozen dataclass's own way in
        found_meta = self._metadata.setdefault(pickle.dumps(metadata, pickle.HIGHEST_PROTOCOL), metadata)
        if found_meta is not metadata:
            object.__setattr__(node, "metadata", found_meta)
        return node


# -- the child ------------------------------------------------------------------------------


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _budget(seconds: int) -> None:
    """This commit may use `seconds` of CPU from now: the soft RLIMIT_CPU past what is used."""
    soft = int(_cpu_used()) + 1 + seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve(conn: Any, renderer: Renderer, limits: Limits, site: str | None, memo_path: Path | None,
           reuse: bool, verify: bool) -> None:
    os.nice(limits.nice)
    worker._lower(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)
    memo = None
    parsed = ValidateMemo() if reuse else None  # each file's parse, in memory only (core.docmemo)
    if reuse:
        memo = worker._load_memo(memo_path) if memo_path is not None else NodeMemo(code=worker.CODE)
    # The memo's bytes on disk (daemon.spill); not with `verify`, which compares every file.
    spilled = spill.Spill(memo_path.parent if memo_path is not None else None, limits.spill_slack) \
        if reuse and not verify else None
    sent: _Whole | None = None
    held: Snapshot | None = None  # the snapshot of the last request: the next one comes as changes to it
    commits = 0
    try:
        while True:
            try:
                raw = conn.recv_bytes()
            except EOFError:
                break  # the daemon is gone
            t_request = time.monotonic()
            request = pickle.loads(raw)  # noqa: S301 (from the daemon that started this process)
            del raw  # a first commit's whole snapshot pickled: not held through its build (the worker's peak)
            unpickled = time.monotonic() - t_request
            if request[0] == "stop":
                break
            _, delta, whole, base, token = request
            _budget(limits.cpu_seconds)
            try:
                before = held
                held, wrong = _snapshot(held, delta, whole)
                if parsed is not None:  # what changed, for the parse (core.docmemo: `since`)
                    parsed.since = snapdelta.since(before, held, delta)
                # The collector paused for the whole commit, sending included (validate and render
                # pause it themselves, but the objects they made would be walked at the first
                # pass after: ~0.7 s at 100,000 nodes), and the heap frozen once the result is
                # sent, beside the daemon's activation (reconciler.heap).
                with gc_paused():
                    sent = _build(conn, held, renderer, site, (memo, parsed), verify,
                                  sent if sent and sent.token == base else None, token, unpickled, wrong, spilled)
                    if parsed is not None:  # the result is sent: what the next commit's check needs
                        _build_pending(parsed)
                    if memo is not None and isinstance(memo.previous, patch.Last):
                        memo.previous.copy_ahead()  # and the entries its render's patch fills
                heap.settle()
            except InvalidRevision as exc:
                conn.send(("invalid", str(exc), exc.findings))
                continue
            except MemoryError:
                conn.send(("memory",))
                return  # not reused: nothing is written from a child in that state
            except BaseException:
                conn.send(("error", traceback.format_exc()))
                return
            commits += 1
            if memo is not None and memo_path is not None and commits % MEMO_SAVE_EVERY == 0:
                worker._save_memo(memo_path, memo)
    finally:
        conn.close()
    if memo is not None and memo_path is not None and commits:
        worker._save_memo(memo_path, memo)
    if spilled is not None:
        spilled.close()


def _build_pending(parsed: ValidateMemo) -> None:
    """The boot check's index of the pass just made (core.bootpass), once the result is sent: off
    the commit's path. A failure to make it costs the next commit a pass over every node."""
    try:
        bootpass.build_pending(parsed.boot.values())
    except Exception:
        log.exception("the boot check's index could not be made (the next commit checks every node)")
        for memo in parsed.boot.values():
            memo.index = None


def _snapshot(held: Snapshot | None, delta: snapdelta.SnapshotDelta | None,
              whole: Snapshot | None) -> tuple[Snapshot, tuple[str, ...]]:
    """The request's snapshot: `held` patched with `delta`, or `whole`; with both (`verify`),
    `whole`, and what the patched one got wrong."""
    if delta is None:
        assert whole is not None
        return whole, ()
    if held is None:  # the parent sends changes only to a child it sent a snapshot to
        raise RuntimeError(f"a snapshot delta against {delta.base} came to a worker that holds none")
    patched = snapdelta.apply(held, delta)
    if whole is None:
        return patched, ()
    return whole, snapdelta.differences(patched, whole)


def _build(conn: Any, snapshot: Snapshot, renderer: Renderer, site: str | None,
           memos: tuple[NodeMemo | None, ValidateMemo | None], verify: bool, base: _Whole | None, token: int,
           unpickled: float = 0.0, wrong: tuple[str, ...] = (), spilled: spill.Spill | None = None) -> _Whole:
    """One commit: validate and render with the memos, send what differs from `base` (all without).
    `spilled`: where the render memo's bytes go as nodes are rendered (daemon.spill)."""
    memo, parsed = memos
    t0 = time.monotonic()
    hits = parsed.hits if parsed is not None else 0
    validate_forked, indexed = renderfork.counts["forked"], bootpass.counts["built"]
    with fanout.using(renderfork.walk):  # a first validation's boot check on two CPUs (core.bootcheck)
        result = validate(snapshot, memo=parsed)
    validate_forked, indexed = renderfork.counts["forked"] - validate_forked, bootpass.counts["built"] - indexed
    reparsed: tuple[str, ...] = ()
    if verify and parsed is not None:  # the memo's validation against one from scratch
        scratch = validate(snapshot)
        if (scratch.state, scratch.issues) != (result.state, result.issues):
            reparsed, result = ("validation (the parse memo's state or findings)",), scratch
            parsed.keep_only(())
    t1 = time.monotonic()
    state = result.for_site(site)  # InvalidRevision: sent by the caller
    forked = renderfork.counts["forked"]
    with spilling(spilled.entries if spilled is not None else None):
        files, mismatched = worker.render_reusing(renderer, state, memo, verify, renderfork.walk)
    t2 = time.monotonic()
    nodes, order, changed_nodes = _changed_nodes(base, state.nodes)
    order_sent = None if base is not None and base.order == order else order
    if base is None and "dhcpd.conf" in files:  # first: the daemon's `dhcpd -t` starts on it (daemon.steps)
        conn.send(("peer", files["dhcpd.conf"]))
    conn.send(("state", dataclasses.replace(state, nodes=()), result.issues, base is not None, order_sent))
    for chunk in _chunks(changed_nodes, CHUNK_NODES):
        conn.send(("nodes", chunk))
    before = base.files if base is not None else None
    if isinstance(files, RenderedFiles) and (before is None or isinstance(before, RenderedFiles)):
        # Entries as stored (core.render.files): a node the memo kept is the same object as last
        # time, whatever the revision; only changed nodes' entries cross.
        delta = files.delta_from(before)  # the render's patch named what may differ (`RenderedFiles.since`)
        files.forget_since()  # or this result would keep the last one's entries alive until the next
        conn.send(("delta", delta.revision, delta.sentinel, delta.secret, delta.full))
        changed: Iterable[tuple[str, Any]] = delta.entries.items()
        removed: list[str] = list(delta.removed)
    else:
        changed = [(p, d) for p, d in files.items() if before is None or before.get(p) != d]
        removed = [p for p in before if p not in files] if before is not None else []
    for chunk in _chunks(changed, CHUNK_FILES):
        conn.send(("files", spilled.resolved(chunk) if spilled is not None else dict(chunk)))
    for chunk in _chunks(removed, CHUNK_FILES):
        conn.send(("removed", chunk))
    if verify:
        for chunk in _chunks(list(state.nodes), CHUNK_NODES):
            conn.send(("whole-nodes", chunk))
        for chunk in _chunks(list(files.items()), CHUNK_FILES):  # served bytes (stamped)
            conn.send(("whole-files", dict(chunk)))
    timings = {"unpickle": unpickled, "validate": t1 - t0, "render": t2 - t1, "send": time.monotonic() - t2,
               "render.forked": float(renderfork.counts["forked"] - forked), "validate.forked": float(validate_forked),
               "validate.index.built": float(indexed)}  # boot check indexes made on the commit's path (core.bootpass)
    if timings["render.forked"]:
        timings["render.child_rss_mb"] = renderfork.counts["child_maxrss_kb"] / 1024
    if parsed is not None:
        timings["validate.memo.reused"] = float(parsed.hits - hits)
    if memo is not None:
        timings.update({"memo.reused": float(memo.hits), "memo.rendered": float(memo.misses)})
        if spilled is not None and spilled.outgrown(memo):
            timings["spill.replace"] = 1.0  # the parent replaces this child before the next commit
    # A whole result (a fresh child): its nodes' plan digests follow, made here beside the daemon's
    # activation instead of on its loop thread after it (daemon.targets). Not while the result is
    # sent: that send kept this process busy (20,000 nodes: made between its chunks, it took 0.3 s
    # longer, about what they cost).
    conn.send(("done", timings, (*reparsed, *mismatched), wrong, base is None))
    if base is None:
        _send_plans(conn, state, files)
    return _Whole(token, files, nodes, order, state.nodes)


def _send_plans(conn: Any, state: DesiredState, files: Mapping[str, bytes]) -> None:
    """The plan digests of `state`'s nodes in `files` (`targets.plan_digests`), then their stamps
    (None: there are none, and the daemon computes them)."""
    try:
        digests = targets.plan_digests(state, files)
    except Exception:
        log.exception("the plan digests could not be made here (the daemon makes them)")
        conn.send(("plans-done", None))
        return
    for chunk in _chunks(digests, PLANS_CHUNK):
        conn.send(("plans", chunk))
    conn.send(("plans-done", targets.stamps_of(state, files)))


def _changed_nodes(base: _Whole | None,
                   listed: tuple[Node, ...]) -> tuple[dict[str, Node], tuple[str, ...], list[Node]]:
    """The nodes by name, their order, and those to send against `base`. The validation memo hands
    back unchanged nodes as the same objects: `is` before comparing fields, and when the names are
    the same in the same places, only the places holding another object are looked at."""
    if base is not None and len(base.listed) == len(listed):
        before = base.listed
        moved = places.moved(before, listed)  # the validation's boot check compared these two already
        if all(before[i].name == listed[i].name for i in moved):
            nodes = base.nodes  # in place: `base` is replaced by this result (a failure after this ends the child)
            nodes.update((listed[i].name, listed[i]) for i in moved)
            return nodes, base.order, [listed[i] for i in moved if not _same(before[i], listed[i])]
    nodes = {n.name: n for n in listed}
    changed = list(listed) if base is None else [
        n for n in listed if (was := base.nodes.get(n.name)) is None or not _same(was, n)]
    return nodes, tuple(nodes), changed


def _same(a: Node, b: Node) -> bool:
    """The same node as rendered: by pickle bytes, as the render key is. Node equality is the
    dataclass's, under which metadata 1, true and 1.0 are equal; the files rendered are not."""
    return a is b or pickle.dumps(a, pickle.HIGHEST_PROTOCOL) == pickle.dumps(b, pickle.HIGHEST_PROTOCOL)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` taken as `items` come: a first send is every file (766,680 at 100,000
    nodes), not copied into one list first (~50 MB more at the worker's peak)."""
    rest = iter(items)
    while chunk := list(itertools.islice(rest, size)):
        yield chunk
