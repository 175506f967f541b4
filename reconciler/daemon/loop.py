"""The daemon: the reconcile loop, its triggers and backoff; the parts beside it do the rest.

Called by `commands.run` (`Daemon(settings, ...).open()`, servers added, `.run()`); tests drive
`reconcile_once` directly. The parts:
- `steps.Reconciler`: the reconcile steps and their runner (one `Outcome` per attempt), with
  its worker process (`resident.Worker`) and the writer thread that puts a served generation on
  disk after it (`persist.Persister`: old generations are collected there, after the write);
- `status.StatusBook`: what `/status` says, changed by pure transitions (`after(outcome)`);
- `supervisor.Supervisor`: the server slots (start, stop, what they say);
- `loader.GenerationLoader`: `current` from disk at start, stored generations for the holder.
Here: the loop, the triggers (the poll timer `--interval`, `trigger()` from the push webhook,
the watcher on a local repository, SIGHUP), backoff after a failure, and what follows an
outcome (the record in the results store, metrics, the log, the rollout, collection of old
generations and unused assets); under `run` the supervisor's kick and heap settling that follow
an activation run on their own thread (`afterserve.AfterServing`), so a commit pushed meanwhile
does not wait for them.
SIGTERM/SIGINT stop the loop, then the servers (in-flight transfers get `shutdown_timeout`),
and `run()` returns 0.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sqlite3
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler import heap
from reconciler.adapters.artifacts import ArtifactStore
from reconciler.adapters.gitsource import Source, SourceProblem
from reconciler.adapters.store import RESULTS_FILE, ReconcileRecord, ResultsStore, StoreBehind
from reconciler.adapters.watcher import Watcher
from reconciler.core import findings, sites, wiring
from reconciler.core.errors import Reason
from reconciler.core.model import Node
from reconciler.core.outcomes import Target
from reconciler.core.validate import gc_paused
from reconciler.daemon.afterserve import AfterServing
from reconciler.daemon.loader import REPORT_KEY_META, SITE_META, GenerationLoader, Renderer, report_key
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.outcome import Outcome, Result
from reconciler.daemon.rollouts import RolloutRunner
from reconciler.daemon.signals import SignalRelay
from reconciler.daemon.statelock import StateLock
from reconciler.daemon.status import StatusBook
from reconciler.daemon.steps import Reconciler
from reconciler.daemon.supervisor import ServerSlot, ServerUpCollector, Supervisor
from reconciler.daemon.targets import TargetMemo
from reconciler.generation import Generation, GenerationHolder
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler.adapters.pglock import SiteDriver

log = logging.getLogger(__name__)

HISTORY = 20
# Seconds a stopping daemon waits for the served generation to be written (past it, the next
# start serves the previous `current` and reconciles the head again).
PERSIST_AT_STOP = 30.0


class StoreUpCollector(Collector):
    """`netboot_store_up{store="results"|"leases"}` 1/0: whether the store takes writes now (an
    unreachable PostgreSQL: 0, while the instance serves from memory), read at scrape."""

    def __init__(self, faults: Callable[[], list[tuple[str, str | None]]]) -> None:
        self.faults = faults

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("netboot_store_up", "1 while the store takes writes, 0 while it is unreachable",
                                   labels=["store"])
        for name, problem in self.faults():
            family.add_metric([name], 1.0 if problem is None else 0.0)
        yield family


class Daemon:
    """One source, one state directory, one served generation; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        renderer: Renderer,
        source: Source | None = None,
        holder: GenerationHolder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.holder = holder or GenerationHolder()
        self.clock = clock
        self.metrics = Metrics()
        self.artifacts = ArtifactStore(settings.state_dir)
        self._state_lock = StateLock(settings.state_dir)
        self._unwritable: OSError | None = None  # why the state directory refuses writes
        meta = {REPORT_KEY_META: report_key(settings.report_secret)}
        if settings.site is not None:
            meta[SITE_META] = settings.site.encode()
        self.loader = GenerationLoader(self.artifacts, renderer, meta, in_worker=settings.worker, site=settings.site)
        self.holder.set_loader(self.loader.load)
        self.reconciler = Reconciler(settings, renderer=renderer, artifacts=self.artifacts, holder=self.holder,
                                     meta=meta, source=source, on_source_opened=self.start_watcher,
                                     on_desired=self._desiring, on_assets=self._fetching_assets,
                                     unwritable=self._refusal, on_persisted=self._persisted)
        self.supervisor = Supervisor()
        self.metrics.registry.register(ServerUpCollector(self.supervisor))
        self.metrics.registry.register(StoreUpCollector(self._store_faults))
        self.store: ResultsStore | None = None
        self.rollouts: RolloutRunner | None = None  # made with the store
        self.rollout_driver: SiteDriver | None = None  # with a PostgreSQL store: who drives the site's rollouts
        self._targets: tuple[Target, ...] | None = None  # what the served generation declares
        self._target_memo = TargetMemo()  # its plan digests, reused for unchanged nodes (daemon.targets)
        self._after: AfterServing | None = None  # `run` makes it: what follows serving, on its own thread
        self._watcher: Watcher | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._triggers: deque[str] = deque(maxlen=16)
        self._triggered_at: float | None = None  # monotonic time of the first trigger not yet taken
        self._lock = threading.Lock()  # guards the status book
        self._book = StatusBook()
        self._last_from_store: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        self._store_problems: list[tuple[str, Callable[[], str | None]]] = []  # other stores (the shared leases)
        self._activations: list[str] = []  # revisions activated here, oldest first (`_unwritten_kept`)
        self._activations_lock = threading.Lock()  # appended on the loop's thread, read on the writer's

    @property
    def source(self) -> Source | None:
        return self.reconciler.source

    @property
    def servers(self) -> dict[str, ServerSlot]:
        return self.supervisor.slots

    @property
    def book(self) -> StatusBook:
        with self._lock:
            return self._book

    def _note(self, change: Callable[[StatusBook], StatusBook]) -> StatusBook:
        with self._lock:
            self._book = change(self._book)
            return self._book

    def _probe_store(self) -> None:
        """Can the state directory be written? (a file made and removed; at open and before
        each attempt, so a remount read-write is noticed). Logged once per change."""
        state_dir = self.settings.state_dir
        try:
            fd, name = tempfile.mkstemp(prefix=".probe-", dir=state_dir)
        except OSError as exc:
            if self._unwritable is None:
                log.error("state directory %s is not writable (%s): serving current read-only, reports "
                          "answer 503, new commits are not applied until it is", state_dir, exc.strerror or exc)
            self._unwritable = exc
            return
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
        if self._unwritable is not None:
            log.info("state directory %s is writable again", state_dir)
        self._unwritable = None

    def _refusal(self) -> str | None:
        """Why the state directory refuses writes (the probe's error), or None."""
        exc = self._unwritable
        return None if exc is None else str(exc.strerror or exc)

    def store_problem(self) -> str | None:
        """Why results cannot be stored now (reports answer 503 with it), or None."""
        exc = self._unwritable
        if exc is None:
            return None
        return (f"state directory {self.settings.state_dir} is not writable ({exc.strerror or exc}): "
                "serving the current generation read-only; reports are not accepted")

    def _desiring(self, revision: str) -> None:
        self._note(lambda book: book.desiring(revision))

    def _fetching_assets(self, progress: Mapping[str, Any] | None) -> None:
        self._note(lambda book: book.assets(progress))

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the state directory (StateDirLocked: another daemon has it), prepare it, open the
        store, serve `current` from disk at once."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_lock.acquire()
        try:
            self._open()
        except BaseException:
            self._state_lock.release()
            raise

    def _open(self) -> None:
        self._probe_store()
        try:
            self.artifacts.prepare()
        except OSError as exc:
            if self._unwritable is None:
                raise
            log.debug("preparing a read-only state directory: %s", exc)
        settings = self.settings
        if settings.store is not None:  # PostgreSQL: unreachable at start is a start-up error (OSError)
            self.store = ResultsStore(settings.store, instance=settings.instance, site=settings.site or "")
        else:
            self._open_sqlite_store()
        assert self.store is not None
        # Instances of one site sharing the store: one runs its rollouts, one that can power when
        # any of them can (adapters.pglock).
        if settings.store is not None:
            from reconciler.adapters.pglock import SiteDriver  # psycopg: not for a store on SQLite

            self.rollout_driver = SiteDriver(settings.store, settings.site or "", settings.instance,
                                             may_power=settings.bmc_credentials is not None)
        self.rollouts = RolloutRunner(self.store, nodes=self._serving_nodes, credentials=self.settings.bmc_credentials,
                                      boot_timeout=self.settings.boot_timeout, clock=self.clock,
                                      driver=self.rollout_driver)
        self.rollouts.start()
        self._load_current()
        if self.source is None:
            try:
                self.reconciler.open_source()
            except SourceProblem as exc:
                if self.holder.current() is None:
                    raise
                # A repository on a volume mounted later, a path moved: serve what we have; the
                # fetch step opens it again, retried with backoff.
                log.error("cannot open %s (%s): serving the current generation, retrying", self.settings.repo, exc)

    def _open_sqlite_store(self) -> None:
        try:
            self.store = ResultsStore(self.settings.state_dir / RESULTS_FILE, instance=self.settings.instance,
                                      site=self.settings.site or "")
        except (sqlite3.Error, OSError) as exc:
            if self._unwritable is None:
                raise
            # History and boot events of this run stay in memory; reports are refused (503).
            log.warning("results store %s cannot be opened (%s): keeping this run's results in memory",
                        self.settings.state_dir / RESULTS_FILE, exc)
            self.store = ResultsStore(":memory:", instance=self.settings.instance, site=self.settings.site or "")

    def _load_current(self) -> None:
        """Serve `current` from disk (rendered again first when its report secret is not ours)."""
        loaded = self.loader.load_current()
        if loaded is None:
            return
        self.reconciler.previous = loaded.stored
        if self.reconciler.persister is not None:
            self.reconciler.persister.set_persisted(loaded.stored.revision)
        self.holder.swap(loaded.generation)
        heap.settle()
        self._served(loaded.generation)
        self._note(lambda book: book.loaded(loaded.stored.revision))
        log.info("revision=%s serving the current generation from disk (%d files)", loaded.stored.revision,
                 len(loaded.stored.files))

    def _serving_nodes(self) -> dict[str, Node]:
        current = self.holder.current()
        return {n.name: n for n in current.state.nodes} if current is not None else {}

    def add_server(self, name: str, server: Any, *, fatal: bool = False) -> ServerSlot:
        """Supervise `server` (None: turned off) under `name` and start it; a failed start is
        retried with backoff, or raised with `fatal`."""
        return self.supervisor.add(name, server, fatal=fatal)

    def start_watcher(self) -> None:
        source = self.source
        if not self.settings.watch or source is None or source.local is None or self._watcher is not None:
            return
        git_dir = (source.local / "HEAD").exists()
        self._watcher = Watcher(source.local, lambda: self.trigger("inotify"), git_dir=git_dir)
        self._watcher.start()

    def trigger(self, reason: str) -> None:
        """Ask for a reconcile now (webhook, inotify, SIGHUP); coalesces with a pending one."""
        if self._triggered_at is None:
            self._triggered_at = time.monotonic()
        self._triggers.append(reason)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, ready: Callable[[], None] | None = None, first: Callable[[], None] | None = None) -> int:
        """Reconcile until stopped; the caller has opened the daemon and started its servers.

        `ready` is called once everything listens (before the first reconcile: `current` from
        disk is already served), `first` after the first reconcile attempt.
        """
        if self.reconciler.worker is not None:
            self.reconciler.worker.prestart()  # booting beside the first commit's snapshot
        self.start_watcher()
        if self._after is None:
            self._after = AfterServing()
        if ready is not None:
            ready()
        trigger, waited = "start", 0.0
        while not self._stopping.is_set():
            self.reconcile_once(trigger, waited)
            if first is not None:
                first()
                first = None
            delay = self._delay()
            self._note(functools.partial(StatusBook.scheduled, at=self.clock() + delay))
            self._wake.wait(delay)
            self._wake.clear()
            at, self._triggered_at = self._triggered_at, None
            waited = time.monotonic() - at if at is not None else 0.0
            reasons = list(self._triggers)
            self._triggers.clear()
            trigger = reasons[0] if reasons else "poll"
        return 0

    def _delay(self) -> float:
        book = self.book
        if book.failures == 0:
            return self.settings.interval
        if book.failure is not None and book.failure.delay is not None:
            return max(0.0, min(book.failure.delay, self.settings.interval))
        backoff = self.settings.backoff_initial * 2.0 ** (book.failures - 1)
        return float(min(backoff, self.settings.backoff_max, self.settings.interval))

    def shutdown(self) -> None:
        """Stop watching, stop servers (in-flight transfers get a bound), close the store. Every
        wait is bounded; a part that took a second or more is logged."""
        self._stopping.set()
        if self._watcher is not None:
            with _part("the repository watcher"):
                self._watcher.stop()
        if self._after is not None:
            with _part("what follows serving the last commit"):
                self._after.stop(PERSIST_AT_STOP)
        with _part("the servers"):
            self.supervisor.stop_all(self.settings.shutdown_timeout)
        with _part("the write of the served generation and the worker process"):
            self.reconciler.close(PERSIST_AT_STOP)  # what is served but not written yet, then the worker
        if self.rollouts is not None:
            with _part("the rollouts"):
                self.rollouts.stop()
        if self.rollout_driver is not None:
            self.rollout_driver.close()  # another instance of the site takes the rollouts over
        if self.store is not None:
            with _part("the results store"):
                self.store.flush(2.0)
                self.store.close()
        if self.source is not None:
            self.source.close()
        self._state_lock.release()

    # -- one reconcile ------------------------------------------------------------------------

    def reconcile_once(self, trigger: str = "manual", waited: float = 0.0) -> Result:
        """One attempt. `waited`: seconds from the trigger to now (for the log: where a commit's
        latency goes, with `begin`, the steps and the `after.*` parts that follow serving)."""
        t0 = time.monotonic()
        # The collector paused until /status says the outcome (as the worker pauses it while it
        # validates and renders, and the result's receipt does): a first commit makes millions of
        # long-lived objects here (the snapshot, the result, the generation, its targets) and no
        # cycles, and each pass walked them on the way to /status (20,000 nodes: 0.19 s, a young
        # pass of the received result, one in activation, a full one in after.record). The
        # collections this defers run after it, and `heap.settle` freezes what is served.
        follow: Callable[[], None] | None = None
        with gc_paused():
            self._probe_store()
            self._heartbeat()
            book = self._note(StatusBook.begun)
            around = {"wait": waited, "begin": time.monotonic() - t0}
            outcome = self.reconciler.run(trigger, self.clock(), book.skip)
            if outcome.generation is not None:
                follow = self._activated(outcome.generation, around)
            self._conclude(outcome, around)
            heap.freeze_young()  # what a big reconcile left, frozen before the collector resumes
        if follow is not None and self._after is not None:
            # Only now, /status saying the commit: its heap pass (`heap.settle`, a collection
            # even while the collector is paused) held the GIL the conclusion waited for (100,000
            # nodes: 0.9 s between the commit's record and /status naming it).
            self._after.submit(follow)
        self._target_memo.settle()  # what the next commit's targets reuse, once /status says this one
        return outcome.result

    def _conclude(self, outcome: Outcome, around: Mapping[str, float] | None = None) -> None:
        # History first, then the status book: /status never shows a condition its history lacks.
        result = outcome.result
        if result is not Result.UNCHANGED and self.store is not None:
            record = ReconcileRecord(
                revision=outcome.revision,
                trigger=outcome.trigger,
                result=str(result),
                started=outcome.started,
                duration=outcome.duration,
                reason=outcome.message,
                findings=tuple(findings.as_dict(i) for i in outcome.findings),
                **_commit_facts(outcome.commit),
            )
            try:
                self.store.record_reconcile(record)
            except Exception:
                log.exception("revision=%s could not record the reconcile", outcome.revision)
        book = self._note(lambda book: book.after(outcome))
        if result is Result.UNCHANGED:
            return
        self.metrics.concluded(result, outcome.duration)
        short = outcome.revision or "-"
        if result is Result.APPLIED:
            timings = {**{k: v for k, v in (around or {}).items() if not k.startswith("after.")}, **outcome.timings,
                       **{k: v for k, v in (around or {}).items() if k.startswith("after.")}}
            steps = " ".join(f"{name}={seconds:.3f}" for name, seconds in timings.items())
            log.info("revision=%s applied in %.3fs (trigger %s; %s)", short, outcome.duration, outcome.trigger, steps)
        elif result is Result.REJECTED:
            log.warning("revision=%s rejected, not served: %s", short, outcome.message)
            for issue in outcome.errors:
                log.warning("revision=%s %s:%d:%d: %s %s", short, issue.file, issue.line, issue.column, issue.code,
                            issue.message)
        else:
            log.warning("revision=%s reconcile failed, retrying (attempt %d): %s", short, book.failures,
                        outcome.message)

    def _heartbeat(self) -> None:
        """Tell the store this instance is alive and what it serves (/status of every instance)."""
        if self.store is not None:
            current = self.holder.current()
            self.store.record_serving(current.revision if current is not None else None, self.clock())

    def _served(self, generation: Generation, timings: dict[str, float] | None = None) -> None:
        """What follows serving a generation, activated or loaded from disk."""
        self.metrics.served(generation.revision)
        if self.store is not None:
            self.store.record_serving(generation.revision, self.clock())
        self._targets = self._record_targets(generation, {} if timings is None else timings)
        for warning in self._listener_warnings(generation):
            log.warning("revision=%s %s", generation.revision, warning)

    def _activated(self, generation: Generation,
                   timings: dict[str, float] | None = None) -> Callable[[], None] | None:
        """What follows an activation (already served): `timings` gets `after.<part>` seconds each.
        Under `run`, what may wait is returned, for the after-serving thread once concluded."""
        timings = {} if timings is None else timings
        previous = self._targets
        t = time.monotonic()
        # Here, not on the after-serving thread: what the revision targets is in the results store
        # before a machine's report on it can be acknowledged (a `kill -9` then keeps both).
        self._served(generation, timings)
        timings["after.served"] = time.monotonic() - t
        # Here too, before the next commit is taken: the rollout's decision is in the store before
        # anything else can happen (a kill -9 after serving keeps it), and unused assets are
        # collected where no assets step runs beside it: the next commit's step links new content
        # that no kept or served generation names until it is activated, and would lose it.
        self._start_rollout(generation, previous, self._targets, timings)
        t = time.monotonic()
        self._collect(generation.revision)
        timings["after.collect"] = time.monotonic() - t
        rest = functools.partial(self._after_served, generation, previous, self._targets)
        if self._after is None:
            rest(timings)
            return None
        # On its thread (daemon.afterserve): the next commit need not wait for it.
        return functools.partial(self._follow_up, generation.revision, rest)

    def _follow_up(self, revision: str, rest: Callable[[dict[str, float]], None]) -> None:
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        rest(timings)
        parts = " ".join(f"{name}={seconds:.3f}" for name, seconds in timings.items())
        log.info("revision=%s followed up in %.3fs after serving (%s)", revision, time.monotonic() - t0, parts)

    def _start_rollout(self, generation: Generation, previous: tuple[Target, ...] | None,
                       current: tuple[Target, ...] | None, timings: dict[str, float]) -> None:
        """The rollout `generation` asks for (`previous` -> `current` targets)."""
        t = time.monotonic()
        if self.rollouts is not None and current is not None:
            try:  # decisions and a store write; the power actions run in the runner's own threads
                self.rollouts.applied(generation.revision, generation.state.site.rollout, previous, current,
                                      generation.state.nodes)
            except Exception:
                log.exception("revision=%s could not start its rollout", generation.revision)
        timings["after.rollouts"] = time.monotonic() - t

    def _after_served(self, generation: Generation, previous: tuple[Target, ...] | None,
                      current: tuple[Target, ...] | None, timings: dict[str, float]) -> None:
        """What may wait for the next commit: the servers' supervisor, the worker's copy of the
        entries the next commit patches, the heap."""
        t = time.monotonic()
        self.supervisor.kick()  # a commit may have fixed what kept a server down (dhcp.interface)
        timings["after.kick"], t = time.monotonic() - t, time.monotonic()
        if self.reconciler.worker is not None:
            self.reconciler.worker.copy_ahead()
            timings["after.ahead"], t = time.monotonic() - t, time.monotonic()
        heap.settle()
        timings["after.settle"] = time.monotonic() - t

    def _listener_warnings(self, generation: Generation | None) -> tuple[str, ...]:
        """Where the served DHCP sends clients that we do not listen, and boot files our TFTP
        server does not have (core.wiring)."""
        if generation is None:
            return ()
        settings = self.settings
        listeners = wiring.Listeners(dhcp=settings.dhcp, http=settings.http_listen,
                                     tftp=settings.tftp_listen if settings.tftp else None)
        warnings = wiring.listener_warnings(generation.state.site, listeners)
        if settings.tftp:
            root = settings.tftp_root
            warnings += wiring.missing_boot_files(generation.state.site, generation.files,
                                                  lambda name: (root / name).is_file())
        return warnings

    def _record_targets(self, generation: Generation, timings: dict[str, float]) -> tuple[Target, ...]:
        """Remember which nodes this revision targets (boot results per commit read it)."""
        t0 = time.monotonic()
        change = self.reconciler.change
        # The worker's digests after a whole result (made beside the peer check and activation).
        planned = self.reconciler.plans(generation.state, generation.files)
        timings["after.plans"] = time.monotonic() - t0
        targets, wrong = self._target_memo.targets(
            generation.state, generation.files, self.settings.verify_incremental,
            change[1] if change is not None and change[0] is generation.files else None, planned)
        if wrong:
            log.error("revision=%s INCREMENTAL TARGETS MISMATCH: %d node(s) kept a boot plan digest (or were sent one "
                      "by the worker) that differs from the one computed (using the computed ones; please report "
                      "this): %s", generation.revision, len(wrong), ", ".join(wrong[:10]))
        timings["after.targets"] = time.monotonic() - t0
        if self.store is None:
            return targets
        try:
            self.store.record_revision(generation.revision, self.clock(), targets)
        except Exception:
            log.exception("revision=%s could not record its nodes", generation.revision)
        timings["after.record"] = time.monotonic() - t0 - timings["after.targets"]
        return targets

    def _unfinished_installs(self) -> set[str] | None:
        """Revisions some machine is still installing: their generations are not collected.
        None: not known now (the results store is behind or failed)."""
        if self.store is None:
            return set()
        try:
            return self.store.unfinished_revisions(self.clock(), self.settings.boot_timeout)
        except StoreBehind as exc:
            log.warning("could not tell which generations machines still install from: %s", exc)
        except Exception:
            log.exception("could not read unfinished installs")
        return None

    def _persisted(self, revision: str) -> None:
        """On the writer thread (daemon.persist), once `current` names `revision`: old generations
        go (the assets they alone used are collected on the loop's thread, at the next activation:
        an assets step may be linking a newer revision's now)."""
        self._collect_generations(revision, self._unfinished_installs())

    def _collect(self, revision: str) -> None:
        """After an activation: old generations (unless they go after the write) and unused assets."""
        with self._activations_lock:
            if revision in self._activations:
                self._activations.remove(revision)
            self._activations.append(revision)
        unfinished = self._unfinished_installs()
        if self.reconciler.persister is None:
            self._collect_generations(revision, unfinished)
        assets = self.reconciler.asset_store
        if assets is not None and unfinished is not None:
            try:  # content no kept generation (nor a served path) links to any more
                # Served but not written yet: in memory (retained), so kept. (`stored()` may race
                # the writer thread's collection: an OSError, and this waits for the next time.)
                freed = assets.collect(keep={*self.artifacts.stored(), *self.holder.retained(), revision})
            except OSError as exc:
                log.warning("collecting unreferenced assets: %s", exc)
            else:
                if freed:
                    log.info("collected %d bytes of assets no kept generation uses", freed)

    def _collect_generations(self, revision: str, unfinished: set[str] | None) -> None:
        removed: list[str] = []
        if unfinished is None:
            log.warning("revision=%s old generations kept this time: a machine may still install from one",
                        revision)
        else:
            try:
                removed = self.artifacts.collect(self.settings.keep_generations,
                                                 referenced={revision, *unfinished})
            except OSError as exc:
                log.warning("collecting old generations: %s", exc)
        if removed:
            log.info("collected %d old generation(s)", len(removed))
        with contextlib.suppress(OSError):
            stored = set(self.artifacts.stored())
            self.holder.retain_only(stored | self._unwritten_kept(stored, unfinished))

    def _unwritten_kept(self, stored: set[str], unfinished: set[str] | None) -> set[str]:
        """Generations served but never written (a newer activation superseded their write,
        daemon.persist) that stay in memory, so their /r/<sha>/ URLs answer as long as a written
        one's would: among the newest `keep_generations` activated, or machines still install
        from them (all, when that cannot be told). Forgets the activations of the others."""
        with self._activations_lock:
            newest = set(self._activations[-self.settings.keep_generations:])
            kept = {rev for rev in self._activations if rev not in stored
                    and (unfinished is None or rev in newest or rev in unfinished)}
            self._activations = [rev for rev in self._activations if rev in stored or rev in kept]
            return kept

    # -- status -------------------------------------------------------------------------------

    def unservable(self) -> str | None:
        """Why this instance can serve nothing of its repository (`run` exits 2 after the first
        attempt): --site names no site it declares, or it has sites and --site names none; and no
        generation is served. Once one is, a later commit like that is only an invalid commit."""
        rejected = self.book.rejected
        if rejected is None or self.holder.current() is not None:
            return None
        return next((f.message for f in rejected.findings if f.code in sites.SELECTION_CODES), None)

    def healthy(self) -> bool:
        """Liveness (/healthz): a valid generation is served."""
        return self.holder.current() is not None

    def ready(self) -> bool:
        """Readiness (/readyz): a generation is served and every server it needs serves."""
        return self.healthy() and not self.supervisor.down()

    def _degraded(self) -> list[tuple[str, str]]:
        """Live faults, (reason, message) each: /status says Degraded while there is one."""
        faults = [("ServerDown", problem) for problem in self.supervisor.down()]
        problem = self.store_problem()
        if problem is not None:
            faults.append((str(Reason.STORE_UNWRITABLE), problem))
        faults += [(str(Reason.STORE_UNREACHABLE), p) for _, p in self._store_faults() if p is not None]
        persister = self.reconciler.persister
        unwritten = persister.problem() if persister is not None else None
        if unwritten is not None and problem is None:
            faults.append((str(Reason.STORE_UNWRITABLE), unwritten))
        return faults

    def _store_faults(self) -> list[tuple[str, str | None]]:
        """(store, why it is unreachable or None) of the results store and the others watched."""
        out = [("results", self.store.problem if self.store is not None else None)]
        return out + [(name, problem()) for name, problem in self._store_problems]

    def watch_store(self, name: str, problem: Callable[[], str | None]) -> None:
        """Say Degraded (StoreUnreachable) while `problem()` names one (the shared lease store)."""
        self._store_problems.append((name, problem))

    def status(self) -> dict[str, Any]:
        """What /status answers (and `netboot-reconcile status` prints)."""
        current = self.holder.current()
        source = self.source.description if self.source is not None else self.settings.repo
        out = self.book.view(source=source, warnings=self._listener_warnings(current), degraded=self._degraded())
        out["site"] = self.settings.site  # --site; null for a repository without sites
        persister = self.reconciler.persister
        written = persister.view() if persister is not None else None
        out["generation"] = None if current is None else {
            "revision": current.revision,
            "activated_at": current.activated_at,
            "files": len(current.files),
            "nodes": len(current.state.nodes),
            "path": str(current.root) if current.root else None,
        }
        if written is not None:  # served first, written after (daemon.persist): where the disk is
            out.update(written)
            if current is not None and written["persisted_revision"] == current.revision:
                out["generation"]["path"] = str(self.artifacts.path_of(current.revision))
        out["servers"] = self.supervisor.view()
        out["instance"] = self.settings.instance
        out["rollout"] = self.rollouts.view() if self.rollouts is not None else None
        out["reconciles"], out["instances"] = self._from_store()
        return out

    def _from_store(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Recent reconciles and every instance of the store; the last answer while it cannot be read."""
        if self.store is None:
            return [], []
        try:
            answer = ([r.as_dict() for r in self.store.recent_reconciles(HISTORY)],
                      [i.as_dict() for i in self.store.instances()])
        except Exception as exc:
            log.warning("status: the results store cannot be read (%s): its last answer is shown", exc)
            return self._last_from_store
        self._last_from_store = answer
        return answer

    # -- signals --------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop; SIGHUP triggers a reconcile. Call from the main thread. The
        handlers only hand the signal to a thread (daemon.signals: why), which also writes every
        thread's stack to the log while a stop takes over `signals.DUMP_AFTER` seconds."""
        stops = (signal.SIGTERM, signal.SIGINT)
        relay = SignalRelay(self._on_signal, stops)
        relay.install((*stops, signal.SIGHUP))

    def _on_signal(self, number: int) -> None:
        """On the thread `netboot-signals` (never in a handler: it may lock and log)."""
        if number == signal.SIGHUP:
            self.trigger("sighup")
            return
        log.info("%s received: stopping", signal.Signals(number).name)
        self.stop()


@contextlib.contextmanager
def _part(what: str) -> Iterator[None]:
    """One part of `Daemon.shutdown`: logged when it took a second or more (where a stop waited)."""
    t0 = time.monotonic()
    yield
    took = time.monotonic() - t0
    if took >= 1.0:
        log.info("stopping: %s took %.1f s", what, took)


def _commit_facts(extra: Mapping[str, str]) -> dict[str, Any]:
    """Subject, author and commit time of a snapshot's commit, where its source knows them."""
    try:
        committed: float | None = float(extra["time"]) if extra.get("time") else None
    except ValueError:
        committed = None
    return {"subject": extra.get("message", ""), "author": extra.get("author", ""), "committed": committed}
