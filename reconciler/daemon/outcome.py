"""What one reconcile attempt came to: a frozen `Outcome`, made by the runner (`daemon.steps`).

Read by the status book (`StatusBook.after`), the results store (a reconcile record), the
metrics and the log (`daemon.loop`). Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from reconciler.core.model import Issue
from reconciler.generation import Generation


class Result(enum.StrEnum):
    """The words of `/status`'s history, the store's `reconciles.result`, the metric's `result`
    label and the commit states of `core.outcomes.CommitState` (UNCHANGED is never recorded)."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"  # the revision is invalid (`core.errors.InvalidRevision`): never served
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """One attempt: its result, the revision it reached and, when it failed, why."""

    result: Result
    trigger: str
    started: float  # wall clock
    duration: float  # seconds
    revision: str | None = None  # the revision fetched; None when the fetch failed
    step: str = ""  # the step the attempt ended in
    message: str = ""  # REJECTED and FAILED: why, for people
    reason: str = ""  # FAILED: the status reason code (`core.errors.Reason`)
    delay: float | None = None  # FAILED: the error's own hint for the next attempt
    findings: tuple[Issue, ...] = ()  # every finding of the revision (warnings too)
    timings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # step -> seconds
    generation: Generation | None = None  # APPLIED: what is served now
    commit: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # snapshot's message, author, time

    @property
    def errors(self) -> tuple[Issue, ...]:
        """The findings that make a REJECTED revision invalid (all of them when none is an error)."""
        return tuple(i for i in self.findings if i.is_error) or self.findings
