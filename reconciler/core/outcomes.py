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
  a script that boots the local disk (`detail.local_disk`) -> local-disk. A step counts only
  when the machine got the file (`delivered`): a refused request (HTTP 4xx), an HTTP download
  the client broke off (`result` aborted) or a TFTP transfer
  that did not end with the last block acknowledged (`result` failed, aborted, error, or OVMF's
  size probe) is in the timeline and moves nothing.
- `user-data` / `meta-data` / `vendor-data` / `network-config` (NoCloud seed) or an autoinstall `start` -> installing.
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

Across commits, outcomes follow what a machine boots, not the commit hash (`carried_result`):
each applied commit declares each node with its boot plan digest (`core.bootplan`); a node's
result at a commit counts its events at every commit serving it the same plan, from its last
boot of another plan before that plan was served to it on. Drift (`node_drift`) is the plan the
machine last booted against the one the serving commit gives it. Every commit seen has a
`CommitState`: applied, superseded, rejected (with its findings), failed.
"""

from __future__ import annotations

import bisect
import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
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
SEED_STAGES = frozenset({Stage.USER_DATA, Stage.META_DATA, Stage.VENDOR_DATA, Stage.NETWORK_CONFIG})
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
    plan: str = ""  # the plan key it was evaluated for (`plan_key`)
    booted_revision: str | None = None  # the revision that served its latest step (may be an earlier one)

    def as_dict(self, with_events: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "mac": self.mac,
            "outcome": str(self.outcome),
            "started": self.started,
            "finished": self.finished,
            "reason": self.reason,
            "attempts": self.attempts,
            "plan": self.plan,
            "booted_revision": self.booted_revision,
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
        if is_boot_step(e):  # a refused request (404, 410) or a failed transfer is in the timeline, not progress
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
    """A node the revision's desired state declares (what the commit targets), with its boot plan
    digest (`core.bootplan`; "" when recorded before plans were: then the revision stands for it)."""

    node: str
    mac: str
    profile: str = ""
    install_once: bool = False
    reinstall: int = 0
    plan: str = ""


def plan_key(revision: str, plan: str | None) -> str:
    """What a machine boots at `revision`: its plan digest, or the revision itself when unknown."""
    return plan or f"revision:{revision}"


Plans = Mapping[tuple[str, str], str]  # (revision, mac) -> plan digest


def delivered(event: BootEvent) -> bool:
    """Whether the machine got what it asked for: not an HTTP refusal (4xx, 5xx), not an HTTP
    download the client broke off (`servers.http` records `result`: ok or aborted for a body it
    streamed), not a TFTP transfer that ended before the client acknowledged its last block
    (`servers.tftp` records `result`: ok, or error / failed / aborted / size-probe), whatever the
    stage (a kernel fetched over TFTP is a `kernel` event with `via: tftp`)."""
    status = event.detail.get("status")
    if isinstance(status, int) and status >= 400:
        return False
    if event.stage == Stage.TFTP or event.detail.get("via") == "tftp" or event.detail.get("method") == "GET":
        return bool(event.detail.get("result", "ok") == "ok")
    return True


def is_boot_step(event: BootEvent) -> bool:
    """A netboot step that moves a machine onto a plan (not DHCP, not a refusal or a failed
    transfer, not its own disk)."""
    if event.stage not in NETBOOT_STAGES and event.stage not in SEED_STAGES:
        return False
    return delivered(event) and not is_local_disk(event)


def carried_result(
    events: Iterable[BootEvent],
    plans: Plans,
    *,
    plan: str,
    since: float,
    revision: str,
    now: float,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    mac: str | None = None,
    node: str | None = None,
) -> NodeResult:
    """A machine's result at `revision`, whose plan for it is `plan` (a `plan_key`), applied at `since`.

    Its events at every revision serving the same plan count, from its last boot of ANOTHER plan
    before `since` on: a comment-only commit or a revert to what it runs changes nothing, while a
    machine that installed something else in between starts over (pending) at the revert."""
    timeline = sorted(events, key=lambda e: e.time)
    key = {e.revision: plan_key(e.revision, plans.get((e.revision, e.mac or ""))) for e in timeline}
    cut = max((e.time for e in timeline if key[e.revision] != plan and e.time < since and is_boot_step(e)),
              default=float("-inf"))
    mine = [e for e in timeline if key[e.revision] == plan and e.time >= cut]
    result = node_result(mine, revision=revision, now=now, timeout=timeout, mac=mac, node=node)
    steps = [e for e in mine if is_boot_step(e) or e.stage in REPORT_STAGES]
    booted = steps[-1].revision if steps else None
    return replace(result, plan=plan, booted_revision=booted)


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
    plans: Plans | None = None,
) -> CommitResult:
    """Every targeted node's result at `revision` (carried over from the revisions serving it the
    same plan: `carried_result`; pending when silent), plus machines not targeted that netbooted
    `revision` itself (unknown MACs, nodes removed by the commit).

    `events`: the targeted machines' events at any revision, and any machine's at `revision`;
    `plans`: the plan digest of each (revision, mac) they name."""
    plans = plans or {}
    by_mac: dict[str, list[BootEvent]] = defaultdict(list)
    name_to_mac = {t.node: t.mac for t in targets}
    for e in events:
        mac = e.mac or (name_to_mac.get(e.node) if e.node else None)
        if mac is not None:
            by_mac[mac].append(e)
    results: list[NodeResult] = []
    targeted_macs = set()
    since = now if applied is None else applied
    for t in sorted(targets, key=lambda t: t.node):
        targeted_macs.add(t.mac)
        results.append(carried_result(by_mac.pop(t.mac, ()), plans, plan=plan_key(revision, t.plan), since=since,
                                      revision=revision, now=now, timeout=timeout, mac=t.mac, node=t.node))
    for mac in sorted(by_mac):
        evs = [e for e in by_mac[mac] if e.revision == revision]
        if not any(e.stage in NETBOOT_STAGES or e.stage in SEED_STAGES or e.stage in REPORT_STAGES for e in evs):
            continue  # DHCP chatter of a machine that did not netboot this revision
        results.append(node_result(evs, revision=revision, now=now, timeout=timeout, mac=mac))
    return CommitResult(revision, applied, tuple(results), len(targets), _counts(results, targeted_macs))


@dataclass(frozen=True)
class NodeDrift:
    """The plan the newest applied commit serves a node against the plan the machine last booted."""

    node: str
    mac: str
    serving: str | None  # the newest applied revision (when it declares the node)
    serving_plan: str | None
    last_booted: str | None  # the revision that served its latest boot
    last_plan: str | None
    last: NodeResult | None  # how its latest boot went
    profile: str = ""  # as the serving commit declares it

    @property
    def drift(self) -> bool:
        return self.serving is not None and self.last_plan != self.serving_plan

    @property
    def last_outcome(self) -> Outcome:
        return self.last.outcome if self.last is not None else Outcome.PENDING

    @property
    def install_seconds(self) -> float | None:
        """From the latest attempt's first netboot step to its success."""
        r = self.last
        if r is None or r.outcome is not Outcome.SUCCEEDED or r.started is None or r.finished is None:
            return None
        return r.finished - r.started

    def as_dict(self) -> dict[str, Any]:
        r = self.last
        return {
            "node": self.node,
            "mac": self.mac,
            "serving_revision": self.serving,
            "serving_plan": self.serving_plan,
            "profile": self.profile,
            "last_booted_revision": self.last_booted,
            "last_booted_plan": self.last_plan,
            "last_outcome": str(self.last_outcome),
            "last_reason": r.reason if r is not None else "",
            "last_time": r.started if r is not None else None,
            "finished": r.finished if r is not None else None,
            "install_seconds": self.install_seconds,
            "drift": self.drift,
        }


