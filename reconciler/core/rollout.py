"""Rollouts: which nodes an applied commit reinstalls, and in what waves, as pure transitions.

Called by the daemon's rollout runner (`daemon.rollouts`), which feeds events in, carries the
actions out (BMC calls, in its own thread), keeps the value in the results store, and shows it
(/status, /api/rollouts, `results`, /ui/). Nothing here does I/O or reads a clock.

    step(rollout | None, event) -> (rollout | None, actions)

- `Applied`: a commit was applied. `wants(previous, current, policy)` says which nodes it asks to
  reinstall: its `reinstall` counter changed, or (`reinstall_on_change`, profile not install-once)
  its boot plan did. A rollout still running is superseded: nodes in flight finish, waiting
  ones and the commit's wants wait under the new commit, failed ones stay failed (and keep a
  `pause` rollout paused) unless the commit asks for them again. An operator's pause carries over.
- While not paused, waiting nodes start, at most `max_in_flight` in flight: a node the daemon
  can power (`power: true` and a BMC with credentials) gets a `PowerCycle` action (one-time PXE,
  power cycle) and is in flight; any other is `needs-manual-reboot`, with the reason, and takes
  no slot. No power action is ever decided without `power: true`.
- `Observed`: a node's boot result since it was started: succeeded -> done; failed, timed out, or
  its local disk -> failed; the first sign of a powered node netbooting asks `ClearBootOverride`.
  `PowerFailed` (a BMC error) -> failed with the reason. A failure pauses the rollout
  (`on_failure: pause`) or not (`continue`). `Tick`: a node in flight with no netboot seen
  `timeout` seconds after its power cycle has failed.
- `Pause` / `Resume`: the operator's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from reconciler.core.model import RolloutPolicy
from reconciler.core.outcomes import Outcome, Target


class NodeState(enum.StrEnum):
    WAITING = "waiting"
    IN_FLIGHT = "in-flight"
    MANUAL = "needs-manual-reboot"
    DONE = "done"
    FAILED = "failed"


UNFINISHED = frozenset({NodeState.WAITING, NodeState.IN_FLIGHT, NodeState.MANUAL})
POWER_OFF_REASON = "rollout.power is not true in netboot.yaml: the daemon powers nothing"


@dataclass(frozen=True)
class Want:
    """A node the applied commit asks to reinstall, and why."""

    node: str
    mac: str
    why: str


@dataclass(frozen=True)
class NodeRollout:
    node: str
    mac: str
    why: str  # why it reinstalls: "reinstall 0 -> 1", "boot plan changed"
    state: NodeState
    revision: str  # the commit it reinstalls for
    manual: str = ""  # why the daemon cannot power it ("" : it can)
    reason: str = ""  # why it is in its state
    outcome: str = ""  # its boot's outcome since it started, as last observed
    started: float | None = None  # power cycle asked (or manual reboot asked for)
    finished: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "mac": self.mac, "why": self.why, "state": str(self.state),
                "revision": self.revision, "manual": self.manual, "reason": self.reason, "outcome": self.outcome,
                "started": self.started, "finished": self.finished}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeRollout:
        return cls(d["node"], d["mac"], d["why"], NodeState(d["state"]), d["revision"], d.get("manual", ""),
                   d.get("reason", ""), d.get("outcome", ""), d.get("started"), d.get("finished"))


PausedBy = Literal["", "failure", "operator"]


@dataclass(frozen=True)
class Rollout:
    revision: str
    policy: RolloutPolicy
    nodes: tuple[NodeRollout, ...]  # by name
    created: float
    updated: float
    paused: str = ""  # why it is paused ("": it is not)
    paused_by: PausedBy = ""
    supersedes: str = ""  # the revision of the rollout it took over from
    superseded_by: str = ""

    @property
    def finished(self) -> bool:
        return all(n.state not in UNFINISHED for n in self.nodes)

    @property
    def state(self) -> str:
        if self.superseded_by:
            return "superseded"
        if self.finished:
            return "failed" if any(n.state is NodeState.FAILED for n in self.nodes) else "done"
        if self.paused:
            return "paused"
        busy = any(n.state in (NodeState.WAITING, NodeState.IN_FLIGHT) for n in self.nodes)
        return "running" if busy else "waiting-for-manual-reboots"

    def node(self, name: str) -> NodeRollout | None:
        return next((n for n in self.nodes if n.node == name), None)

    def counts(self) -> dict[str, int]:
        return {str(s): sum(1 for n in self.nodes if n.state is s) for s in NodeState}

    def as_dict(self) -> dict[str, Any]:
        p = self.policy
        return {"revision": self.revision, "state": self.state, "paused": self.paused, "paused_by": self.paused_by,
                "created": self.created, "updated": self.updated, "supersedes": self.supersedes,
                "superseded_by": self.superseded_by,
                "policy": {"max_in_flight": p.max_in_flight, "on_failure": p.on_failure, "power": p.power,
                           "reinstall_on_change": p.reinstall_on_change},
                "counts": self.counts(), "nodes": [n.as_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rollout:
        p = d["policy"]
        policy = RolloutPolicy(int(p["max_in_flight"]), "continue" if p["on_failure"] == "continue" else "pause",
                               bool(p["power"]), bool(p["reinstall_on_change"]))
        paused_by: PausedBy = "operator" if d["paused_by"] == "operator" else "failure" if d["paused_by"] else ""
        return cls(d["revision"], policy, tuple(NodeRollout.from_dict(n) for n in d["nodes"]), float(d["created"]),
                   float(d["updated"]), d["paused"], paused_by, d.get("supersedes", ""), d.get("superseded_by", ""))


# -- events and actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    revision: str
    policy: RolloutPolicy | None  # the commit's `rollout:`
    wants: tuple[Want, ...]
    nodes: Mapping[str, str]  # every node the commit declares -> why the daemon cannot power it ("": it can)
    now: float


@dataclass(frozen=True)
class Observed:
    node: str
    outcome: Outcome  # its boot since it started (core.outcomes.node_result)
    reason: str
    now: float


@dataclass(frozen=True)
class PowerDone:
    node: str
    now: float


@dataclass(frozen=True)
class PowerFailed:
    node: str
    reason: str
    now: float


@dataclass(frozen=True)
class Tick:
    now: float
    timeout: float  # seconds a node in flight may go without netbooting


@dataclass(frozen=True)
class Pause:
    reason: str
    now: float


@dataclass(frozen=True)
class Resume:
    now: float


Event = Applied | Observed | PowerDone | PowerFailed | Tick | Pause | Resume


@dataclass(frozen=True)
class PowerCycle:
    """One-time network boot, then power off and on, through the node's BMC."""

    node: str
    revision: str


