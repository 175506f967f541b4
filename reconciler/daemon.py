"""The reconcile loop: one commit in, one immutable generation served; plus triggers, signals, servers.

Called by `commands.run` (`Daemon(settings, ...).run()`); tests drive `reconcile_once` directly.

A reconcile is an ordered list of steps with one signature, `step(attempt) -> bool` (False:
nothing more to do, e.g. the revision is already applied), as source-controller does it:

    fetch -> snapshot -> validate -> render -> peer-check -> write -> swap-current -> activate

and the outcome is always recorded afterwards. Failures are exceptions of two kinds
(`core.errors`), raised where they happen (adapters, renderer, steps) and not translated here:
- `Temporary` (the remote is down, the disk is full): retried with exponential backoff (or the
  error's `delay`); the served generation is untouched; status is Reconciling with its `reason`.
- `InvalidRevision` (this commit cannot be served: findings): recorded with every finding and
  never retried until another commit arrives; status is Stalled until then.
Any failure before `swap-current` leaves the served generation untouched; `write` goes through
`generations/<sha>.tmp` and a rename, so a crash at any point leaves a complete generation or none.

Triggers: the poll timer (`--interval`), `trigger()` from the push webhook (HTTP control app),
the watcher (inotify on a local repository) and SIGHUP. SIGTERM/SIGINT stop the loop, then the
servers (in-flight transfers get `shutdown_timeout`), and `run()` returns 0.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler import heap
from reconciler.adapters.artifacts import ArtifactStore, StoredGeneration
from reconciler.adapters.gitsource import Source, SourceProblem, open_source, print_progress
from reconciler.adapters.store import RESULTS_FILE, ReconcileRecord, ResultsStore, StoreBehind
from reconciler.adapters.watcher import Watcher
from reconciler.core import findings, outcomes, wiring
from reconciler.core.errors import InvalidRevision, Reason, Temporary
from reconciler.core.model import DesiredState, Issue, Severity
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.generation import Generation, GenerationHolder
from reconciler.settings import Settings

log = logging.getLogger(__name__)

Renderer = Callable[[DesiredState], Mapping[str, bytes]]
HISTORY = 20
REPORT_KEY_META = "report-key"  # `.meta/report-key` of a generation: the fingerprint of its report secret


def report_key(secret: bytes | None) -> bytes:
    """A fingerprint of the report secret (not the secret): which one a generation's tokens are signed with."""
    if not secret:
        return b"none\n"
    return hashlib.sha256(b"netboot-reconcile report-secret fingerprint\0" + secret).hexdigest()[:32].encode() + b"\n"