def node_drift(
    target: Target | None,
    serving: str | None,
    events: Iterable[BootEvent],
    plans: Plans,
    *,
    node: str,
    mac: str,
    now: float,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
) -> NodeDrift:
    """`target`: the node as `serving` (the newest applied revision) declares it, or None."""
    timeline = sorted(events, key=lambda e: e.time)
    serving_plan = plan_key(serving, target.plan) if target is not None and serving is not None else None
    serving = serving if target is not None else None
    steps = [e for e in timeline if is_boot_step(e)]
    profile = target.profile if target is not None else ""
    if not steps:
        return NodeDrift(node, mac, serving, serving_plan, None, None, None, profile)
    latest = steps[-1]
    last_plan = plan_key(latest.revision, plans.get((latest.revision, latest.mac or mac)))
    last = carried_result(timeline, plans, plan=last_plan, since=float("inf"), revision=latest.revision, now=now,
                          timeout=timeout, mac=mac, node=node)
    return NodeDrift(node, mac, serving, serving_plan, latest.revision, last_plan, last, profile)

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


class CommitState(enum.StrEnum):
    """What became of a commit the daemon saw: its latest reconcile's result (`applied`,
    `rejected`, `failed`: the words of /status's history and the store's `reconciles.result`),
    except that an applied commit a newer applied one replaced is `superseded`. The same words in
    `results`, /api, /ui and /status."""

    APPLIED = "applied"  # the newest applied commit: what the machines are served now
    SUPERSEDED = "superseded"  # applied, then replaced by a newer applied commit
    REJECTED = "rejected"  # invalid: recorded with its findings, never served
    FAILED = "failed"  # never applied: its reconciles failed for a temporary reason (retried while desired)


