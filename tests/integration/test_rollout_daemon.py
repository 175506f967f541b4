"""Rollouts through a real daemon process and real BMCs (OpenIPMI's ipmi_sim on loopback): a commit
bumping `reinstall` is rolled out in waves gated by the nodes' boot reports, a failure pauses it,
the state survives a restart, the operator resumes it (signed like the webhook), a fixing commit
reinstalls the failed node. The machines themselves are the test: it posts each node's boot report
to /report/<mac> with the node's token, as the installed system would (tests/e2e/test_rollout.py
has QEMU guests do it). Safe by default: a node without a BMC needs a manual reboot, and without
`power: true` nothing is powered. The BMC password appears nowhere the daemon writes or answers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from reconciler.core import template
from tests.integration.daemon_support import ROOT, DaemonProcess, WorkTree, http_get, http_post, wait_for
from tests.ipmi_support import PASSWORD, Sim, ipmi_sim
from tests.support import write_bmc_credentials

MACS = {"db-1": "52:54:00:aa:bb:10", "node-1": "52:54:00:aa:bb:01", "node-2": "52:54:00:aa:bb:02",
        "node-3": "52:54:00:aa:bb:03"}
POWERED = ("db-1", "node-1", "node-2")  # node-3 has no BMC
SECRET = "rollout-operator-secret"


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[dict[str, Sim]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(ipmi_sim(tmp_path / f"bmc-{name}")) for name in POWERED}


def _node_text(tree: WorkTree, name: str) -> str:
    return (tree.path / "nodes" / f"{name}.yaml").read_text()


def _bump(tree: WorkTree, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        text = _node_text(tree, name)
        lines = [line for line in text.splitlines() if not line.startswith("reinstall:")]
        current = next((int(line.split(":")[1]) for line in text.splitlines() if line.startswith("reinstall:")), 0)
        out[f"nodes/{name}.yaml"] = "\n".join([*lines, f"reinstall: {current + 1}"]) + "\n"
    return out


def _rollouts(daemon: DaemonProcess) -> dict[str, Any]:
    code, body = http_get(daemon.url + "/api/rollouts")
    assert code == 200, body
    return dict(json.loads(body))


def _states(daemon: DaemonProcess) -> dict[str, str]:
    current = _rollouts(daemon)["current"] or {"nodes": []}
    return {n["node"]: n["state"] for n in current["nodes"]}


def _report(daemon: DaemonProcess, node: str, revision: str, status: str) -> None:
    secret = (daemon.state_dir / "report-secret").read_bytes().strip()
    token = template.report_token(secret, node, revision)
    body = json.dumps({"status": status, "message": f"test {status}"}).encode()
    code, reply = http_post(f"{daemon.url}/report/{MACS[node]}?token={token}", body,
                            {"Content-Type": "application/json"})
    assert code == 200, reply


def _cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "rollout", *args, "--url", daemon.url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def _pxe_boots(sim: Sim) -> int:
    return sim.events().count(["booted", "pxe"])


def test_a_reinstall_rolls_out_in_waves_gated_by_boot_reports(tmp_path: Path, sims: dict[str, Sim]) -> None:
    tree = WorkTree(tmp_path / "work")
    files = {f"nodes/{name}.yaml": _node_text(tree, name)
             + f"bmc: {{driver: ipmi, address: '127.0.0.1:{sim.port}', credentials: lab}}\n"
             for name, sim in sims.items()}
    site = (tree.path / "netboot.yaml").read_text()
    files["netboot.yaml"] = site + "rollout: {max_in_flight: 1, on_failure: pause, power: true}\n"
    tree.commit("BMCs and a rollout policy", files)
    creds = tmp_path / "bmc-credentials.yaml"
    write_bmc_credentials(creds, "lab", PASSWORD)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    state = tmp_path / "state"
    extra = ["--interval", "3600", "--bmc-credentials", str(creds), "--webhook-secret-file", str(secret_file)]
    daemon = DaemonProcess(str(tree.path), state, extra).start()
    try:
        daemon.wait_served(tree.head())
        assert _rollouts(daemon)["current"] is None  # the first commit reinstalls nothing
        assert all(_pxe_boots(sim) == 0 for sim in sims.values())

        bump = tree.commit("reinstall four", _bump(tree, ["db-1", "node-1", "node-2", "node-3"]))
        daemon.wait_served(bump)
        # Wave 1: db-1 alone (max_in_flight 1); node-3 has no BMC: reported, never powered.
        wait_for(lambda: _pxe_boots(sims["db-1"]) == 1, "db-1's one-time PXE power cycle", timeout=60)
        states = wait_for(lambda: (s := _states(daemon)) and s.get("db-1") == "in-flight" and s, "db-1 in flight")
        assert states == {"db-1": "in-flight", "node-1": "waiting", "node-2": "waiting",
                          "node-3": "needs-manual-reboot"}
        node3 = next(n for n in _rollouts(daemon)["current"]["nodes"] if n["node"] == "node-3")
        assert "no bmc:" in node3["reason"]
        events = sims["db-1"].events()
        assert events.index(["set", "boot", "pxe"]) < events.index(["booted", "pxe"])  # (it was off)
        assert _pxe_boots(sims["node-1"]) == 0

        _report(daemon, "db-1", bump, "success")  # wave 2: node-1
        wait_for(lambda: _pxe_boots(sims["node-1"]) == 1, "node-1's power cycle after db-1 succeeded", timeout=60)
        _report(daemon, "node-1", bump, "failure")  # pauses: node-2 waits
        current = wait_for(lambda: (c := _rollouts(daemon)["current"]) and c["state"] == "paused" and c,
                           "the rollout to pause", timeout=60)
        assert current["paused"].startswith("node-1 failed: its boot failed: report failure")
        status = daemon.status_doc()["rollout"]
        assert status["state"] == "paused" and status["nodes"]["node-2"] == "waiting"
        result = _cli(daemon, "status")
        assert result.returncode == 1 and "paused (node-1 failed" in result.stdout, result.stdout
        code, page = http_get(daemon.url + "/ui/")
        assert code == 200 and b'<section id="rollout" data-state="paused">' in page
        assert b'data-node="node-1" data-state="failed"' in page and b"node-1 failed: its boot failed" in page
        assert b'data-node="node-3" data-state="needs-manual-reboot"' in page

        # The state survives a restart: still paused, node-2 still waiting and never powered.
        assert daemon.stop() == 0
        daemon = DaemonProcess(str(tree.path), state, extra, port=daemon.port).start()
        assert _states(daemon) == {"db-1": "done", "node-1": "failed", "node-2": "waiting",
                                   "node-3": "needs-manual-reboot"}
        assert _rollouts(daemon)["current"]["state"] == "paused" and _pxe_boots(sims["node-2"]) == 0

        # Resume is an operator action, signed like the webhook.
        assert _cli(daemon, "resume").returncode == 2  # no --secret-file
        wrong = tmp_path / "wrong"
        wrong.write_text("not-it")
        refused = _cli(daemon, "resume", "--secret-file", str(wrong))
        assert refused.returncode == 1 and "401" in refused.stderr
        code, _ = http_post(daemon.url + "/api/rollouts/resume", b"{}", {"Content-Type": "application/json"})
        assert code == 401
        assert _pxe_boots(sims["node-2"]) == 0
        resumed = _cli(daemon, "resume", "--secret-file", str(secret_file))
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: _pxe_boots(sims["node-2"]) == 1, "node-2's power cycle after resume", timeout=60)
        _report(daemon, "node-2", bump, "success")
        _report(daemon, "node-3", bump, "success")  # rebooted by hand
        wait_for(lambda: _rollouts(daemon)["current"]["state"] == "failed", "the rollout to finish, node-1 failed",
                 timeout=90, every=0.5)  # node-3 needs a manual reboot: read every 10 polls

        # A fixing commit asks for node-1 again: a new rollout reinstalls it.
        fix = tree.commit("node-1 again", _bump(tree, ["node-1"]))
        daemon.wait_served(fix)
        wait_for(lambda: _pxe_boots(sims["node-1"]) == 2, "node-1's second power cycle", timeout=60)
        _report(daemon, "node-1", fix, "success")
        doc = wait_for(lambda: (r := _rollouts(daemon)) and r["current"]["state"] == "done" and r, "the fix's rollout",
                       timeout=60)
        assert doc["current"]["revision"] == fix and [h["revision"] for h in doc["history"]] == [fix, bump]

        results = subprocess.run([sys.executable, "-m", "reconciler", "results", "--state-dir", str(state),
                                  "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                 check=True)
        rollouts = json.loads(results.stdout)["rollouts"]
        assert [(r["revision"], r["state"]) for r in rollouts] == [(fix, "done"), (bump, "failed")]
        assert {n["node"]: n["state"] for n in rollouts[1]["nodes"]}["node-1"] == "failed"
        text = subprocess.run([sys.executable, "-m", "reconciler", "results", "--state-dir", str(state)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True).stdout
        assert f"rollout of {fix[:12]}: done" in text

        # The password is nowhere: not in /status, /api, the log, the state directory's files.
        seen = [json.dumps(daemon.status_doc()), json.dumps(_rollouts(daemon)), daemon.log()]
        for path in state.rglob("*"):
            if path.is_file() and not path.is_symlink():
                seen.append(path.read_bytes().decode(errors="replace"))
        diff = subprocess.run([sys.executable, "-m", "reconciler", "diff", "--repo", str(tree.path), bump, fix],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        seen.append(diff.stdout + diff.stderr)
        assert not [text[:80] for text in seen if PASSWORD in text]
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()


def test_without_power_true_nothing_is_powered(tmp_path: Path, sims: dict[str, Sim]) -> None:
    tree = WorkTree(tmp_path / "work")
    sim = sims["node-1"]
    tree.commit("a BMC, a rollout without power", {
        "nodes/node-1.yaml": _node_text(tree, "node-1")
        + f"bmc: {{driver: ipmi, address: '127.0.0.1:{sim.port}', credentials: lab}}\n",
        "netboot.yaml": (tree.path / "netboot.yaml").read_text() + "rollout: {max_in_flight: 2}\n"})
    creds = tmp_path / "bmc-credentials.yaml"
    write_bmc_credentials(creds, "lab", PASSWORD)
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600", "--bmc-credentials",
                                                                 str(creds)]).start()
    try:
        daemon.wait_served(tree.head())
        bump = tree.commit("reinstall node-1", _bump(tree, ["node-1"]))
        daemon.wait_served(bump)
        current = wait_for(lambda: _rollouts(daemon)["current"], "the rollout")
        node = current["nodes"][0]
        assert (node["node"], node["state"]) == ("node-1", "needs-manual-reboot")
        assert "rollout.power is not true" in node["reason"]
        assert current["state"] == "waiting-for-manual-reboots"
        code, body = http_post(daemon.url + "/api/rollouts/pause", b"{}", {})
        assert code == 403 and b"no --webhook-secret-file" in body  # no secret: no operator endpoint
        _report(daemon, "node-1", bump, "success")
        wait_for(lambda: _rollouts(daemon)["current"]["state"] == "done", "node-1's report to finish it",
                 timeout=90, every=0.5)  # a node needing a manual reboot: read every 10 polls
        assert sim.events() == []  # never asked anything
    finally:
        daemon.stop()


def test_a_bmc_that_does_not_answer_fails_its_node_and_the_daemon_serves_on(tmp_path: Path) -> None:
    import socket

    from tests.support import free_port

    dead = free_port(socket.SOCK_DGRAM)  # nothing answers there
    tree = WorkTree(tmp_path / "work")
    tree.commit("a BMC nobody answers at", {
        "nodes/node-1.yaml": _node_text(tree, "node-1")
        + f"bmc: {{driver: ipmi, address: '127.0.0.1:{dead}', credentials: lab}}\n",
        "netboot.yaml": (tree.path / "netboot.yaml").read_text()
        + "rollout: {max_in_flight: 1, on_failure: continue, power: true}\n"})
    creds = tmp_path / "bmc-credentials.yaml"
    write_bmc_credentials(creds, "lab", PASSWORD)
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600", "--bmc-credentials",
                                                                 str(creds)]).start()
    try:
        daemon.wait_served(tree.head())
        bump = tree.commit("reinstall node-1 and node-2", _bump(tree, ["node-1", "node-2"]))
        daemon.wait_served(bump)
        wait_for(lambda: _states(daemon).get("node-1") == "failed", "node-1 to fail on its BMC", timeout=240, every=1)
        current = _rollouts(daemon)["current"]
        nodes = {n["node"]: n for n in current["nodes"]}
        assert nodes["node-1"]["reason"].startswith(f"BMC: BMC ipmi 127.0.0.1:{dead}: "), nodes["node-1"]
        assert nodes["node-2"]["state"] == "needs-manual-reboot"  # no bmc: (on_failure: continue)
        assert current["state"] == "waiting-for-manual-reboots"
        assert http_get(daemon.url + "/healthz")[0] == 200 and bump in daemon.ipxe()
        assert PASSWORD not in daemon.log() and "Traceback" not in daemon.log()
    finally:
        daemon.stop()
