"""The status book's transitions as a table, as source-controller tests its condition updates:
a book before, an outcome, and what /status says after (condition, reason, message, findings,
revisions, failures). Pure values, no daemon."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core.model import Issue, Severity
from reconciler.daemon.outcome import Outcome, Result
from reconciler.daemon.status import Condition, Failure, Rejection, StatusBook

A, B, C = "a" * 40, "b" * 40, "c" * 40
ERROR = Issue("nodes/n.yaml", 3, 1, "ref-profile", Severity.ERROR, "no such profile")
WARNING = Issue("nodes/n.yaml", 4, 1, "lint", Severity.WARNING, "hmm")

FRESH = StatusBook()
READY = StatusBook(desired=A, attempted=A, applied=A, concluded=True)
STALLED = replace(READY, desired=B, attempted=B, rejected=Rejection(B, "1 error", (ERROR,)))
FAILING = replace(READY, failure=Failure("SourceUnavailable", "fetch: down"), failures=2)
FROM_DISK = StatusBook(applied=A)  # `current` served at start, nothing concluded yet


def outcome(result: Result, revision: str | None, **kw: object) -> Outcome:
    return Outcome(result, "poll", 0.0, 0.1, revision, **kw)  # type: ignore[arg-type]


APPLIED_B = outcome(Result.APPLIED, B, findings=(WARNING,))
INVALID_B = outcome(Result.REJECTED, B, message="1 error", findings=(ERROR, WARNING))
INVALID_C = outcome(Result.REJECTED, C, message="bad c", findings=(ERROR,))
DOWN = outcome(Result.FAILED, None, step="fetch", message="fetch: down", reason="SourceUnavailable")
FULL = outcome(Result.FAILED, B, step="write", message="write: ENOSPC", reason="StoreUnwritable", delay=5.0)
SAME_A = outcome(Result.UNCHANGED, A)
SAME_B = outcome(Result.UNCHANGED, B)

# before, outcome -> condition, reason, message, finding codes, attempted, applied, failures
TABLE = [
    ("first apply", FRESH, APPLIED_B, ("Ready", "Succeeded", "", [], B, B, 0)),
    ("first attempt invalid", FRESH, INVALID_B, ("Stalled", "InvalidRevision", "1 error", ["ref-profile"], B, None, 0)),
    ("first fetch fails", FRESH, DOWN, ("Reconciling", "SourceUnavailable", "fetch: down", [], None, None, 1)),
    ("from disk, unchanged", FROM_DISK, SAME_A, ("Ready", "Succeeded", "", [], None, A, 0)),
    ("ready, new commit applied", READY, APPLIED_B, ("Ready", "Succeeded", "", [], B, B, 0)),
    ("ready, new commit invalid", READY, INVALID_B,
     ("Stalled", "InvalidRevision", "1 error", ["ref-profile"], B, A, 0)),
    ("ready, remote down", READY, DOWN, ("Reconciling", "SourceUnavailable", "fetch: down", [], A, A, 1)),
    ("ready, disk full", READY, FULL, ("Reconciling", "StoreUnwritable", "write: ENOSPC", [], A, A, 1)),
    ("stalled, nothing new", STALLED, SAME_B, ("Stalled", "InvalidRevision", "1 error", ["ref-profile"], B, A, 0)),
    ("stalled, remote down", STALLED, DOWN,
     ("Reconciling", "SourceUnavailable", "fetch: down", ["ref-profile"], B, A, 1)),
    ("stalled, force-push back to applied", STALLED, SAME_A, ("Ready", "Succeeded", "", [], B, A, 0)),
    ("stalled, fixed", STALLED, APPLIED_B, ("Ready", "Succeeded", "", [], B, B, 0)),
    ("stalled, another invalid", STALLED, INVALID_C, ("Stalled", "InvalidRevision", "bad c", ["ref-profile"], C, A, 0)),
    ("failing, fails again", FAILING, DOWN, ("Reconciling", "SourceUnavailable", "fetch: down", [], A, A, 3)),
    ("failing, back and nothing new", FAILING, SAME_A, ("Ready", "Succeeded", "", [], A, A, 0)),
    ("failing, back with a new commit", FAILING, APPLIED_B, ("Ready", "Succeeded", "", [], B, B, 0)),
]


@pytest.mark.parametrize(("before", "happened", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_transition(before: StatusBook, happened: Outcome,
                    expected: tuple[str, str, str, list[str], str | None, str | None, int]) -> None:
    after = before.after(happened)
    view = after.view(source="repo")
    got = (view["condition"], view["reason"], view["message"], [f["code"] for f in view["findings"]],
           view["last_attempted_revision"], view["last_applied_revision"], view["consecutive_failures"])
    assert got == expected
    assert before.after(happened) == after  # pure: the same value every time
    assert not after.reconciling


def test_a_rejected_revision_keeps_its_errors_only() -> None:
    assert STALLED.after(INVALID_B).findings == (ERROR,)  # not the warning


def test_while_an_attempt_runs() -> None:
    assert FRESH.begun().condition() == (Condition.RECONCILING, "Progressing", "")
    assert FRESH.condition() == (Condition.RECONCILING, "Starting", "")
    assert READY.begun().condition() == (Condition.RECONCILING, "Progressing", "")
    assert STALLED.begun().condition()[0] is Condition.STALLED
    assert READY.begun().desiring(C).desired == C


def test_skip_names_the_applied_and_the_rejected_revision() -> None:
    assert STALLED.skip == {A, B}
    assert FRESH.skip == frozenset()


def test_degraded_wins_and_every_condition_is_listed() -> None:
    view = READY.view(source="repo", degraded=[("ServerDown", "dhcp: down"), ("StoreUnwritable", "ro")])
    assert (view["condition"], view["reason"], view["message"]) == ("Degraded", "ServerDown", "dhcp: down")
    assert [(c["type"], c["reason"]) for c in view["conditions"]] == [
        ("Ready", "Succeeded"), ("Degraded", "ServerDown"), ("Degraded", "StoreUnwritable")]


def test_a_failure_delay_is_kept_for_the_loop() -> None:
    after = READY.after(FULL)
    assert after.failure == Failure("StoreUnwritable", "write: ENOSPC", 5.0)


PROGRESS = {"revision": B, "assets": 3, "verified": 1, "failed": 0, "fetching": {"/assets/x.iso": {"bytes": 5,
                                                                                                   "total": 9}}}


@pytest.mark.parametrize("before", [READY, FAILING, STALLED, FRESH], ids=["ready", "failing", "stalled", "fresh"])
def test_fetching_assets_is_reconciling_with_progress_until_the_attempt_ends(before: StatusBook) -> None:
    fetching = before.begun().assets(PROGRESS)
    view = fetching.view(source="repo")
    assert (view["condition"], view["reason"]) == ("Reconciling", "FetchingAssets")
    assert view["message"] == f"revision {B}: 1 of 3 assets verified"
    assert view["assets"] == PROGRESS
    done = fetching.assets(None).after(APPLIED_B)
    assert done.view(source="repo")["assets"] is None and done.condition()[0] is Condition.READY
    # an attempt that ends while fetching (a failure) leaves no stale progress behind
    assert fetching.after(FULL).view(source="repo")["assets"] is None