@dataclass(frozen=True)
class ClearBootOverride:
    """The node netbooted after its power cycle: its BMC's one-time boot setting goes back to none
    (some Redfish services keep `Once` as `Continuous`: every later boot would netboot)."""

    node: str


Action = PowerCycle | ClearBootOverride


# -- decisions -----------------------------------------------------------------------------------


def wants(previous: Sequence[Target] | None, current: Sequence[Target], policy: RolloutPolicy | None
          ) -> tuple[Want, ...]:
    """The nodes `current` (an applied commit's targets) asks to reinstall, after `previous` (the
    commit applied before it; None: none was). A node new to the repository or on another
    machine (MAC) is not reinstalled: nothing of ours was installed there."""
    if previous is None or policy is None:
        return ()
    before = {t.node: t for t in previous}
    out = []
    for t in sorted(current, key=lambda t: t.node):
        p = before.get(t.node)
        if p is None or p.mac != t.mac:
            continue
        if t.reinstall != p.reinstall:
            out.append(Want(t.node, t.mac, f"reinstall {p.reinstall} -> {t.reinstall}"))
        elif policy.reinstall_on_change and not t.install_once and t.plan and p.plan and t.plan != p.plan:
            out.append(Want(t.node, t.mac, "boot plan changed"))
    return tuple(out)