class Result(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    INVALID = "invalid"
    FAILED = "failed"


class Condition(enum.StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


@dataclass
class Attempt:
    """What one reconcile knows so far; each step reads what earlier ones left."""

    trigger: str
    started: float = field(default_factory=time.time)
    step: str = ""
    revision: str | None = None
    snapshot: Snapshot | None = None
    state: DesiredState | None = None
    issues: tuple[Issue, ...] = ()
    files: Mapping[str, bytes] | None = None
    root: Path | None = None
    generation: Generation | None = None
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds, in order


Step = Callable[[Attempt], bool]


@dataclass
class ServerSlot:
    """A supervised server and what /status says about it."""

    name: str
    server: Any = None
    state: str = "off"  # off | running | failed | stopped | not-needed
    address: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.address:
            out["address"] = self.address
        if self.error:
            out["error"] = self.error
        active = getattr(self.server, "active_transfers", None)
        if isinstance(active, int):
            out["active_transfers"] = active
        return out


class Metrics:
    """The Prometheus metrics of one daemon (own registry: several daemons may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "netboot_reconcile_duration_seconds",
            "Time spent in one reconcile attempt",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.total = Counter("netboot_reconcile", "Reconcile attempts by result", ["result"], registry=self.registry)
        self.info = Gauge("netboot_info", "The revision being served (value 1)", ["revision"], registry=self.registry)
        self._revision: str | None = None

    def served(self, revision: str) -> None:
        if self._revision is not None and self._revision != revision:
            with contextlib.suppress(KeyError):
                self.info.remove(self._revision)
        self.info.labels(revision=revision).set(1)
        self._revision = revision


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
        self.renderer = renderer
        self.holder = holder or GenerationHolder()
        self.holder.set_loader(self._load_generation)
        self.clock = clock
        self.metrics = Metrics()
        self.artifacts = ArtifactStore(settings.state_dir)
        self.source: Source | None = source
        self.store: ResultsStore | None = None
        self.servers: dict[str, ServerSlot] = {}
        self._watcher: Watcher | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._triggers: deque[str] = deque(maxlen=16)
        self._lock = threading.Lock()  # guards the status fields below
        self._condition = Condition.RECONCILING
        self._reason = "Starting"
        self._message = ""
        self._desired: str | None = None
        self._attempted: str | None = None
        self._applied: str | None = None
        self._rejected: str | None = None  # the invalid revision we will not retry
        self._rejection: tuple[str, tuple[Issue, ...]] = ("", ())  # why: its message and findings
        self._findings: tuple[Issue, ...] = ()  # those of the rejected revision while it is desired
        self._warnings: tuple[str, ...] = ()  # where the served DHCP sends clients that we do not listen
        self._failures = 0
        self._retry_after: float | None = None  # the last temporary error's own delay
        self._next_attempt: float | None = None
        self._reconciling = False
        self._previous: StoredGeneration | None = None  # what `write` may hard-link from
        self._meta = {REPORT_KEY_META: report_key(settings.report_secret)}  # `.meta/` of what we write
        self.steps: tuple[tuple[str, Step], ...] = (
            ("fetch", self._fetch),
            ("snapshot", self._snapshot),
            ("validate", self._validate),
            ("render", self._render),
            ("peer-check", self._peer_check),
            ("write", self._write),
            ("swap-current", self._swap_current),
            ("activate", self._activate),
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Prepare the state directory, open the store, serve `current` from disk at once."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts.prepare()
        self.store = ResultsStore(self.settings.state_dir / RESULTS_FILE)
        self._load_current()
        if self.source is None:
            try:
                self._open_source()
            except SourceProblem as exc:
                if self.holder.current() is None:
                    raise
                # A repository on a volume mounted later, a path moved: serve what we have; the
                # fetch step opens it again, retried with backoff.
                log.error("cannot open %s (%s): serving the current generation, retrying", self.settings.repo, exc)

    def _open_source(self) -> None:
        self.source = open_source(self.settings, print_progress if self.settings.progress else None)
        log.info("source %s", self.source.description)

    def _load_current(self) -> None:
        """Serve `current` from disk; render it again first when its report secret is not ours.

        The secret changed (`report-secret` deleted to rotate tokens): the stored files carry
        tokens no report can prove again, and nothing else would re-render an applied revision.
        This is done before anything serves (start-up), so no stale token is handed out."""
        try:
            stored = self.artifacts.load_current()
        except OSError as exc:
            log.error("cannot read the current generation: %s", exc)
            return
        if stored is None:
            return
        built = self._rebuild(stored)
        if built is None:
            return
        generation, rerendered = built
        if rerendered:
            meta = dict(self._meta)
            try:
                root = self.artifacts.write(stored.revision, generation.files, stored.source, previous=stored,
                                            meta=meta, replace=True)
            except Temporary as exc:  # serve the new rendering anyway; the next start tries again
                log.error("revision=%s could not write the generation rendered again: %s", stored.revision, exc)
            else:
                stored = StoredGeneration(stored.revision, root, generation.files, stored.source, meta)
                generation = Generation(stored.revision, generation.state, generation.files, root)
        self._previous = stored
        self.holder.swap(generation)
        heap.settle()
        self.metrics.served(stored.revision)
        self._record_targets(generation)
        self._check_listeners(generation)
        with self._lock:
            self._applied = stored.revision
        log.info("revision=%s serving the current generation from disk (%d files)", stored.revision,
                 len(stored.files))

    def _rebuild(self, stored: StoredGeneration) -> tuple[Generation, bool] | None:
        """The Generation of a stored one: its `.source/` validated again, its files as stored, or
        rendered again (True) when they were signed with another report secret. None: invalid."""
        result = validate(Snapshot(stored.revision, stored.source, origin=str(stored.root)))
        if result.state is None:
            log.error("revision=%s the stored generation no longer validates", stored.revision)
            return None
        if stored.meta.get(REPORT_KEY_META) == self._meta[REPORT_KEY_META]:
            return Generation(stored.revision, result.state, stored.files, stored.root), False
        log.warning("revision=%s was rendered with another report secret (or before that was recorded): "
                    "rendering it again", stored.revision)
        try:
            files = dict(self.renderer(result.state))
        except Exception:  # a renderer bug must not stop the daemon starting (the reconcile reports it)
            log.exception("revision=%s could not be rendered again", stored.revision)
            return None
        return Generation(stored.revision, result.state, files, stored.root), True

    def _load_generation(self, revision: str) -> Generation | None:
        """The holder's loader: a generation still on disk that this process has not loaded (a
        `/r/<sha>/` URL after a restart). Runs on a request thread; None when unknown or collected."""
        try:
            if not self.artifacts.path_of(revision).is_dir():
                return None
            stored = self.artifacts.load(revision)
        except ValueError:
            return None  # not a revision name
        except OSError as exc:  # collected meanwhile, or unreadable
            log.warning("revision=%s cannot be read from disk: %s", revision, exc)
            return None
        built = self._rebuild(stored)
        if built is None:
            return None
        log.info("revision=%s loaded from disk for a pinned URL (%d files)", revision, len(built[0].files))
        return built[0]

    def add_server(self, name: str, server: Any, *, needed: bool = True) -> ServerSlot:
        """Supervise `server` under `name`; start it now unless it is not needed yet."""
        slot = ServerSlot(name, server)
        self.servers[name] = slot
        if needed and server is not None:
            self._start_server(slot)
        elif server is None:
            slot.state = "off"
        else:
            slot.state = "not-needed"
        return slot

    def _start_server(self, slot: ServerSlot) -> None:
        try:
            slot.server.start()
        except OSError as exc:
            slot.state, slot.error = "failed", str(exc)
            raise
        slot.state, slot.error = "running", ""
        address = getattr(slot.server, "address", None)
        if isinstance(address, tuple):
            slot.address = f"{address[0]}:{address[1]}"
        log.info("%s listening on %s", slot.name, slot.address or "?")

    def start_watcher(self) -> None:
        source = self.source
        if not self.settings.watch or source is None or source.local is None or self._watcher is not None:
            return
        git_dir = (source.local / "HEAD").exists()
        self._watcher = Watcher(source.local, lambda: self.trigger("inotify"), git_dir=git_dir)
        self._watcher.start()

    def trigger(self, reason: str) -> None:
        """Ask for a reconcile now (webhook, inotify, SIGHUP); coalesces with a pending one."""
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
        self.start_watcher()
        if ready is not None:
            ready()
        trigger = "start"
        while not self._stopping.is_set():
            self.reconcile_once(trigger)
            if first is not None:
                first()
                first = None
            delay = self._delay()
            with self._lock:
                self._next_attempt = self.clock() + delay
            self._wake.wait(delay)
            self._wake.clear()
            reasons = list(self._triggers)
            self._triggers.clear()
            trigger = reasons[0] if reasons else "poll"
        return 0

    def _delay(self) -> float:
        if self._failures == 0:
            return self.settings.interval
        if self._retry_after is not None:
            return max(0.0, min(self._retry_after, self.settings.interval))
        backoff = self.settings.backoff_initial * 2.0 ** (self._failures - 1)
        return float(min(backoff, self.settings.backoff_max, self.settings.interval))

    def shutdown(self) -> None:
        """Stop watching, stop servers (in-flight transfers get a bound), close the store."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.stop()
        for slot in reversed(list(self.servers.values())):
            if slot.state == "running":
                try:
                    slot.server.stop(self.settings.shutdown_timeout)
                except Exception:
                    log.exception("stopping %s", slot.name)
                slot.state = "stopped"
        if self.store is not None:
            self.store.flush(2.0)
            self.store.close()
        if self.source is not None:
            self.source.close()

    # -- one reconcile ------------------------------------------------------------------------

    def reconcile_once(self, trigger: str = "manual") -> Result:
        attempt = Attempt(trigger, started=self.clock())
        t0 = time.monotonic()
        with self._lock:
            self._reconciling = True
        result = Result.APPLIED
        reason = ""
        code: str = Reason.RETRYING_AFTER_ERROR
        retry_after: float | None = None
        try:
            for name, step in self.steps:
                attempt.step = name
                t_step = time.monotonic()
                done = step(attempt)
                attempt.timings[name] = time.monotonic() - t_step
                if not done:
                    result = Result.UNCHANGED
                    break
        except InvalidRevision as exc:
            result, reason = Result.INVALID, str(exc)
            attempt.issues = exc.findings or attempt.issues
        except Temporary as exc:
            result, reason = Result.FAILED, f"{attempt.step}: {exc}"
            code, retry_after = exc.reason, exc.delay
        except OSError as exc:
            result, reason = Result.FAILED, f"{attempt.step}: {exc}"
        except Exception as exc:  # a bug must not stop the daemon serving the last good generation
            log.exception("revision=%s reconcile step %s failed", attempt.revision, attempt.step)
            result, reason = Result.FAILED, f"{attempt.step}: internal error: {exc!r}"
        duration = time.monotonic() - t0
        self._conclude(attempt, result, reason, duration, code, retry_after)
        return result

    def _conclude(self, attempt: Attempt, result: Result, reason: str, duration: float, code: str,
                  retry_after: float | None) -> None:
        # History first, then the status fields: /status never shows a condition its history lacks.
        if result is not Result.UNCHANGED:
            record = ReconcileRecord(
                revision=attempt.revision,
                trigger=attempt.trigger,
                result=str(result),
                started=attempt.started,
                duration=duration,
                reason=reason,
                findings=tuple(findings.as_dict(i) for i in attempt.issues),
            )
            if self.store is not None:
                try:
                    self.store.record_reconcile(record)
                except Exception:
                    log.exception("revision=%s could not record the reconcile", attempt.revision)
        with self._lock:
            self._reconciling = False
            if result is Result.UNCHANGED:
                # Nothing new to try: the status is that of the desired revision, whatever the
                # attempts in between said (a remote outage, a force-push away and back).
                self._failures, self._retry_after = 0, None
                if self._rejected is not None and self._rejected == self._desired:
                    message, self._findings = self._rejection
                    self._condition, self._reason, self._message = Condition.STALLED, "InvalidRevision", message
                elif self._applied is not None:
                    self._findings = ()
                    self._condition, self._reason, self._message = Condition.READY, "Succeeded", ""
                return
            if result is not Result.FAILED:
                self._attempted = attempt.revision
            self._retry_after = retry_after if result is Result.FAILED else None
            if result is Result.APPLIED:
                self._failures = 0
                self._applied = attempt.revision
                self._rejected = None
                self._findings = ()
                self._condition, self._reason, self._message = Condition.READY, "Succeeded", ""
            elif result is Result.INVALID:
                self._failures = 0
                self._rejected = attempt.revision
                self._findings = tuple(i for i in attempt.issues if i.is_error) or attempt.issues
                self._rejection = (reason, self._findings)
                self._condition, self._reason, self._message = Condition.STALLED, "InvalidRevision", reason
            else:
                self._failures += 1
                self._condition = Condition.RECONCILING
                self._reason = code
                self._message = reason
        self.metrics.total.labels(result=str(result)).inc()
        self.metrics.duration.observe(duration)
        short = (attempt.revision or "-")
        if result is Result.APPLIED:
            steps = " ".join(f"{name}={seconds:.3f}" for name, seconds in attempt.timings.items())
            log.info("revision=%s applied in %.3fs (trigger %s; %s)", short, duration, attempt.trigger, steps)
        elif result is Result.INVALID:
            log.warning("revision=%s invalid, not served: %s", short, reason)
            for issue in self._findings:
                log.warning("revision=%s %s:%d:%d: %s %s", short, issue.file, issue.line, issue.column, issue.code,
                            issue.message)
        else:
            log.warning("revision=%s reconcile failed, retrying (attempt %d): %s", short, self._failures, reason)

    # -- the steps ----------------------------------------------------------------------------

    def _fetch(self, attempt: Attempt) -> bool:
        if self.source is None:  # it could not be opened at start
            self._open_source()
            self.start_watcher()
        assert self.source is not None
        revision = self.source.fetch()
        attempt.revision = revision
        with self._lock:
            self._desired = revision
            if revision in (self._applied, self._rejected):
                return False
        return True

    def _snapshot(self, attempt: Attempt) -> bool:
        assert self.source is not None and attempt.revision is not None
        attempt.snapshot = self.source.snapshot(attempt.revision)
        return True

    def _validate(self, attempt: Attempt) -> bool:
        assert attempt.snapshot is not None
        result = validate(attempt.snapshot)
        attempt.issues = result.issues
        if result.state is None:
            raise InvalidRevision(findings.summary(result.issues), result.issues)
        attempt.state = result.state
        return True

    def _render(self, attempt: Attempt) -> bool:
        assert attempt.state is not None
        # A template failing here (validation renders each template once, not every pass the
        # renderer makes) raises TemplateFailure, an InvalidRevision: not an error to retry.
        attempt.files = dict(self.renderer(attempt.state))
        return True

    def _peer_check(self, attempt: Attempt) -> bool:
        """`dhcpd -t -cf` on the rendered dhcpd.conf, when ISC dhcpd is installed."""
        assert attempt.files is not None
        conf = attempt.files.get("dhcpd.conf")
        dhcpd = shutil.which("dhcpd") or shutil.which("dhcpd", path="/usr/sbin:/sbin")
        if conf is None or dhcpd is None:
            return True
        with tempfile.NamedTemporaryFile(prefix="dhcpd-", suffix=".conf") as fh:
            fh.write(conf)
            fh.flush()
            proc = subprocess.run([dhcpd, "-t", "-cf", fh.name], capture_output=True, timeout=30, check=False)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout).decode(errors="replace")
            lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(("Internet Systems",
                     "Copyright", "For info", "ldap-", "Config file"))]
            message = "rendered dhcpd.conf rejected by dhcpd -t: " + " / ".join(lines[-5:])
            raise InvalidRevision(message, (Issue("dhcpd.conf", 0, 0, "peer-check", Severity.ERROR, message),))
        return True

    def _write(self, attempt: Attempt) -> bool:
        assert attempt.files is not None and attempt.snapshot is not None and attempt.revision is not None
        parts: dict[str, float] = {}
        # A revision written before (a revert to it) with another report secret is written again.
        stale = self.artifacts.meta(attempt.revision, REPORT_KEY_META) != self._meta[REPORT_KEY_META]
        attempt.root = self.artifacts.write(attempt.revision, attempt.files, attempt.snapshot.files,
                                            previous=self._previous, timings=parts, meta=self._meta, replace=stale)
        attempt.timings.update((f"write.{name}", seconds) for name, seconds in parts.items())
        return True

    def _swap_current(self, attempt: Attempt) -> bool:
        assert attempt.revision is not None
        self.artifacts.swap_current(attempt.revision)
        return True

    def _activate(self, attempt: Attempt) -> bool:
        assert attempt.revision is not None and attempt.state is not None and attempt.files is not None
        generation = Generation(attempt.revision, attempt.state, attempt.files, attempt.root)
        self.holder.swap(generation)
        attempt.generation = generation
        if attempt.root is not None and attempt.snapshot is not None:
            self._previous = StoredGeneration(attempt.revision, attempt.root, attempt.files, attempt.snapshot.files,
                                              self._meta)
        self.metrics.served(attempt.revision)
        self._record_targets(generation)
        self._check_listeners(generation)
        self._after_activation(generation)
        heap.settle()
        return True

    def _check_listeners(self, generation: Generation) -> None:
        """Warn (once per activated generation) where its DHCP sends clients that we do not listen."""
        settings = self.settings
        listeners = wiring.Listeners(dhcp=settings.dhcp, http=settings.http_listen,
                                     tftp=settings.tftp_listen if settings.tftp else None)
        warnings = wiring.listener_warnings(generation.state.site, listeners)
        for warning in warnings:
            log.warning("revision=%s %s", generation.revision, warning)
        with self._lock:
            self._warnings = warnings

    def _record_targets(self, generation: Generation) -> None:
        """Remember which nodes this revision targets (boot results per commit read it)."""
        if self.store is None:
            return
        targets = [
            outcomes.Target(n.name, n.mac, n.profile, generation.state.profiles[n.profile].install_once, n.reinstall)
            for n in generation.state.nodes
            if n.profile in generation.state.profiles
        ]
        try:
            self.store.record_revision(generation.revision, self.clock(), targets)
        except Exception:
            log.exception("revision=%s could not record its nodes", generation.revision)

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

    def _after_activation(self, generation: Generation) -> None:
        unfinished = self._unfinished_installs()
        removed: list[str] = []
        if unfinished is None:
            log.warning("revision=%s old generations kept this time: a machine may still install from one",
                        generation.revision)
        else:
            try:
                removed = self.artifacts.collect(self.settings.keep_generations,
                                                 referenced={generation.revision, *unfinished})
            except OSError as exc:
                log.warning("collecting old generations: %s", exc)
        if removed:
            log.info("collected %d old generation(s)", len(removed))
        with contextlib.suppress(OSError):
            self.holder.retain_only(self.artifacts.stored())
        slot = self.servers.get("dhcp")
        if slot is not None and slot.state == "not-needed" and generation.state.site.dhcp_mode != "off":
            try:
                self._start_server(slot)
            except OSError as exc:
                log.error("revision=%s dhcp server could not start: %s", generation.revision, exc)

    # -- status -------------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.holder.current() is not None

    def status(self) -> dict[str, Any]:
        """What /status answers (and `netboot-reconcile status` prints)."""
        current = self.holder.current()
        with self._lock:
            condition = Condition.RECONCILING if self._reconciling and self._condition is not Condition.STALLED \
                else self._condition
            out: dict[str, Any] = {
                "condition": str(condition),
                "reason": "Progressing" if self._reconciling and condition is Condition.RECONCILING
                and self._reason == "Starting" else self._reason,
                "message": self._message,
                "source": self.source.description if self.source is not None else self.settings.repo,
                "desired_revision": self._desired,
                "last_attempted_revision": self._attempted,
                "last_applied_revision": self._applied,
                "findings": [findings.as_dict(i) for i in self._findings],
                "warnings": list(self._warnings),
                "consecutive_failures": self._failures,
                "next_attempt": self._next_attempt,
            }
        out["generation"] = None if current is None else {
            "revision": current.revision,
            "activated_at": current.activated_at,
            "files": len(current.files),
            "nodes": len(current.state.nodes),
            "path": str(current.root) if current.root else None,
        }
        out["servers"] = {name: slot.as_dict() for name, slot in self.servers.items()}
        out["reconciles"] = [r.as_dict() for r in self.store.recent_reconciles(HISTORY)] if self.store else []
        return out

    # -- signals and readiness ------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop; SIGHUP triggers a reconcile. Call from the main thread."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.trigger("sighup"))


def sd_notify(notify_socket: str | None, message: str) -> bool:
    """Tell systemd (Type=notify) `message`, e.g. READY=1; False when not under systemd."""
    if not notify_socket:
        return False
    address = "\0" + notify_socket[1:] if notify_socket.startswith("@") else notify_socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify %s: %s", message, exc)
        return False
    return True

