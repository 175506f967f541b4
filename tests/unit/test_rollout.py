"""Rollout decisions (core.rollout): a table of transitions, and invariants over random event
sequences (hypothesis): never more nodes in flight than max_in_flight, never a power action
without `power: true` and a powerable node, nothing started while paused."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import RolloutPolicy
from reconciler.core.outcomes import Outcome, Target
from reconciler.core.rollout import (
    POWER_OFF_REASON,
    Applied,
    ClearBootOverride,
    Event,
    NodeState,
    Observed,
    Pause,
    PowerCycle,
    PowerDone,
    PowerFailed,
    Resume,
    Rollout,
    Tick,
    Want,
    step,
    wants,
)

A, B = "a" * 40, "b" * 40
POLICY = RolloutPolicy(max_in_flight=2, on_failure="pause", power=True)
NAMES = ("n1", "n2", "n3", "n4")


def _applied(revision: str = A, policy: RolloutPolicy | None = POLICY, names: Sequence[str] = NAMES,
             manual: dict[str, str] | None = None, now: float = 0.0, declared: Sequence[str] = NAMES) -> Applied:
    return Applied(revision, policy, tuple(Want(n, f"mac-{n}", "reinstall 0 -> 1") for n in names),
                   {n: (manual or {}).get(n, "") for n in declared}, now)


def _run(events: Sequence[Event], rollout: Rollout | None = None) -> tuple[Rollout | None, list[PowerCycle]]:
    """The rollout after `events`, and the power cycles asked on the way."""
    actions: list[PowerCycle] = []
    for e in events:
        rollout, out = step(rollout, e)
        actions += [a for a in out if isinstance(a, PowerCycle)]
    return rollout, actions


def _states(rollout: Rollout | None) -> dict[str, str]:
    assert rollout is not None
    return {n.node: str(n.state) for n in rollout.nodes}


W, F, M, D, X = "waiting", "in-flight", "needs-manual-reboot", "done", "failed"

# (events, expected node states, rollout state, power cycles asked, in order)
TABLE: list[tuple[str, list[Event], dict[str, str], str, list[str]]] = [
    ("a commit starts the first wave of max_in_flight",
     [_applied()], {"n1": F, "n2": F, "n3": W, "n4": W}, "running", ["n1", "n2"]),
    ("a success frees a slot for the next node",
     [_applied(), PowerDone("n1", 1), Observed("n1", Outcome.SUCCEEDED, "phone_home", 5)],
     {"n1": D, "n2": F, "n3": F, "n4": W}, "running", ["n1", "n2", "n3"]),
    ("booting is progress, not a result",
     [_applied(), Observed("n1", Outcome.INSTALLING, "fetched user-data", 3)],
     {"n1": F, "n2": F, "n3": W, "n4": W}, "running", ["n1", "n2"]),
    ("a failure pauses: nothing more starts, in flight ones finish",
     [_applied(), Observed("n1", Outcome.FAILED, "report failure", 5),
      Observed("n2", Outcome.SUCCEEDED, "", 6)],
     {"n1": X, "n2": D, "n3": W, "n4": W}, "paused", ["n1", "n2"]),
    ("with on_failure: continue a failure frees its slot",
     [_applied(policy=RolloutPolicy(2, "continue", True)), Observed("n1", Outcome.TIMED_OUT, "", 5)],
     {"n1": X, "n2": F, "n3": F, "n4": W}, "running", ["n1", "n2", "n3"]),
    ("a BMC error fails the node with its reason and pauses",
     [_applied(), PowerFailed("n2", "BMC ipmi 10.0.0.2: no answer", 1)],
     {"n1": F, "n2": X, "n3": W, "n4": W}, "paused", ["n1", "n2"]),
    ("a node that never netboots after its power cycle fails at the timeout",
     [_applied(), Observed("n2", Outcome.BOOTING, "", 10), Tick(100, 60)],
     {"n1": X, "n2": F, "n3": W, "n4": W}, "paused", ["n1", "n2"]),
    ("booting its local disk is no reinstall",
     [_applied(policy=RolloutPolicy(1, "continue", True), names=["n1"]),
      Observed("n1", Outcome.LOCAL_DISK, "", 4)], {"n1": X}, "failed", ["n1"]),
    ("the operator's pause stops new starts; resume goes on",
     [_applied(), Pause("", 1), Observed("n1", Outcome.SUCCEEDED, "", 2)],
     {"n1": D, "n2": F, "n3": W, "n4": W}, "paused", ["n1", "n2"]),
    ("resume after the operator's pause",
     [_applied(), Pause("", 1), Observed("n1", Outcome.SUCCEEDED, "", 2), Resume(3)],
     {"n1": D, "n2": F, "n3": F, "n4": W}, "running", ["n1", "n2", "n3"]),
    ("resume after a failure goes on past the failed node",
     [_applied(), Observed("n1", Outcome.FAILED, "", 2), Resume(3)],
     {"n1": X, "n2": F, "n3": F, "n4": W}, "running", ["n1", "n2", "n3"]),
    ("without power: true nothing is powered: every node needs a manual reboot",
     [_applied(policy=RolloutPolicy(2, "pause", False))], {n: M for n in NAMES}, "waiting-for-manual-reboots", []),
    ("a node without a BMC needs a manual reboot and takes no slot",
     [_applied(manual={"n1": "no bmc: in nodes/n1.yaml"})], {"n1": M, "n2": F, "n3": F, "n4": W}, "running",
     ["n2", "n3"]),
    ("a manual node's result counts like any other",
     [_applied(manual={"n1": "no bmc"}), Observed("n1", Outcome.SUCCEEDED, "", 9)],
     {"n1": D, "n2": F, "n3": F, "n4": W}, "running", ["n2", "n3"]),
    ("all done",
     [_applied(names=["n1"]), Observed("n1", Outcome.SUCCEEDED, "", 9)], {"n1": D}, "done", ["n1"]),
    ("a newer commit: in flight finish, the failed node it asks for again starts again, the pause is lifted",
     [_applied(), Observed("n1", Outcome.FAILED, "", 2), _applied(B, names=["n1"], now=3)],
     {"n1": F, "n2": F, "n3": W, "n4": W}, "running", ["n1", "n2", "n1"]),
    ("... and then proceeds under the new commit",
     [_applied(), Observed("n1", Outcome.FAILED, "", 2), _applied(B, names=["n1"], now=3),
      Observed("n2", Outcome.SUCCEEDED, "", 4)],
     {"n1": F, "n2": D, "n3": F, "n4": W}, "running", ["n1", "n2", "n1", "n3"]),
    ("a newer commit not asking for the failed node again keeps the rollout paused",
     [_applied(), Observed("n1", Outcome.FAILED, "", 2), _applied(B, names=[], now=3)],
     {"n1": X, "n2": F, "n3": W, "n4": W}, "paused", ["n1", "n2"]),
    ("a newer commit removing a waiting node drops it",
     [_applied(), _applied(B, names=[], declared=["n1", "n2", "n3"], now=3)],
     {"n1": F, "n2": F, "n3": W}, "running", ["n1", "n2"]),
    ("the operator's pause survives a newer commit",
     [_applied(), Pause("maintenance window", 1), _applied(B, names=[], now=3)],
     {"n1": F, "n2": F, "n3": W, "n4": W}, "paused", ["n1", "n2"]),
    ("power turned off by a newer commit: waiting nodes need manual reboots",
     [_applied(), _applied(B, policy=RolloutPolicy(2, "pause", False), names=[], now=3)],
     {"n1": F, "n2": F, "n3": M, "n4": M}, "running", ["n1", "n2"]),
]


def test_transitions() -> None:
    for name, events, states, state, cycles in TABLE:
        rollout, actions = _run(events)
        assert rollout is not None, name
        assert (_states(rollout), rollout.state, [a.node for a in actions]) == (states, state, cycles), name


def test_a_newer_commit_with_no_rollout_supersedes_and_powers_nothing() -> None:
    rollout, _ = _run([_applied(), _applied(B, policy=None, names=[], now=3)])
    assert rollout is not None and rollout.state == "superseded" and rollout.superseded_by == B
    after, more = step(rollout, Observed("n1", Outcome.SUCCEEDED, "", 4))
    assert after is rollout and more == ()


def test_the_why_of_each_state_is_told() -> None:
    rollout, _ = _run([_applied(policy=RolloutPolicy(1, "pause", False), names=["n1"])])
    assert rollout is not None and rollout.nodes[0].reason == f"needs a manual reboot into the network boot: " \
                                                               f"{POWER_OFF_REASON}"
    rollout, _ = _run([_applied(), PowerFailed("n2", "BMC ipmi h:623: no answer", 1)])
    assert rollout is not None and rollout.paused == "n2 failed: BMC: BMC ipmi h:623: no answer"


def test_a_powered_node_netbooting_has_its_boot_override_cleared_once() -> None:
    rollout, _ = _run([_applied(manual={"n2": "no bmc"})])
    rollout, actions = step(rollout, Observed("n1", Outcome.PENDING, "", 1))
    assert actions == ()
    rollout, actions = step(rollout, Observed("n1", Outcome.BOOTING, "fetched kernel", 2))
    assert actions == (ClearBootOverride("n1"),)
    rollout, actions = step(rollout, Observed("n1", Outcome.SUCCEEDED, "", 3))
    assert [a for a in actions if isinstance(a, ClearBootOverride)] == []  # once
    _, actions = step(rollout, Observed("n2", Outcome.SUCCEEDED, "", 4))  # rebooted by hand: not ours
    assert [a for a in actions if isinstance(a, ClearBootOverride)] == []


def test_the_same_commit_again_changes_nothing() -> None:
    rollout, _ = _run([_applied()])
    again, actions = step(rollout, _applied(now=9))
    assert again is rollout and actions == ()


def test_a_rollout_survives_its_round_trip_through_a_dict() -> None:
    rollout, _ = _run(TABLE[3][1])
    assert rollout is not None and Rollout.from_dict(rollout.as_dict()) == rollout


def test_wants_reinstall_bumps_and_with_reinstall_on_change_changed_plans() -> None:
    before = [Target("a", "m1", "p", True, 0, "x"), Target("b", "m2", "q", False, 0, "y"),
              Target("c", "m3", "q", False, 0, "z"), Target("d", "m4", "q", False, 0, "w")]
    after = [Target("a", "m1", "p", True, 1, "x2"), Target("b", "m2", "q", False, 0, "y2"),
             Target("c", "m3", "q", False, 0, "z"), Target("d", "m9", "q", False, 1, "w"),
             Target("e", "m5", "q", False, 3, "v")]
    plain = RolloutPolicy()
    assert wants(before, after, plain) == (Want("a", "m1", "reinstall 0 -> 1"),)
    assert wants(before, after, RolloutPolicy(reinstall_on_change=True)) == (
        Want("a", "m1", "reinstall 0 -> 1"), Want("b", "m2", "boot plan changed"))
    assert wants(None, after, plain) == () and wants(before, after, None) == ()


_events = st.lists(st.one_of(
    st.builds(Observed, st.sampled_from(NAMES), st.sampled_from(list(Outcome)), st.just(""), st.floats(0, 100)),
    st.builds(PowerDone, st.sampled_from(NAMES), st.floats(0, 100)),
    st.builds(PowerFailed, st.sampled_from(NAMES), st.just("x"), st.floats(0, 100)),
    st.builds(Tick, st.floats(0, 200), st.just(50.0)),
    st.builds(Pause, st.just(""), st.floats(0, 100)),
    st.builds(Resume, st.floats(0, 100)),
    st.builds(_applied, st.sampled_from([A, B]),
              st.sampled_from([POLICY, None, RolloutPolicy(1, "continue", True), RolloutPolicy(3, "pause", False)]),
              st.lists(st.sampled_from(NAMES), unique=True), st.just({"n4": "no bmc"}), st.floats(0, 100)),
), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_events)
def test_invariants(events: list[Event]) -> None:
    rollout: Rollout | None = None
    for e in events:
        before = rollout
        rollout, actions = step(rollout, e)
        if rollout is None:
            assert actions == ()
            continue
        cleared = [a for a in actions if isinstance(a, ClearBootOverride)]
        assert all(before is not None and (b := before.node(a.node)) is not None and b.state is NodeState.IN_FLIGHT
                   and b.manual == "" for a in cleared)  # only a node the daemon powered
        actions = tuple(a for a in actions if isinstance(a, PowerCycle))
        in_flight = [n for n in rollout.nodes if n.state is NodeState.IN_FLIGHT]
        started = {a.node for a in actions}
        if actions:
            assert rollout.policy.power and not rollout.paused
            assert all(rollout.node(a.node) is not None and rollout.node(a.node).manual == ""  # type: ignore[union-attr]
                       for a in actions)
            assert "n4" not in started  # its BMC is unknown
            assert len(in_flight) <= rollout.policy.max_in_flight
        fresh = [n for n in in_flight if n.node in started]
        assert len(fresh) == len(started)
        if before is not None and before.paused and not isinstance(e, Resume | Applied):
            assert actions == ()


def test_netboot_yaml_rollout_is_read_and_checked_at_its_line() -> None:
    from reconciler.core.validate import validate
    from tests import repo_builder

    site = repo_builder.BASE["netboot.yaml"]
    good = validate(repo_builder.snapshot({"netboot.yaml": site + "rollout: {max_in_flight: 3, power: true}\n"}))
    assert good.state is not None
    assert good.state.site.rollout == RolloutPolicy(max_in_flight=3, on_failure="pause", power=True)
    assert validate(repo_builder.snapshot({})).state.site.rollout is None  # type: ignore[union-attr]
    bad = validate(repo_builder.snapshot({"netboot.yaml": site + "rollout:\n  max_in_flight: 0\n"
                                                                 "  on_failure: stop\n  power: 'yes'\n"}))
    line = len(site.splitlines()) + 2
    assert [(i.file, i.line, i.code) for i in bad.errors] == [
        ("netboot.yaml", line, "schema"), ("netboot.yaml", line + 1, "schema"), ("netboot.yaml", line + 2, "schema")]
    assert "rollout.max_in_flight" in bad.errors[0].message and "rollout.on_failure" in bad.errors[1].message