def step(rollout: Rollout | None, event: Event) -> tuple[Rollout | None, tuple[Action, ...]]:
    if isinstance(event, Applied):
        return _applied(rollout, event)
    if rollout is None or rollout.superseded_by:
        return rollout, ()
    if isinstance(event, Observed):
        observed, actions = _advance(_observed(rollout, event), event.now)
        return observed, _netbooted(rollout, event) + actions
    if isinstance(event, PowerDone):
        return _advance(_set(rollout, event.node, event.now, {NodeState.IN_FLIGHT},
                             reason="power-cycled with a one-time network boot; waiting for its boot result"),
                        event.now)
    if isinstance(event, PowerFailed):
        return _advance(_fail(rollout, event.node, f"BMC: {event.reason}", event.now, {NodeState.IN_FLIGHT}),
                        event.now)
    if isinstance(event, Tick):
        return _advance(_tick(rollout, event), event.now)
    if isinstance(event, Pause):
        if rollout.finished:
            return rollout, ()
        return replace(rollout, paused=event.reason or "paused by an operator", paused_by="operator",
                       updated=event.now), ()
    return _advance(replace(rollout, paused="", paused_by="", updated=event.now), event.now)


def _applied(old: Rollout | None, ev: Applied) -> tuple[Rollout | None, tuple[Action, ...]]:
    running = old is not None and not old.superseded_by and not old.finished
    if old is not None and old.revision == ev.revision:
        return old, ()  # the same commit again (a restart): its rollout goes on
    if ev.policy is None:
        return (replace(old, superseded_by=ev.revision, updated=ev.now) if running and old is not None else old), ()
    wanted = {w.node: w for w in ev.wants if w.node in ev.nodes}
    nodes: list[NodeRollout] = []
    if running and old is not None:
        for n in old.nodes:
            if n.node not in ev.nodes:
                continue  # the commit removed it
            if n.state is NodeState.IN_FLIGHT:
                nodes.append(n)  # it finishes
                wanted.pop(n.node, None)
            elif n.node in wanted:
                continue
            elif n.state in (NodeState.WAITING, NodeState.MANUAL):
                nodes.append(replace(n, state=NodeState.WAITING, revision=ev.revision, manual=ev.nodes[n.node],
                                     reason=f"carried over from the rollout of {old.revision[:12]}", outcome="",
                                     started=None))
            elif n.state is NodeState.FAILED:
                nodes.append(n)
    for w in wanted.values():
        nodes.append(NodeRollout(w.node, w.mac, w.why, NodeState.WAITING, ev.revision, manual=ev.nodes[w.node]))
    if not nodes:
        return (replace(old, superseded_by=ev.revision, updated=ev.now) if running and old is not None else old), ()
    paused, paused_by = "", ""
    if running and old is not None and old.paused_by == "operator":
        paused, paused_by = old.paused, "operator"
    failed = [n for n in nodes if n.state is NodeState.FAILED]
    if not paused and failed and ev.policy.on_failure == "pause":
        paused, paused_by = _failure_pause(failed[0]), "failure"
    rollout = Rollout(ev.revision, ev.policy, tuple(sorted(nodes, key=lambda n: n.node)), ev.now, ev.now,
                      paused, "operator" if paused_by == "operator" else "failure" if paused_by else "",
                      supersedes=old.revision if running and old is not None else "")
    return _advance(rollout, ev.now)


def _failure_pause(node: NodeRollout) -> str:
    return f"{node.node} failed: {node.reason}"


