"""Boot outcomes from events (core.outcomes): values in, values out, time only as explicit `now`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reconciler.core import outcomes
from reconciler.core.model import BootEvent
from reconciler.core.outcomes import (
    Outcome,
    Target,
    at_time,
    commit_result,
    delivered,
    is_boot_step,
    node_drift,
    node_result,
    report_verdict,
    unfinished_revisions,
)

REV = "a" * 40
REV2 = "b" * 40
MAC = "52:54:00:aa:bb:01"
HOUR = 3600.0

# The order of a Subiquity autoinstall's webhook events. The names are those real installs log on
# their serial console (`start: subiquity/Install/install/curtin_install: ...`,
# `finish: subiquity/Install/install/postinstall/run_unattended_upgrades: SUCCESS`,
# `finish: subiquity/Late/run_user_supplied: ...`, as public install logs and subiquity's own CI
# scripts show them); a real webhook capture is not possible here (no Ubuntu ISO reachable).
AUTOINSTALL: tuple[tuple[str, str, str], ...] = (
    ("subiquity/Early/run", "start", ""),
    ("subiquity/Early/run", "finish", "SUCCESS"),
    ("subiquity/Reporting/apply_autoinstall_config", "start", ""),
    ("subiquity/Reporting/apply_autoinstall_config", "finish", "SUCCESS"),
    ("subiquity/Install/install", "start", ""),
    ("subiquity/Install/install/configure_apt", "start", ""),
    ("subiquity/Install/install/configure_apt", "finish", "SUCCESS"),
    ("subiquity/Install/install/curtin_install", "start", ""),
    ("subiquity/Install/install/curtin_install/run", "start", ""),
    ("subiquity/Install/install/curtin_install/run", "finish", "WARN"),
    ("subiquity/Install/install/curtin_install", "finish", "SUCCESS"),
    ("subiquity/Install/install/postinstall/run_unattended_upgrades", "start", ""),
    ("subiquity/Install/install/postinstall/run_unattended_upgrades", "finish", "SUCCESS"),
    ("subiquity/Install/install", "finish", "SUCCESS"),
    ("subiquity/Late/run_user_supplied", "start", ""),
    ("subiquity/Late/run_user_supplied", "finish", "SUCCESS"),
)


def ev(t: float, stage: str, rev: str = REV, mac: str | None = MAC, **detail: Any) -> BootEvent:
    return BootEvent(t, stage, rev, mac=mac, node="node-1" if mac == MAC else None, client="10.10.10.201",
                     detail=detail)


def netboot(t0: float = 100.0, rev: str = REV) -> list[BootEvent]:
    """What the servers record as iPXE and cloud-init fetch a node's install, in order."""
    return [
        ev(t0, "dhcp-discover", rev),
        ev(t0 + 0.1, "dhcp-ack", rev),
        ev(t0 + 1, "tftp", rev, file="undionly.kpxe"),
        ev(t0 + 2, "ipxe-bootstrap", rev, status=200),
        ev(t0 + 3, "ipxe-script", rev, status=200),
        ev(t0 + 4, "kernel", rev, status=200),
        ev(t0 + 8, "initrd", rev, status=200),
        ev(t0 + 30, "meta-data", rev, status=200),
        ev(t0 + 30.5, "user-data", rev, status=200),
    ]


def autoinstall(t0: float, steps: Iterable[tuple[str, str, str]] = AUTOINSTALL) -> list[BootEvent]:
    out = []
    for i, (name, kind, result) in enumerate(steps):
        detail: dict[str, Any] = {"name": name, "event_type": kind, "origin": "curtin", "level": "INFO"}
        if result:
            detail["result"] = result
        out.append(ev(t0 + i, "autoinstall", **detail))
    return out


def outcome(events: Iterable[BootEvent], now: float = 200.0, timeout: float = HOUR) -> Outcome:
    return node_result(events, revision=REV, now=now, timeout=timeout).outcome


