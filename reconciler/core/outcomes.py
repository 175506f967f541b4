"""Boot outcomes: a node's boot events at one revision -> how its boot went; per commit, per node.

Pure: values in, values out, and time only as an explicit `now`. Called by the results store
(`adapters.store`: unfinished installs for collection), by the HTTP results apps
(`servers.http_results`: /api, /ui, the outcome metric) and by `netboot-reconcile results`;
the last two build their documents with `commits_report` / `node_report` over a
`ResultsSource` (the store's read queries, passed in).

Outcome of one node at one revision (its events in time order):

    pending -> booting -> installing -> succeeded | failed | timed-out
                                     \\-> local-disk  (it was told to boot its disk)

- DHCP events alone change nothing: an installed OS renewing its lease is not a netboot.
- `tftp`, `ipxe-bootstrap`, `ipxe-script`, `grub`, `kernel`, `initrd`, `asset` -> booting;
  a script that boots the local disk (`detail.local_disk`) -> local-disk.
- `user-data` / `meta-data` / `vendor-data` (NoCloud seed) or an autoinstall `start` -> installing.
- Reports from the machine decide: a plain `report` with status success/failure, `phone-home`
  (cloud-init's last module: the OS is up) -> succeeded, an autoinstall `finish` of
  `subiquity/Install` or `subiquity/Install/install` with SUCCESS -> succeeded, any autoinstall
  stage finishing with FAIL, however nested, -> failed (curtin's reporting contract: FAIL is
  fatal; real installs stop at a nested `subiquity/Install/install/configure_apt: FAIL` and wait
  at a shell prompt, and the parent's finish may never come; also after a success: late-commands,
  `subiquity/Late/run_user_supplied`, run after the install). WARN is not a failure.
- After succeeded/failed, only a new `kernel` download starts a new attempt (a reinstall); a
  node rebooting into its disk afterwards does not hide the result.
- booting/installing for longer than `timeout` seconds since the attempt started -> timed-out.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.core.events import Stage
from reconciler.core.model import BootEvent

DEFAULT_BOOT_TIMEOUT = 3600.0


class Outcome(enum.StrEnum):
    PENDING = "pending"
    BOOTING = "booting"
    INSTALLING = "installing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    LOCAL_DISK = "local-disk"


TERMINAL = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.LOCAL_DISK})
IN_PROGRESS = frozenset({Outcome.BOOTING, Outcome.INSTALLING})

NETBOOT_STAGES = frozenset({Stage.TFTP, Stage.IPXE_BOOTSTRAP, Stage.IPXE_SCRIPT, Stage.GRUB, Stage.KERNEL,
                            Stage.INITRD, Stage.ASSET})
SEED_STAGES = frozenset({Stage.USER_DATA, Stage.META_DATA, Stage.VENDOR_DATA})
REPORT_STAGES = frozenset({Stage.REPORT, Stage.AUTOINSTALL, Stage.PHONE_HOME})
# Stages whose revision is "the revision that is installing this node" (a report names no revision).
SERVING_STAGES = frozenset({Stage.IPXE_SCRIPT, Stage.GRUB, Stage.KERNEL, Stage.INITRD, Stage.USER_DATA,
                            Stage.META_DATA})

_SUCCESS_WORDS = frozenset({"success", "succeeded", "ok", "done"})
_FAILURE_WORDS = frozenset({"failure", "failed", "fail", "error"})
_FINAL_AUTOINSTALL = frozenset({"subiquity/Install", "subiquity/Install/install"})


def is_local_disk(event: BootEvent) -> bool:
    return event.stage in (Stage.IPXE_SCRIPT, Stage.GRUB) and bool(event.detail.get("local_disk"))


def report_verdict(event: BootEvent) -> Outcome | None:
    """What one report event says on its own: succeeded, failed, installing, or nothing."""
    detail = event.detail
    if event.stage == Stage.PHONE_HOME:
        return Outcome.SUCCEEDED
    if event.stage == Stage.REPORT:
        status = str(detail.get("status", "")).lower()
        if status in _SUCCESS_WORDS:
            return Outcome.SUCCEEDED
        if status in _FAILURE_WORDS:
            return Outcome.FAILED
        return Outcome.INSTALLING
    if event.stage == Stage.AUTOINSTALL:
        name = str(detail.get("name", ""))
        kind = str(detail.get("event_type", "")).lower()
        result = str(detail.get("result", "")).upper()
        if kind == "finish" and result == "FAIL":
            return Outcome.FAILED
        if kind == "finish" and result == "SUCCESS" and name in _FINAL_AUTOINSTALL:
            return Outcome.SUCCEEDED
        return Outcome.INSTALLING
    return None


@dataclass(frozen=True)
class NodeResult:
    """How one node's boot at one revision went (its latest attempt), with every event seen."""

    revision: str
    mac: str | None
    node: str | None
    outcome: Outcome
    started: float | None = None  # the latest attempt's first netboot event
    finished: float | None = None  # when it reached its terminal outcome
    reason: str = ""  # the event that decided it, in words
    attempts: int = 0
    events: tuple[BootEvent, ...] = ()

    def as_dict(self, with_events: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "mac": self.mac,
            "outcome": str(self.outcome),
            "started": self.started,
            "finished": self.finished,
            "reason": self.reason,
            "attempts": self.attempts,
        }
        if with_events:
            out["events"] = [event_dict(e) for e in self.events]
        return out


