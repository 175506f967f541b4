"""What follows serving a commit, on a thread of its own: the loop takes the next commit at once.

Called by the daemon's loop (daemon.loop, `Daemon.run`): after a generation is activated (it is
served from then on), kicking the servers' supervisor and settling the heap
(`Daemon._after_served`) need not delay a commit pushed meanwhile (the `wait` of the applied log
line); they are submitted once the commit is concluded (/status names it), as the heap's pass
holds the GIL the conclusion would wait for. Here they run in activation order on one thread,
beside the next commit's validation, which runs in the worker process and leaves the daemon's
GIL free. What stays on the loop's thread: recording what the revision targets (in the store
before a machine's report on it is acknowledged), starting its rollout (a kill -9 must not lose
it), and collecting old generations and unused assets (beside the next commit's assets step it
deleted the content that step had just linked: no kept or served generation names it before
activation). Tests driving `reconcile_once` directly do it all inline, as before. `stop` runs
what is queued (within a bound) before the store closes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class AfterServing:
    """One thread running the submitted calls in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="after-serving", daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], None]) -> None:
        self._queue.put(call)

    def drain(self) -> None:
        """Return once every call submitted so far has run."""
        self._queue.join()

    def stop(self, timeout: float) -> None:
        """Run what is queued, then end the thread (waiting at most `timeout`)."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("what follows serving the last commits did not finish within %.0f s: left undone", timeout)

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            try:
                if call is None:
                    return
                call()
            except Exception:  # a bug here must not stop what follows the next commits
                log.exception("what follows serving a commit failed")
            finally:
                self._queue.task_done()