@dataclass(frozen=True)
class CommitInfo:
    """A commit the daemon saw, as its reconcile history and the applied revisions record it."""

    revision: str
    seen: float  # first reconcile of it (or its first application)
    applied: float | None  # first time it was served; None: never
    result: str = ""  # its latest reconcile's result: applied | rejected | failed ("" when not recorded)
    reason: str = ""
    findings: tuple[Mapping[str, Any], ...] = ()
    subject: str = ""
    author: str = ""
    committed: float | None = None

    def state(self, serving: str | None) -> CommitState:
        if self.applied is not None:
            return CommitState.APPLIED if self.revision == serving else CommitState.SUPERSEDED
        return CommitState.REJECTED if self.result == CommitState.REJECTED else CommitState.FAILED

    def as_dict(self, serving: str | None) -> dict[str, Any]:
        state = self.state(serving)
        return {
            "revision": self.revision,
            "state": str(state),
            "subject": self.subject,
            "author": self.author,
            "committed": self.committed,
            "seen": self.seen,
            "applied": self.applied,
            "reason": self.reason if state in (CommitState.REJECTED, CommitState.FAILED) else "",
            "findings": [dict(f) for f in self.findings] if state is CommitState.REJECTED else [],
        }


class ResultsSource(Protocol):
    """The read queries the documents below need (adapters.store.ResultsQueries)."""

    def revisions(self, limit: int = 50, offset: int = 0) -> list[tuple[str, float]]: ...

    def revision_like(self, prefix: str) -> list[str]: ...

    def commits(self, limit: int = 50, offset: int = 0) -> list[CommitInfo]: ...

    def commit_count(self) -> int: ...

    def commit_info(self, revision: str) -> CommitInfo | None: ...

    def targets(self, revisions: Iterable[str]) -> dict[str, list[Target]]: ...

    def seqs(self, revisions: Iterable[str]) -> dict[str, int]: ...

    def runs(self, revisions: Iterable[str]) -> list[PlanSpan]: ...

    def target_page(self, revision: str, limit: int, offset: int) -> tuple[list[Target], int]: ...

    def events_of(self, revisions: Iterable[str]) -> list[BootEvent]: ...

    def stranger_events(self, revisions: Iterable[str]) -> list[BootEvent]: ...

    def events_with_plans(self, macs: Iterable[str] | None, boots_only: bool = False
                          ) -> tuple[list[BootEvent], dict[tuple[str, str], str]]: ...

    def node_revisions(self, node: str) -> list[PlanSpan]: ...


@dataclass(frozen=True)
class PlanSpan:
    """A run of consecutive applied commits (by order of application, `seq`) declaring a node the
    same way: same MAC, profile, install-once, `reinstall` and plan (the store keeps these, not a
    row per node per commit)."""

    target: Target
    first_seq: int
    last_seq: int | None  # None: the newest applied commit still declares it so
    first_revision: str
    since: float  # when its first commit was applied
    last_revision: str | None = None  # (a node's history only)
    count: int = 0  # commits in it (a node's history only)

    @property
    def key(self) -> str:
        return plan_key(self.first_revision, self.target.plan)


