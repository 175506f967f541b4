"""The two ways a reconcile fails, raised where the failure happens and read by the daemon's runner.

Placed in core (the bottom layer) so that every layer may raise them: adapters (`gitsource`,
`artifacts`), the renderer (`core.template.TemplateFailure` is an `InvalidRevision`) and the
daemon's own steps. Nobody translates them on the way up; the runner turns them into the
reconcile's outcome and the status reason (as kopf's TemporaryError/PermanentError and
source-controller's stalling vs. retryable errors):

- `Temporary`: worth retrying with backoff while the served generation keeps serving. `reason`
  is the status reason code (`Reason`), `delay` an optional hint in seconds for the next attempt.
- `InvalidRevision`: this revision cannot be served; `findings` say why. Not retried until
  another revision is desired.
"""

from __future__ import annotations

import enum

from reconciler.core.model import Issue


class Reason(enum.StrEnum):
    """Status reason codes of a temporary failure (the `reason` of `/status` while Reconciling)."""

    SOURCE_UNAVAILABLE = "SourceUnavailable"  # the remote or local repository cannot be reached or read
    STORE_UNWRITABLE = "StoreUnwritable"  # the state directory refuses writes (read-only, full, permissions)
    STORE_UNREACHABLE = "StoreUnreachable"  # the --store PostgreSQL cannot be reached (Degraded: served from memory)
    RETRYING_AFTER_ERROR = "RetryingAfterError"  # anything else (an OS error, a bug): retried
    FETCHING_ASSETS = "FetchingAssets"  # the revision's assets are being (or could not yet be) fetched


class Temporary(Exception):
    """A failure worth retrying (with backoff) while the current generation keeps serving."""

    reason: str = Reason.RETRYING_AFTER_ERROR

    def __init__(self, message: str, *, reason: str | None = None, delay: float | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.delay = delay


class SourceUnavailable(Temporary):
    """The source cannot be reached or read now (network, credentials, a path not mounted yet)."""

    reason = Reason.SOURCE_UNAVAILABLE


class StoreUnwritable(Temporary):
    """The state directory refused a write (the generation, `current`)."""

    reason = Reason.STORE_UNWRITABLE


class AssetsUnavailable(Temporary):
    """A revision's boot assets could not be fetched now (a timeout, a 404, a full disk): retried."""

    reason = Reason.FETCHING_ASSETS


class InvalidRevision(Exception):
    """This revision cannot be served; `findings` say why. Not retried until a new revision."""

    def __init__(self, message: str, findings: tuple[Issue, ...] = ()) -> None:
        super().__init__(message)
        self.findings = findings