def event_dict(event: BootEvent) -> dict[str, Any]:
    return {"time": event.time, "stage": event.stage, "client": event.client, "detail": dict(event.detail)}


def _describe(event: BootEvent, verdict: Outcome) -> str:
    d = event.detail
    if event.stage == Stage.REPORT:
        message = str(d.get("message", "")).strip()
        return f"report {d.get('status', '?')}" + (f": {message}" if message else "")
    if event.stage == Stage.AUTOINSTALL:
        return f"autoinstall {d.get('name', '?')} {d.get('event_type', '')} {d.get('result', '')}".strip()
    if event.stage == Stage.PHONE_HOME:
        return "cloud-init phone_home"
    return f"{event.stage} ({verdict})"


def _timed_out(timeout: float, last: str) -> str:
    return f"no result {timeout / 60:g} min after it started booting (last: {last or 'nothing'})"


def node_result(
    events: Iterable[BootEvent],
    *,
    revision: str,
    now: float,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    mac: str | None = None,
    node: str | None = None,
) -> NodeResult:
    """The outcome of one node at one revision from its events (any order; sorted by time here)."""
    ordered = tuple(sorted(events, key=lambda e: e.time))
    state = Outcome.PENDING
    started: float | None = None
    finished: float | None = None
    reason = ""
    attempts = 0
    for e in ordered:
        mac = mac or e.mac
        node = node or e.node
        if state in IN_PROGRESS and started is not None and e.time - started > timeout:
            state, finished, reason = Outcome.TIMED_OUT, started + timeout, _timed_out(timeout, reason)
        verdict = report_verdict(e)
        if verdict is not None:
            if state in (Outcome.PENDING, Outcome.LOCAL_DISK, Outcome.TIMED_OUT) and verdict is Outcome.INSTALLING:
                attempts += 1
                started = e.time
            if verdict in TERMINAL:
                if state is Outcome.FAILED and verdict is Outcome.SUCCEEDED and e.stage == Stage.PHONE_HOME:
                    continue  # the OS came up, but the install said it failed: keep the failure
                if started is None:
                    attempts, started = attempts + 1, e.time
                state, finished, reason = verdict, e.time, _describe(e, verdict)
            elif state not in (Outcome.SUCCEEDED, Outcome.FAILED):
                state, finished, reason = Outcome.INSTALLING, None, _describe(e, verdict)
            continue
        if is_local_disk(e):
            if state not in (Outcome.SUCCEEDED, Outcome.FAILED):
                if state not in IN_PROGRESS:
                    attempts += 1
                    started = e.time
                state, finished = Outcome.LOCAL_DISK, e.time
                reason = f"told to boot its local disk ({e.detail.get('local_disk')})"
            continue
        if e.stage in NETBOOT_STAGES or e.stage in SEED_STAGES:
            status = e.detail.get("status")
            if isinstance(status, int) and status >= 400:
                continue  # a refused request (404, 410) is in the timeline, not progress
            new_attempt = state in (Outcome.PENDING, Outcome.LOCAL_DISK, Outcome.TIMED_OUT) or (
                state in (Outcome.SUCCEEDED, Outcome.FAILED) and e.stage == Stage.KERNEL
            )
            if new_attempt:
                attempts += 1
                state, started, finished, reason = Outcome.BOOTING, e.time, None, ""
            if state in TERMINAL:
                continue
            if e.stage in SEED_STAGES:
                state = Outcome.INSTALLING
                reason = f"fetched its NoCloud {e.stage}"
            elif state is Outcome.BOOTING:
                reason = f"fetched {e.stage}"
    if state in IN_PROGRESS and started is not None and now - started > timeout:
        state, finished, reason = Outcome.TIMED_OUT, started + timeout, _timed_out(timeout, reason)
    return NodeResult(revision, mac, node, state, started, finished, reason, attempts, ordered)