def test_a_full_simulated_install_succeeds() -> None:
    events = netboot() + autoinstall(200.0)
    assert outcome(events[:5], now=110) is Outcome.BOOTING
    assert outcome(events[:9], now=140) is Outcome.INSTALLING
    assert outcome(events[:9] + autoinstall(200.0)[:5], now=210) is Outcome.INSTALLING
    result = node_result(events, revision=REV, now=300.0)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.reason == "autoinstall subiquity/Install/install finish SUCCESS"
    assert result.started == 101.0  # the first netboot step, not the DHCP chatter
    assert result.attempts == 1
    assert [e.stage for e in result.events][:3] == ["dhcp-discover", "dhcp-ack", "tftp"]


def test_a_warning_is_not_a_failure_but_a_nested_fail_is() -> None:
    warned = [*AUTOINSTALL[:10]]  # curtin_install/run finished with WARN
    assert outcome(netboot() + autoinstall(200.0, warned), now=300) is Outcome.INSTALLING
    # A real failure mode: apt configuration fails, the installer stops at a shell prompt and the
    # parent stage's finish never arrives.
    failing = [*AUTOINSTALL[:6], ("subiquity/Install/install/configure_apt", "finish", "FAIL")]
    result = node_result(netboot() + autoinstall(200.0, failing), revision=REV, now=300.0)
    assert result.outcome is Outcome.FAILED
    assert "configure_apt" in result.reason and "FAIL" in result.reason


def test_late_commands_failing_after_the_install_turn_it_into_a_failure() -> None:
    steps = [*AUTOINSTALL[:-1], ("subiquity/Late/run_user_supplied", "finish", "FAIL")]
    assert outcome(netboot() + autoinstall(200.0, steps), now=300) is Outcome.FAILED


def test_plain_reports_and_phone_home() -> None:
    assert outcome([*netboot(), ev(150, "report", status="success", message="up")]) is Outcome.SUCCEEDED
    assert outcome([*netboot(), ev(150, "report", status="failure", message="no disk")]) is Outcome.FAILED
    assert outcome([*netboot(), ev(150, "report", status="progress")]) is Outcome.INSTALLING
    assert outcome([*netboot(), ev(150, "phone-home", instance_id="iid-1")]) is Outcome.SUCCEEDED
    # the OS phoning home does not hide an install that said it failed
    assert outcome([*netboot(), ev(150, "report", status="failure"), ev(160, "phone-home")]) is Outcome.FAILED
    assert report_verdict(ev(1, "kernel")) is None


def test_silence_times_out_by_the_clock_it_is_given() -> None:
    events = netboot()
    assert outcome(events, now=101 + HOUR) is Outcome.INSTALLING
    result = node_result(events, revision=REV, now=102 + HOUR, timeout=HOUR)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.finished == 101 + HOUR
    assert "60 min" in result.reason
    # a shorter timeout, and a boot that started again after timing out
    assert outcome(events, now=200, timeout=60) is Outcome.TIMED_OUT
    again = events + netboot(t0=1000.0)
    assert outcome(again, now=1010, timeout=60) is Outcome.INSTALLING
    assert node_result(again, revision=REV, now=1010, timeout=60).attempts == 2


def test_dhcp_alone_is_not_a_boot_and_refused_requests_are_not_progress() -> None:
    assert outcome([ev(1, "dhcp-request"), ev(2, "dhcp-ack")]) is Outcome.PENDING
    assert outcome([ev(1, "ipxe-script", status=410)]) is Outcome.PENDING


def test_local_disk_and_install_once_reboots() -> None:
    assert outcome([ev(1, "ipxe-script", status=200, local_disk="profile")]) is Outcome.LOCAL_DISK
    installed = [*netboot(), ev(150, "report", status="success"),
                 ev(300, "dhcp-ack"), ev(301, "ipxe-script", status=200, local_disk="installed")]
    assert outcome(installed, now=400) is Outcome.SUCCEEDED  # rebooting into the disk keeps the success
    # a reinstall: a new kernel after a result starts a new attempt
    reinstall = [*installed, ev(500, "ipxe-script", status=200), ev(501, "kernel", status=200)]
    result = node_result(reinstall, revision=REV, now=600)
    assert (result.outcome, result.attempts, result.started) == (Outcome.BOOTING, 2, 501)