def _advance(rollout: Rollout, now: float) -> tuple[Rollout, tuple[Action, ...]]:
    """Start waiting nodes while the rollout runs and a slot is free."""
    if rollout.paused or rollout.superseded_by:
        return rollout, ()
    in_flight = sum(1 for n in rollout.nodes if n.state is NodeState.IN_FLIGHT)
    actions: list[Action] = []
    nodes = []
    for node in rollout.nodes:
        n = node
        if n.state is NodeState.WAITING:
            manual = n.manual if rollout.policy.power else POWER_OFF_REASON
            if manual:
                n = replace(n, state=NodeState.MANUAL, manual=manual, started=now,
                            reason=f"needs a manual reboot into the network boot: {manual}")
            elif in_flight < rollout.policy.max_in_flight:
                in_flight += 1
                n = replace(n, state=NodeState.IN_FLIGHT, started=now, reason="power cycle asked of its BMC")
                actions.append(PowerCycle(n.node, n.revision))
        nodes.append(n)
    if not actions and tuple(nodes) == rollout.nodes:
        return rollout, ()
    return replace(rollout, nodes=tuple(nodes), updated=now), tuple(actions)


def _set(rollout: Rollout, name: str, now: float, states: set[NodeState], **changes: Any) -> Rollout:
    nodes = tuple(replace(n, **changes) if n.node == name and n.state in states else n for n in rollout.nodes)
    return rollout if nodes == rollout.nodes else replace(rollout, nodes=nodes, updated=now)


def _fail(rollout: Rollout, name: str, reason: str, now: float, states: set[NodeState]) -> Rollout:
    failed = _set(rollout, name, now, states, state=NodeState.FAILED, reason=reason, finished=now)
    node = failed.node(name)
    if failed is rollout or node is None or rollout.policy.on_failure != "pause" or rollout.paused:
        return failed
    return replace(failed, paused=_failure_pause(node), paused_by="failure")


_FAILURES = {Outcome.FAILED: "its boot failed", Outcome.TIMED_OUT: "its boot timed out",
             Outcome.LOCAL_DISK: "it booted its local disk, not the reinstall"}


def _observed(rollout: Rollout, ev: Observed) -> Rollout:
    watched = {NodeState.IN_FLIGHT, NodeState.MANUAL}
    if ev.outcome is Outcome.SUCCEEDED:
        return _set(rollout, ev.node, ev.now, watched, state=NodeState.DONE, outcome=str(ev.outcome),
                    reason=ev.reason or "succeeded", finished=ev.now)
    if ev.outcome in _FAILURES:
        failing = _set(rollout, ev.node, ev.now, watched, outcome=str(ev.outcome))
        reason = _FAILURES[ev.outcome] + (f": {ev.reason}" if ev.reason else "")
        return _fail(failing, ev.node, reason, ev.now, watched)
    if ev.outcome in (Outcome.BOOTING, Outcome.INSTALLING):
        return _set(rollout, ev.node, ev.now, watched, outcome=str(ev.outcome), reason=ev.reason or str(ev.outcome))
    return rollout


def _netbooted(rollout: Rollout, ev: Observed) -> tuple[Action, ...]:
    """A node the daemon power-cycled, seen netbooting for the first time since."""
    n = rollout.node(ev.node)
    first = n is not None and n.state is NodeState.IN_FLIGHT and n.outcome in ("", str(Outcome.PENDING))
    return (ClearBootOverride(ev.node),) if first and ev.outcome is not Outcome.PENDING else ()


def _tick(rollout: Rollout, ev: Tick) -> Rollout:
    for n in rollout.nodes:
        silent = n.outcome in ("", str(Outcome.PENDING))
        if n.state is NodeState.IN_FLIGHT and silent and n.started is not None and ev.now - n.started > ev.timeout:
            reason = f"no netboot seen {ev.timeout / 60:g} min after its power cycle"
            rollout = _fail(rollout, n.node, reason, ev.now, {NodeState.IN_FLIGHT})
    return rollout


def summary(rollout: Rollout | None) -> dict[str, Any] | None:
    """/status's view: the rollout's state, why, and its counts."""
    if rollout is None:
        return None
    return {"revision": rollout.revision, "state": rollout.state, "paused": rollout.paused,
            "counts": rollout.counts(), "updated": rollout.updated,
            "nodes": {n.node: str(n.state) + (f": {n.reason}" if n.reason else "") for n in rollout.nodes}}