@dataclass(frozen=True)
class Target:
    """A node the revision's desired state declares (what the commit targets)."""

    node: str
    mac: str
    profile: str = ""
    install_once: bool = False
    reinstall: int = 0


@dataclass(frozen=True)
class CommitResult:
    """One revision: which machines it targets, what each of them did, and the counts."""

    revision: str
    applied: float | None
    nodes: tuple[NodeResult, ...]  # targeted nodes by name, then other machines that booted it by mac
    targeted: int
    counts: Mapping[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"revision": self.revision, "applied": self.applied, "targeted": self.targeted, **self.counts}

    def as_dict(self, with_events: bool = True) -> dict[str, Any]:
        return {**self.summary(), "nodes": [n.as_dict(with_events) for n in self.nodes]}


def _counts(results: Sequence[NodeResult], targeted_macs: set[str]) -> dict[str, int]:
    mine = [r for r in results if r.mac in targeted_macs]
    by: dict[Outcome, int] = defaultdict(int)
    for r in mine:
        by[r.outcome] += 1
    return {
        "booted": sum(1 for r in mine if r.outcome is not Outcome.PENDING),
        "succeeded": by[Outcome.SUCCEEDED],
        "failed": by[Outcome.FAILED],
        "timed_out": by[Outcome.TIMED_OUT],
        "in_progress": by[Outcome.BOOTING] + by[Outcome.INSTALLING],
        "local_disk": by[Outcome.LOCAL_DISK],
        "pending": by[Outcome.PENDING],
        "other_machines": len(results) - len(mine),
    }


def commit_result(
    revision: str,
    targets: Sequence[Target],
    events: Iterable[BootEvent],
    *,
    now: float,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    applied: float | None = None,
) -> CommitResult:
    """Every targeted node's result at `revision` (pending when silent), plus machines not targeted
    that netbooted it (unknown MACs, nodes removed by the commit)."""
    by_mac: dict[str, list[BootEvent]] = defaultdict(list)
    name_to_mac = {t.node: t.mac for t in targets}
    for e in events:
        if e.revision != revision:
            continue
        mac = e.mac or (name_to_mac.get(e.node) if e.node else None)
        if mac is not None:
            by_mac[mac].append(e)
    results: list[NodeResult] = []
    targeted_macs = set()
    for t in sorted(targets, key=lambda t: t.node):
        targeted_macs.add(t.mac)
        results.append(node_result(by_mac.pop(t.mac, ()), revision=revision, now=now, timeout=timeout,
                                   mac=t.mac, node=t.node))
    for mac in sorted(by_mac):
        evs = by_mac[mac]
        if not any(e.stage in NETBOOT_STAGES or e.stage in SEED_STAGES or e.stage in REPORT_STAGES for e in evs):
            continue  # DHCP chatter of a machine that did not netboot this revision
        results.append(node_result(evs, revision=revision, now=now, timeout=timeout, mac=mac))
    return CommitResult(revision, applied, tuple(results), len(targets), _counts(results, targeted_macs))


@dataclass(frozen=True)
class NodeDrift:
    """A node's desired revision (the newest applied one declaring it) vs the one it last booted."""

    node: str
    mac: str
    desired: str | None
    last_booted: str | None  # the revision of its latest attempt (any outcome but pending)
    last_outcome: Outcome
    last_time: float | None

    @property
    def drift(self) -> bool:
        return self.desired is not None and self.last_booted != self.desired

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "mac": self.mac,
            "desired_revision": self.desired,
            "last_booted_revision": self.last_booted,
            "last_outcome": str(self.last_outcome),
            "last_time": self.last_time,
            "drift": self.drift,
        }


def node_drift(node: str, mac: str, desired: str | None, results: Iterable[NodeResult]) -> NodeDrift:
    """Drift from the node's results over several revisions: the latest attempt wins."""
    latest: NodeResult | None = None
    for r in results:
        if r.outcome is Outcome.PENDING or r.started is None:
            continue
        if latest is None or (latest.started is not None and r.started > latest.started):
            latest = r
    if latest is None:
        return NodeDrift(node, mac, desired, None, Outcome.PENDING, None)
    return NodeDrift(node, mac, desired, latest.revision, latest.outcome, latest.started)


def unfinished_revisions(
    events: Iterable[BootEvent], *, now: float, timeout: float = DEFAULT_BOOT_TIMEOUT
) -> set[str]:
    """Revisions some machine is still booting or installing (their generations must stay served)."""
    groups: dict[tuple[str, str], list[BootEvent]] = defaultdict(list)
    for e in events:
        key = e.mac or e.node or e.client
        if key and e.revision:
            groups[(e.revision, key)].append(e)
    return {
        rev
        for (rev, _), evs in groups.items()
        if node_result(evs, revision=rev, now=now, timeout=timeout).outcome in IN_PROGRESS
    }