def test_a_commit_counts_targeted_booted_and_results() -> None:
    targets = [Target("node-1", MAC), Target("node-2", "52:54:00:aa:bb:02"), Target("node-3", "52:54:00:aa:bb:03")]
    stranger = "52:54:00:ff:ff:ff"
    events = [
        *netboot(),
        ev(150, "report", status="success"),
        ev(100, "ipxe-script", mac="52:54:00:aa:bb:02", status=200),
        ev(101, "kernel", mac="52:54:00:aa:bb:02", status=200),
        ev(100, "dhcp-ack", mac="52:54:00:aa:bb:03"),
        ev(100, "ipxe-script", mac=stranger, status=404),
        ev(100, "dhcp-ack", mac="52:54:00:00:00:99"),  # DHCP chatter only: not listed
        ev(100, "kernel", rev=REV2),  # another revision: not this commit's
    ]
    result = commit_result(REV, targets, events, now=101 + 2 * HOUR, applied=50.0)
    assert [(n.node, n.outcome) for n in result.nodes] == [
        ("node-1", Outcome.SUCCEEDED),
        ("node-2", Outcome.TIMED_OUT),
        ("node-3", Outcome.PENDING),
        (None, Outcome.PENDING),
    ]
    assert result.nodes[3].mac == stranger
    assert result.summary() == {
        "revision": REV, "applied": 50.0, "targeted": 3, "booted": 2, "succeeded": 1, "failed": 0,
        "timed_out": 1, "in_progress": 0, "local_disk": 0, "pending": 1, "other_machines": 1,
    }
    doc = result.as_dict()
    assert doc["nodes"][0]["outcome"] == "succeeded"
    assert [e["stage"] for e in doc["nodes"][0]["events"]][-1] == "report"


REV3 = "c" * 40
P1, P2 = "1111111111111111", "2222222222222222"


def success(t0: float, rev: str) -> list[BootEvent]:
    return [*netboot(t0, rev), ev(t0 + 50, "report", rev, status="success")]


def at(revision: str, plan: str, events: Iterable[BootEvent], applied: float, now: float = 5000.0) -> Outcome:
    """node-1's outcome at `revision` serving it `plan`, with `events` over every revision."""
    return commit_result(revision, [Target("node-1", MAC, plan=plan)], events, now=now, applied=applied,
                         plans=PLANS).nodes[0].outcome


PLANS = {(REV, MAC): P1, (REV2, MAC): P2, (REV3, MAC): P1}


def test_a_commit_that_does_not_change_a_nodes_plan_carries_its_outcome_over() -> None:
    """Issue 24: the state follows what the machine boots, not the commit hash (failed on the old code:
    every new commit turned every node pending)."""
    installed = success(100.0, REV)
    # a comment-only commit serving node-1 the same plan P1: still succeeded
    assert at(REV3, P1, installed, applied=1000.0) == Outcome.SUCCEEDED
    # a commit changing its plan (P2): pending until it boots it
    assert at(REV2, P2, installed, applied=1000.0) == Outcome.PENDING
    # reverted to P1 before the machine booted P2: its P1 install stands, no drift
    assert at(REV3, P1, installed, applied=2000.0) == Outcome.SUCCEEDED
    drift = node_drift(Target("node-1", MAC, plan=P1), REV3, installed, PLANS, node="node-1", mac=MAC, now=5000)
    assert (drift.last_booted, drift.last_outcome, drift.drift) == (REV, Outcome.SUCCEEDED, False)
    assert drift.install_seconds == 150.0 - 101.0  # from its first netboot step (TFTP) to the report


def test_a_machine_that_installed_another_plan_in_between_starts_over_at_the_revert() -> None:
    events = [*success(100.0, REV), *success(1100.0, REV2)]  # installed P1, then P2
    assert at(REV2, P2, events, applied=1000.0) == Outcome.SUCCEEDED
    assert at(REV3, P1, events, applied=2000.0) == Outcome.PENDING  # the revert: it runs P2 now
    assert at(REV, P1, events, applied=50.0) == Outcome.SUCCEEDED  # history: what it did at REV stays
    drift = node_drift(Target("node-1", MAC, plan=P1), REV3, events, PLANS, node="node-1", mac=MAC, now=5000)
    assert (drift.last_booted, drift.last_plan, drift.drift) == (REV2, P2, True)
    # without plans (a store from before them), every revision is a plan of its own
    assert at(REV3, "", success(100.0, REV), applied=1000.0) == Outcome.PENDING