class UnknownCommit(LookupError):
    """`--commit` / `/api/commits/<sha>` names no revision the store knows (or several)."""


def serving_revision(src: ResultsSource) -> str | None:
    newest = src.revisions(1)
    return newest[0][0] if newest else None


def desired_revision(src: ResultsSource) -> str | None:
    """What /status calls desired: the newest commit the daemon saw, applied or not."""
    newest = src.commits(1)
    return newest[0].revision if newest else serving_revision(src)


# Above this many machines, their events are read in one pass rather than by MAC.
_SCAN_MACS = 400


def resolve_commit(src: ResultsSource, commit: str) -> str:
    seen = {c.revision for c in src.commits(100_000)}
    matches = sorted(r for r in seen if r.startswith(commit)) or src.revision_like(commit)
    if len(matches) != 1:
        raise UnknownCommit(f"commit {commit!r}: " + ("no such revision" if not matches else
                            f"ambiguous ({', '.join(m[:12] for m in matches[:5])})"))
    return matches[0]


# Machines' boot events by MAC, the plans their (revision, mac) pairs name, and a version per MAC
# that changes when its events do (the store's newest event id for it).
Timelines = tuple[Mapping[str, Sequence[BootEvent]], Plans, Mapping[str, int]]
Memo = MutableMapping[tuple[str, str, float, int], NodeResult]


def at_time(result: NodeResult, now: float, timeout: float) -> NodeResult:
    """A result evaluated earlier, at `now`: booting or installing past the timeout has timed out."""
    if result.outcome in IN_PROGRESS and result.started is not None and now - result.started > timeout:
        return replace(result, outcome=Outcome.TIMED_OUT, finished=result.started + timeout,
                       reason=_timed_out(timeout, result.reason))
    return result


