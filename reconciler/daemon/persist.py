"""Persisting what is already served: `generations/<sha>/` and `current`, after activation.

Called by the reconcile steps (daemon.steps: the `persist` step hands over a job right after
`activate`, when `Settings.persist_after_serving`) and by `Daemon` (`flush` at shutdown, `view`
for /status). One thread, `netboot-persist`, runs the jobs: the write (`adapters.artifacts`, all
syscalls: the packet threads get the GIL back at each), the swap of `current` and what follows
(collection of old generations): every change to `generations/` happens on it, one at a time.

Why: writing 50,000 files took seconds that the served path waited for; a commit is now served
as soon as it is validated, rendered, peer-checked and its assets are in place, and `current`
follows it shortly after. A crash before the write completes leaves the previous `current` (a
complete generation, `adapters.artifacts`' guarantee); the restarted daemon serves it and
reconciles the head again. Only the newest job waits: a commit activated while an older one is
still waiting supersedes the older one's write (logged). The older generation is never on disk,
but was served: `Daemon` keeps it in memory, its /r/<sha>/ URLs and assets answering, as long as
a written one would be kept (`keep_generations`, unfinished installs). A failed write is
retried with backoff until it succeeds or a newer job replaces it; /status says what lags (`view`).

The write gives way to the next commit (`giving_way`, held by the reconcile steps from the
snapshot until the commit is served): between files it waits (`pace`), at most `GIVE_WAY_MAX`
seconds per commit, so a commit's path does not share the CPUs and the GIL with rewriting the
last one's files. Why: at 10,000 nodes a one-node commit's write is ~5 s of syscalls (every file
naming the revision is new), so the next commit always arrived beside it
(bench/reconcile_latency: ready p50 0.031 s beside the write, 0.022 s after it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import Temporary

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 60.0
# The longest the write waits for one commit: a one-node commit is served in tens of ms; a
# large one, or one waiting on a download, must not keep `current` from following for long.
GIVE_WAY_MAX = 1.0


@dataclass(frozen=True)
class Job:
    """One served generation to write: what `ArtifactStore.write` takes."""

    revision: str
    files: Mapping[str, bytes]
    source: Mapping[str, bytes]
    private: Collection[str]
    served_at: float  # time.monotonic() of activation
    # The files `files` were patched from and the paths where the two differ (the worker's
    # `Change`), for the holder to share their entries once written (`GenerationHolder.share`).
    patched_from: tuple[Mapping[str, bytes], Collection[str]] | None = None


class Persister:
    """The writer thread and its one pending job (see the module docstring)."""

    def __init__(self, write: Callable[[Job], None], give_way_max: float = GIVE_WAY_MAX) -> None:
        self._write = write  # writes, swaps `current`, collects; raises Temporary/OSError when refused
        self.give_way_max = give_way_max
        self._way_until: float | None = None  # time.monotonic() until which the write waits (`pace`)
        self._cond = threading.Condition()
        self._pending: Job | None = None
        self._running: Job | None = None
        self._problem: str | None = None  # why the last attempt failed
        self._persisted: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._pending is not None:
                log.info("revision=%s not written: revision %s was served before its write began",
                         self._pending.revision, job.revision)
            self._pending = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="netboot-persist", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending or being written (True), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self, timeout: float) -> bool:
        """Write what is pending (bounded by `timeout`), then stop the thread."""
        with self._cond:
            job = self._running or self._pending
        if job is not None:
            log.info("revision=%s stopping: waiting up to %.0f s for its write", job.revision, timeout)
        done = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if not done:
            with self._cond:
                job = self._pending or self._running
            if job is not None:
                log.warning("revision=%s stopping before it was written: the next start serves the previous "
                            "current and reconciles it again", job.revision)
        return done

    @contextlib.contextmanager
    def giving_way(self) -> Iterator[None]:
        """While inside, the write waits between files (`pace`), at most `give_way_max` seconds."""
        with self._cond:
            self._way_until = time.monotonic() + self.give_way_max
        try:
            yield
        finally:
            with self._cond:
                self._way_until = None
                self._cond.notify_all()

    def pace(self) -> None:
        """Called by the write between files (on the writer thread): returns at once, unless a
        commit is on its way (`giving_way`); then when it is served, or its time is up."""
        if self._way_until is None:
            return
        with self._cond:
            while self._way_until is not None and not self._stopping:
                left = self._way_until - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def view(self) -> dict[str, Any]:
        """For /status: the revision `current` names, and what is not on disk yet."""
        with self._cond:
            lagging = self._running or self._pending
            return {
                "persisted_revision": self._persisted,
                "persisting_revision": lagging.revision if lagging is not None else None,
                "persist_lag_seconds": round(time.monotonic() - lagging.served_at, 3) if lagging else None,
                "persist_problem": self._problem,
            }

    def problem(self) -> str | None:
        with self._cond:
            return self._problem

    def set_persisted(self, revision: str | None) -> None:
        """What `current` names at start (loaded from disk)."""
        with self._cond:
            self._persisted = revision

    def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._pending is None:
                    return
                job, self._pending, self._running = self._pending, None, self._pending
            failed = self._attempt(job)
            with self._cond:
                self._running = None
                if failed is None:
                    self._persisted, self._problem, delay = job.revision, None, RETRY_FIRST
                else:
                    self._problem = f"revision {job.revision} is served but not written: {failed}"
                    if self._pending is None:
                        self._pending = job  # retried below, unless a newer one replaces it
                self._cond.notify_all()
                if failed is not None and self._stopping:
                    return
                if failed is not None:
                    self._cond.wait(delay)  # a newer job or stop() wakes it early
                    delay = min(delay * 2, RETRY_MAX)

    def _attempt(self, job: Job) -> str | None:
        try:
            self._write(job)
        except (Temporary, OSError) as exc:
            log.error("revision=%s is served but could not be written (retrying): %s", job.revision, exc)
            return str(exc)
        except Exception as exc:  # a bug: the served generation must not be disturbed by it
            log.exception("revision=%s writing the served generation failed", job.revision)
            return f"internal error: {exc!r}"
        return None