def test_drift_is_the_plan_last_booted_against_the_serving_one() -> None:
    never = node_drift(Target("node-1", MAC, plan=P1), REV, [], PLANS, node="node-1", mac=MAC, now=1000)
    assert (never.drift, never.last_booted, never.as_dict()["last_booted_revision"]) == (True, None, None)
    booted = node_drift(Target("node-1", MAC, plan=P1), REV, netboot(500.0), PLANS, node="node-1", mac=MAC, now=600)
    assert (booted.drift, booted.last_outcome) == (False, Outcome.INSTALLING)
    # a local-disk boot or DHCP at another plan is no boot of that plan
    disk = [*success(100.0, REV), ev(3000, "dhcp-ack", REV2), ev(3001, "ipxe-script", REV2, status=200,
                                                                   local_disk="installed (install_once)")]
    assert node_drift(Target("node-1", MAC, plan=P2), REV2, disk, PLANS, node="node-1", mac=MAC,
                      now=4000).last_plan == P1


def test_unfinished_installs_name_their_revisions() -> None:
    events = [*netboot(rev=REV), *netboot(rev=REV2), ev(150, "report", rev=REV2, status="success")]
    assert unfinished_revisions(events, now=200) == {REV}
    assert unfinished_revisions(events, now=200 + HOUR) == set()


def test_a_result_kept_between_requests_times_out_by_the_clock() -> None:
    kept = node_result(netboot(100.0), revision=REV, now=200.0)
    assert kept.outcome is Outcome.INSTALLING
    assert at_time(kept, 200.0 + HOUR, HOUR).outcome is Outcome.TIMED_OUT
    assert at_time(kept, 200.0, HOUR) == kept


def test_a_commits_state_is_its_latest_reconciles_result_or_superseded() -> None:
    """One vocabulary (issue 24): applied / superseded / rejected / failed, the words of /status's
    history; no second field saying the same thing another way (fails on the old code: serving,
    retrying, and a `reconcile_result` of `invalid` beside `rejected`)."""
    applied = outcomes.CommitInfo("a" * 40, seen=1.0, applied=1.0, result="applied")
    assert (applied.state("a" * 40), applied.state("b" * 40)) == ("applied", "superseded")
    rejected = outcomes.CommitInfo("c" * 40, seen=2.0, applied=None, result="rejected", reason="1 error(s)",
                                   findings=({"file": "nodes/x.yaml"},))
    failed = outcomes.CommitInfo("d" * 40, seen=3.0, applied=None, result="failed", reason="source unavailable")
    assert (rejected.state(None), failed.state(None)) == ("rejected", "failed")
    doc = rejected.as_dict(None)
    assert "reconcile_result" not in doc and doc["findings"] == [{"file": "nodes/x.yaml"}]
    assert failed.as_dict(None)["reason"] == "source unavailable" and failed.as_dict(None)["findings"] == []
    assert {str(s) for s in outcomes.CommitState} == {"applied", "superseded", "rejected", "failed"}


def test_a_failed_or_probing_tftp_transfer_is_no_boot_step() -> None:
    """The TFTP server records every transfer with its `result`; only a whole file is progress."""
    dhcp = netboot()[:2]
    for result in ("failed", "aborted", "error", "size-probe"):
        cut = ev(101.0, "kernel", result=result, via="tftp", bytes=4096, file="/r/x/assets/vmlinuz")
        probe = ev(101.0, "tftp", result=result, bytes=0, file="shimx64.efi")
        assert outcome([*dhcp, cut, probe], now=110) is Outcome.PENDING, result
        assert not is_boot_step(cut) and not delivered(probe)
    whole = ev(102.0, "kernel", result="ok", via="tftp", bytes=14_000_000)
    got = node_result([*dhcp, ev(101.0, "kernel", result="failed", via="tftp"), whole], revision=REV, now=110)
    assert (got.outcome, got.started, got.attempts) == (Outcome.BOOTING, 102.0, 1)
    # over HTTP a kernel event has a status, no result: as before
    assert is_boot_step(ev(101.0, "kernel", status=200)) and not is_boot_step(ev(101.0, "kernel", status=404))