# -- documents for the CLI, /api and /ui --------------------------------------------------------


class ResultsSource(Protocol):
    """The read queries `commits_report` and `node_report` need (adapters.store.ResultsQueries)."""

    def revisions(self, limit: int = 50) -> list[tuple[str, float]]: ...

    def revision_like(self, prefix: str) -> list[str]: ...

    def targets(self, revisions: Iterable[str]) -> dict[str, list[Target]]: ...

    def events_of(self, revisions: Iterable[str]) -> list[BootEvent]: ...

    def events_of_node(self, mac: str, node: str | None = None, limit: int = 5000) -> list[BootEvent]: ...

    def node_revisions(self, node: str) -> list[tuple[str, str, float]]: ...


class UnknownCommit(LookupError):
    """`--commit` / `/api/commits/<sha>` names no revision the store knows (or several)."""


def commit_results(
    src: ResultsSource, *, now: float, timeout: float, limit: int = 20, commit: str | None = None
) -> list[CommitResult]:
    """The newest `limit` applied revisions (or the one `commit` names, by prefix), newest first."""
    applied = dict(src.revisions(max(limit, 1) if commit is None else 100_000))
    if commit is not None:
        matches = [r for r in applied if r.startswith(commit)] or src.revision_like(commit)
        if len(matches) != 1:
            raise UnknownCommit(f"commit {commit!r}: " + ("no such revision" if not matches else
                                f"ambiguous ({', '.join(m[:12] for m in matches[:5])})"))
        revisions = matches
    else:
        revisions = list(applied)[:limit]
    targets = src.targets(revisions)
    events: dict[str, list[BootEvent]] = defaultdict(list)
    for e in src.events_of(revisions):
        events[e.revision].append(e)
    return [
        commit_result(r, targets.get(r, []), events[r], now=now, timeout=timeout, applied=applied.get(r))
        for r in revisions
    ]


def node_history(
    src: ResultsSource, name: str, mac: str | None = None, *, now: float, timeout: float
) -> tuple[list[NodeResult], NodeDrift] | None:
    """A node's result at every revision that declared it or that it booted, newest first, and its drift."""
    declared = src.node_revisions(name)
    newest = src.revisions(1)
    if mac is None:
        if not declared:
            return None
        mac = declared[0][1]
    desired = declared[0][0] if declared and newest and declared[0][0] == newest[0][0] else None
    by_rev: dict[str, list[BootEvent]] = defaultdict(list)
    for e in src.events_of_node(mac, name):
        by_rev[e.revision].append(e)
    order = {rev: applied for rev, _, applied in declared}
    revisions = set(order) | {r for r in by_rev if r}
    results = [node_result(by_rev.get(r, ()), revision=r, now=now, timeout=timeout, mac=mac, node=name)
               for r in revisions]
    results.sort(key=lambda r: order.get(r.revision, r.started or 0.0), reverse=True)
    return results, node_drift(name, mac, desired, results)


def commits_report(
    src: ResultsSource,
    *,
    now: float,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    limit: int = 20,
    commit: str | None = None,
    node: str | None = None,
    with_events: bool = True,
) -> dict[str, Any]:
    """What `results --format json` prints: per commit, per node: outcome and events; then drift."""
    commits = commit_results(src, now=now, timeout=timeout, limit=limit, commit=commit)
    docs = []
    for c in commits:
        doc = c.as_dict(with_events)
        if node is not None:
            doc["nodes"] = [n for n in doc["nodes"] if node in (n["node"], n["mac"])]
        docs.append(doc)
    newest = src.revisions(1)
    current = src.targets([newest[0][0]]).get(newest[0][0], []) if newest else []
    drift = []
    for t in current:
        if node is not None and node not in (t.node, t.mac):
            continue
        history = node_history(src, t.node, t.mac, now=now, timeout=timeout)
        if history is not None:
            drift.append(history[1].as_dict())
    return {
        "generated": now,
        "boot_timeout": timeout,
        "desired_revision": newest[0][0] if newest else None,
        "commits": docs,
        "nodes": drift,
    }


def node_report(src: ResultsSource, name: str, *, now: float, timeout: float = DEFAULT_BOOT_TIMEOUT) -> dict[str, Any]:
    """`/api/nodes/<name>`: drift, then the node's result and events at each revision, newest first."""
    history = node_history(src, name, now=now, timeout=timeout)
    if history is None:
        raise LookupError(f"no node {name!r} in any applied revision")
    results, drift = history
    return {**drift.as_dict(), "revisions": [{"revision": r.revision, **r.as_dict()} for r in results]}