def commit_results(
    src: ResultsSource,
    revisions: Sequence[tuple[str, float]],
    *,
    now: float,
    timeout: float,
    detail: bool = False,
    timelines: Callable[[set[str]], Timelines] | None = None,
    memo: Memo | None = None,
    with_nodes: bool = True,
    runs: Callable[[Sequence[str]], list[PlanSpan]] | None = None,
) -> list[CommitResult]:
    """Each applied (revision, applied time): its targets' results, carried over by plan.

    One result per node per run of commits declaring it the same way (`PlanSpan`), evaluated from
    the run's first application on, whatever the number of commits in the run: the page of 20
    commits over 10,000 nodes costs a result per node and plan change, not per node and commit.
    `detail`: each result named by its commit, with DHCP events (one commit's page).
    `with_nodes`: False for the counts alone (a page of commits).
    `timelines` and `memo`: the events kept between requests, and the results of runs computed
    before (valid while the MAC's version is the same; re-evaluated at `now` for timeouts)."""
    if not revisions:
        return []
    names = [r for r, _ in revisions]
    seqs = src.seqs(names)
    window = sorted((seqs[r], r) for r in names if r in seqs)
    order = [seq for seq, _ in window]
    spans = (runs or src.runs)(names)
    macs = {span.target.mac for span in spans}
    versions: Mapping[str, int] = {}
    by_mac: Mapping[str, Sequence[BootEvent]]
    if timelines is not None and not detail:
        by_mac, plans, versions = timelines(macs)
    else:
        events, plans = src.events_with_plans(None if len(macs) > _SCAN_MACS else macs, boots_only=not detail)
        grouped: dict[str, list[BootEvent]] = defaultdict(list)
        for e in events:
            if e.mac in macs:
                grouped[e.mac].append(e)
        by_mac = grouped
    per_revision: dict[str, list[NodeResult]] = defaultdict(list)
    # Outcome counts as differences along the window (a run adds at its first commit in the window
    # and takes away after its last): a pass per run, not per run and commit.
    steps: list[dict[Outcome, int]] = [dict.fromkeys(Outcome, 0) for _ in range(len(window) + 1)]
    for span in spans:
        lo = bisect.bisect_left(order, span.first_seq)
        hi = bisect.bisect_right(order, span.last_seq if span.last_seq is not None else order[-1])
        if lo >= hi:
            continue
        t = span.target
        timeline = by_mac.get(t.mac, ())
        key = (t.mac, span.key, span.since, versions.get(t.mac, -1))
        cached = memo.get(key) if memo is not None and versions else None
        if cached is not None:
            result = at_time(cached, now, timeout)
        elif timeline:
            result = carried_result(timeline, plans, plan=span.key, since=span.since, revision=window[hi - 1][1],
                                    now=now, timeout=timeout, mac=t.mac, node=t.node)
            if memo is not None and versions:
                memo[key] = result
        else:
            result = NodeResult(window[hi - 1][1], t.mac, t.node, Outcome.PENDING, plan=span.key)
        steps[lo][result.outcome] += 1
        steps[hi][result.outcome] -= 1
        if with_nodes:
            for _, revision in window[lo:hi]:
                per_revision[revision].append(replace(result, revision=revision) if detail else result)
    tally: dict[str, dict[Outcome, int]] = {}
    running = dict.fromkeys(Outcome, 0)
    for i, (_, revision) in enumerate(window):
        for outcome, step in steps[i].items():
            running[outcome] += step
        tally[revision] = dict(running)
    others: dict[str, dict[str, list[BootEvent]]] = defaultdict(lambda: defaultdict(list))
    for e in src.stranger_events(names):
        if e.mac:
            others[e.revision][e.mac].append(e)
    out = []
    for revision, applied in revisions:
        mine = sorted(per_revision.get(revision, ()), key=lambda r: r.node or "")
        strangers = [node_result(evs, revision=revision, now=now, timeout=timeout, mac=mac)
                     for mac, evs in sorted(others.get(revision, {}).items())
                     if any(e.stage in NETBOOT_STAGES or e.stage in SEED_STAGES or e.stage in REPORT_STAGES
                            for e in evs)]
        by = tally.get(revision) or dict.fromkeys(Outcome, 0)
        targeted = sum(by.values())
        counts = {
            "booted": targeted - by[Outcome.PENDING],
            "succeeded": by[Outcome.SUCCEEDED],
            "failed": by[Outcome.FAILED],
            "timed_out": by[Outcome.TIMED_OUT],
            "in_progress": by[Outcome.BOOTING] + by[Outcome.INSTALLING],
            "local_disk": by[Outcome.LOCAL_DISK],
            "pending": by[Outcome.PENDING],
            "other_machines": len(strangers),
        }
        out.append(CommitResult(revision, applied, (*mine, *strangers) if with_nodes else (), targeted, counts))
    return out


def commits_page(
    src: ResultsSource,
    *,
    now: float,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    limit: int = 20,
    offset: int = 0,
    commit: str | None = None,
    timelines: Callable[[set[str]], Timelines] | None = None,
    memo: Memo | None = None,
    with_nodes: bool = True,
    runs: Callable[[Sequence[str]], list[PlanSpan]] | None = None,
) -> tuple[list[CommitInfo], dict[str, CommitResult], int]:
    """The commits seen, newest first (one page, or the one `commit` names), and the results of
    the applied ones among them; the total number of commits seen."""
    if commit is not None:
        info = src.commit_info(resolve_commit(src, commit))
        infos = [info] if info is not None else []
        total = len(infos)
    else:
        infos = src.commits(limit, offset)
        total = src.commit_count()
    applied = [(c.revision, c.applied) for c in infos if c.applied is not None]
    results = commit_results(src, applied, now=now, timeout=timeout, detail=commit is not None, timelines=timelines,
                             memo=memo, with_nodes=with_nodes or commit is not None, runs=runs)
    return infos, {r.revision: r for r in results}, total


def commit_doc(info: CommitInfo, result: CommitResult | None, serving: str | None, with_events: bool = True
               ) -> dict[str, Any]:
    doc = info.as_dict(serving)
    if result is not None:
        doc.update(result.as_dict(with_events))
    else:
        doc["targeted"] = 0
        doc["nodes"] = []
    return doc


