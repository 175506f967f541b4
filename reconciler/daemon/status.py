"""The status book: what `/status` says, as a frozen value changed only by pure transitions.

`Daemon` (daemon.loop) holds one `StatusBook` and replaces it under its lock:
`begun()` when an attempt starts, `desiring(revision)` when the fetch step knows the desired
revision, `loaded(revision)` when `current` is served from disk, `after(outcome)` when the attempt
is over, `scheduled(at)` when the next one is planned. `view(...)` renders it for `/status`
together with what is live (servers, the served generation, the history).

Only facts are stored; condition, reason, message and findings are derived from them, so they
cannot disagree (source-controller's rule: the status is that of the desired revision):
- a temporary failure since the last concluded attempt: Reconciling, with the error's reason;
- else the desired revision is the rejected one: Stalled, InvalidRevision, with its findings;
- else a revision has been applied: Ready;
- else (nothing concluded yet): Reconciling, Starting (Progressing while an attempt runs).
On top, `Degraded` is derived in `view` from what is live: a server the served generation needs
that does not serve (reason ServerDown), a state directory that refuses writes (StoreUnwritable).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from reconciler.core import findings as findings_format
from reconciler.core.model import Issue
from reconciler.daemon.outcome import Outcome, Result


class Condition(enum.StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    DEGRADED = "Degraded"


@dataclass(frozen=True)
class Rejection:
    """The invalid revision we will not retry, and why."""

    revision: str
    message: str
    findings: tuple[Issue, ...]


@dataclass(frozen=True)
class Failure:
    """The last temporary failure (cleared by the next concluded attempt that did not fail)."""

    reason: str
    message: str
    delay: float | None = None


@dataclass(frozen=True)
class StatusBook:
    desired: str | None = None
    attempted: str | None = None
    applied: str | None = None
    rejected: Rejection | None = None
    failure: Failure | None = None
    failures: int = 0  # consecutive failed attempts
    concluded: bool = False  # an attempt has concluded since start
    reconciling: bool = False  # an attempt is running now
    fetching: Mapping[str, Any] | None = None  # the running attempt's asset progress (steps._Progress.view)
    next_attempt: float | None = None

    # -- transitions (pure) --------------------------------------------------------------------

    def begun(self) -> StatusBook:
        return replace(self, reconciling=True)

    def desiring(self, revision: str) -> StatusBook:
        return replace(self, desired=revision)

    def loaded(self, revision: str) -> StatusBook:
        """`current` on disk (revision) is served: applied before this process started."""
        return replace(self, applied=revision)

    def assets(self, progress: Mapping[str, Any] | None) -> StatusBook:
        """The running attempt is fetching assets (None: it is done with them)."""
        return replace(self, fetching=progress)

    def scheduled(self, at: float | None) -> StatusBook:
        return replace(self, next_attempt=at)

    def after(self, outcome: Outcome) -> StatusBook:
        book = replace(self, reconciling=False, concluded=True, fetching=None)
        if outcome.revision is not None:
            book = replace(book, desired=outcome.revision)
        match outcome.result:
            case Result.UNCHANGED:
                # Nothing new to try: the status is that of the desired revision, whatever the
                # attempts in between said (a remote outage, a force-push away and back).
                return replace(book, failure=None, failures=0)
            case Result.APPLIED:
                return replace(book, failure=None, failures=0, attempted=outcome.revision,
                               applied=outcome.revision, rejected=None)
            case Result.REJECTED:
                assert outcome.revision is not None
                return replace(book, failure=None, failures=0, attempted=outcome.revision,
                               rejected=Rejection(outcome.revision, outcome.message, outcome.errors))
            case Result.FAILED:
                return replace(book, failure=Failure(outcome.reason, outcome.message, outcome.delay),
                               failures=book.failures + 1)

    # -- derived -------------------------------------------------------------------------------

    @property
    def skip(self) -> frozenset[str]:
        """Revisions the fetch step need not try again: the applied one, the rejected one."""
        return frozenset(r for r in (self.applied, self.rejected.revision if self.rejected else None) if r)

    @property
    def stalled(self) -> bool:
        return self.rejected is not None and self.rejected.revision == self.desired

    def condition(self) -> tuple[Condition, str, str]:
        """(condition, reason, message) of the reconcile alone, before live health."""
        if self.reconciling and self.fetching is not None:
            f = self.fetching
            return (Condition.RECONCILING, "FetchingAssets",
                    f"revision {f['revision']}: {f['verified']} of {f['assets']} assets verified")
        if self.failure is not None:
            return Condition.RECONCILING, self.failure.reason, self.failure.message
        if self.stalled:
            assert self.rejected is not None
            return Condition.STALLED, "InvalidRevision", self.rejected.message
        if self.concluded and self.applied is not None:
            if self.reconciling:
                return Condition.RECONCILING, "Progressing", ""
            return Condition.READY, "Succeeded", ""
        return Condition.RECONCILING, "Progressing" if self.reconciling else "Starting", ""

    @property
    def findings(self) -> tuple[Issue, ...]:
        """Those of the rejected revision while it is the desired one."""
        return self.rejected.findings if self.stalled and self.rejected is not None else ()

    def view(
        self,
        *,
        source: str,
        warnings: Sequence[str] = (),
        degraded: Sequence[tuple[str, str]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `/status` document. `degraded`: (reason, message) of each live fault (a server
        down, the store unwritable); the first one is the condition, all are listed."""
        condition, reason, message = self.condition()
        conditions = [{"type": str(condition), "reason": reason, "message": message}]
        conditions += [{"type": str(Condition.DEGRADED), "reason": r, "message": m} for r, m in degraded]
        if degraded:
            condition, (reason, message) = Condition.DEGRADED, degraded[0]
        out: dict[str, Any] = {
            "condition": str(condition),
            "reason": reason,
            "message": message,
            "conditions": conditions,
            "source": source,
            "desired_revision": self.desired,
            "last_attempted_revision": self.attempted,
            "last_applied_revision": self.applied,
            "findings": [findings_format.as_dict(i) for i in self.findings],
            "warnings": list(warnings),
            "consecutive_failures": self.failures,
            "next_attempt": self.next_attempt,
            "assets": dict(self.fetching) if self.fetching is not None else None,
        }
        out.update(extra or {})
        return out