def fleet(
    src: ResultsSource, *, now: float, timeout: float = DEFAULT_BOOT_TIMEOUT, limit: int = 100, offset: int = 0,
    node: str | None = None,
) -> tuple[list[NodeDrift], int]:
    """Every node the serving commit declares (one page, by name): its plan against what it last booted."""
    serving = serving_revision(src)
    if serving is None:
        return [], 0
    targets, total = src.target_page(serving, limit, offset)
    if node is not None:
        targets = [t for t in src.targets([serving]).get(serving, []) if node in (t.node, t.mac)]
        total = len(targets)
    events, plans = src.events_with_plans([t.mac for t in targets])
    by_mac: dict[str, list[BootEvent]] = defaultdict(list)
    for e in events:
        if e.mac:
            by_mac[e.mac].append(e)
    return [node_drift(t, serving, by_mac.get(t.mac, ()), plans, node=t.node, mac=t.mac, now=now, timeout=timeout)
            for t in targets], total


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
    """What `results --format json` prints: every commit seen (applied ones per node: outcome and
    events), then each node's plan against what it last booted."""
    infos, results, total = commits_page(src, now=now, timeout=timeout, limit=limit, commit=commit)
    serving = serving_revision(src)
    docs = []
    for info in infos:
        doc = commit_doc(info, results.get(info.revision), serving, with_events)
        if node is not None:
            doc["nodes"] = [n for n in doc["nodes"] if node in (n["node"], n["mac"])]
        docs.append(doc)
    drifts, _ = fleet(src, now=now, timeout=timeout, limit=100_000, node=node)
    return {
        "generated": now,
        "boot_timeout": timeout,
        "desired_revision": desired_revision(src),
        "last_applied_revision": serving,
        "total_commits": total,
        "commits": docs,
        "nodes": [d.as_dict() for d in drifts],
    }


@dataclass(frozen=True)
class PlanRun:
    """Consecutive applied commits serving a node one plan: the newest of them stands for the run."""

    plan: str
    revisions: tuple[str, ...]  # the newest and (when others) the oldest
    count: int  # commits in the run
    result: NodeResult


def node_history(
    src: ResultsSource, name: str, *, now: float, timeout: float
) -> tuple[list[PlanRun], NodeDrift, list[BootEvent]] | None:
    """A node's result per run of commits serving it one plan (newest first), its drift and events."""
    spans = src.node_revisions(name)  # newest first
    if not spans:
        return None
    mac = spans[0].target.mac
    events, plans = src.events_with_plans([mac])
    events.sort(key=lambda e: e.time)
    merged: list[list[PlanSpan]] = []
    for span in spans:
        if merged and merged[-1][-1].key == span.key:
            merged[-1].append(span)
        else:
            merged.append([span])
    out = []
    for group in merged:
        newest, oldest = group[0].last_revision or group[0].first_revision, group[-1].first_revision
        result = carried_result(events, plans, plan=group[0].key, since=group[-1].since, revision=newest, now=now,
                                timeout=timeout, mac=mac, node=name)
        revisions = (newest,) if newest == oldest else (newest, oldest)
        out.append(PlanRun(group[0].key, revisions, sum(s.count for s in group), result))
    serving = serving_revision(src)
    current = spans[0].target if spans[0].last_seq is None else None
    drift = node_drift(current, serving, events, plans, node=name, mac=mac, now=now, timeout=timeout)
    return out, drift, events


def node_report(src: ResultsSource, name: str, *, now: float, timeout: float = DEFAULT_BOOT_TIMEOUT) -> dict[str, Any]:
    """`/api/nodes/<name>`: its drift, then per run of commits serving it one plan: the result and events."""
    history = node_history(src, name, now=now, timeout=timeout)
    if history is None:
        raise LookupError(f"no node {name!r} in any applied revision")
    runs, drift, _ = history
    return {
        **drift.as_dict(),
        "plans": [{"plan": r.plan, "revision": r.revisions[0], "revisions": list(r.revisions), "commits": r.count,
                   **r.result.as_dict()} for r in runs],
    }
