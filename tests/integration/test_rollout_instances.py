"""Two instances of one site on one PostgreSQL store power a machine once per rollout, not once each.

Every instance applies the same commits, so each decided the same power cycles: with the
documented deployment (a DaemonSet, an instance on each node of a site) every machine of a
rollout was power-cycled once per instance, the second time in the middle of the install the
first had started. Now one instance of the site drives the rollouts (adapters.pglock); the other
shows the rollout it stores, refuses pause and resume naming the driver, and takes over when the
driver dies (SIGKILL: PostgreSQL lets its lock go with its connection).

Real daemon processes, a real PostgreSQL (tests/pgcluster.py) and real BMCs (OpenIPMI's
ipmi_sim on loopback, tests/ipmi_support.py).
"""

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
from tests.pgcluster import PgCluster
from tests.support import write_bmc_credentials

MACS = {"node-1": "52:54:00:aa:bb:01", "node-2": "52:54:00:aa:bb:02"}
SECRET = "rollout-operator-secret"
CYCLED = "power-cycled with a one-time network boot; waiting for its boot result"


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[dict[str, Sim]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(ipmi_sim(tmp_path / f"bmc-{name}")) for name in MACS}


def _current(daemon: DaemonProcess) -> dict[str, Any] | None:
    code, body = http_get(daemon.url + "/api/rollouts")
    assert code == 200, body
    current: dict[str, Any] | None = json.loads(body)["current"]
    return current


def _node(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    current = _current(daemon)
    return next((n for n in current["nodes"] if n["node"] == name), {}) if current else {}


def _pxe_boots(sim: Sim) -> int:
    return sim.events().count(["booted", "pxe"])


def test_one_instance_of_a_site_powers_and_another_takes_over(tmp_path: Path, sims: dict[str, Sim],
                                                               pg_cluster: PgCluster) -> None:
    tree = WorkTree(tmp_path / "work")
    files = {f"nodes/{name}.yaml": (tree.path / "nodes" / f"{name}.yaml").read_text()
             + f"bmc: {{driver: ipmi, address: '127.0.0.1:{sim.port}', credentials: lab}}\n"
             for name, sim in sims.items()}
    files["netboot.yaml"] = ((tree.path / "netboot.yaml").read_text()
                             + "rollout: {max_in_flight: 1, on_failure: pause, power: true}\n")
    tree.commit("BMCs and a rollout policy", files)
    creds = tmp_path / "bmc-credentials.yaml"
    write_bmc_credentials(creds, "lab", PASSWORD)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    url = pg_cluster.create_database()
    extra = ["--interval", "3600", "--bmc-credentials", str(creds), "--webhook-secret-file", str(secret_file),
             "--store", url]
    first = DaemonProcess(str(tree.path), tmp_path / "a", [*extra, "--instance", "a"]).start()
    second = DaemonProcess(str(tree.path), tmp_path / "b", [*extra, "--instance", "b"])
    try:
        second.start()
        bump = tree.commit("reinstall both", {
            path: text + "reinstall: 1\n" for path, text in files.items() if path.startswith("nodes/")})
        first.wait_served(bump)
        second.wait_served(bump)

        # node-1's power cycle is done (PowerDone) as both instances show it: asked once.
        for daemon in (first, second):
            wait_for(lambda d=daemon: _node(d, "node-1").get("reason") == CYCLED,  # type: ignore[misc]
                     f"instance {daemon.url} to show node-1 power-cycled", timeout=60)
        assert _pxe_boots(sims["node-1"]) == 1, sims["node-1"].events()
        assert _pxe_boots(sims["node-2"]) == 0
        assert _current(second) == _current(first)  # the follower shows the driver's rollout

        # The follower refuses operator actions, naming the instance that drives.
        paused = subprocess.run([sys.executable, "-m", "reconciler", "rollout", "pause", "--url", second.url,
                                 "--secret-file", str(secret_file)], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, check=False)
        assert paused.returncode == 1 and "409" in paused.stderr and "(a)" in paused.stderr, paused.stderr

        # The driver dies: the other instance takes over from the stored rollout. node-1 reports
        # its install to it, and it powers node-2 (once).
        first.kill()
        # One report secret for the instances of a store: the first's (adapters.reportsecret).
        report_secret = (first.state_dir / "report-secret").read_bytes().strip()
        token = template.report_token(report_secret, "node-1", bump)
        code, reply = http_post(f"{second.url}/report/{MACS['node-1']}?token={token}",
                                json.dumps({"status": "success"}).encode(), {"Content-Type": "application/json"})
        assert code == 200, reply
        wait_for(lambda: _node(second, "node-2").get("reason") == CYCLED, "the survivor to power-cycle node-2",
                 timeout=60)
        assert _node(second, "node-1")["state"] == "done"
        assert (_pxe_boots(sims["node-1"]), _pxe_boots(sims["node-2"])) == (1, 1)
        assert "drives them" in second.log()
    finally:
        first.stop()
        second.stop()


def test_an_instance_without_credentials_runs_rollouts_until_one_that_can_power_comes(
        tmp_path: Path, pg_cluster: PgCluster) -> None:
    """A daemon on a PostgreSQL store without --bmc-credentials ran no rollout at all (it only
    followed, whoever else there was): a `power: false` rollout, whose nodes need a manual reboot
    the daemon tracks, was never made. It runs them while no instance that can power is there,
    and lets one that can take them over."""
    tree = WorkTree(tmp_path / "work")
    tree.commit("a rollout without power", {
        "netboot.yaml": (tree.path / "netboot.yaml").read_text() + "rollout: {max_in_flight: 1}\n"})
    url = pg_cluster.create_database()
    plain = DaemonProcess(str(tree.path), tmp_path / "plain", ["--interval", "3600", "--store", url,
                                                               "--instance", "plain"])
    creds = tmp_path / "bmc-credentials.yaml"
    write_bmc_credentials(creds, "lab", PASSWORD)
    powering = DaemonProcess(str(tree.path), tmp_path / "powering", [
        "--interval", "3600", "--store", url, "--instance", "powering", "--bmc-credentials", str(creds)])
    try:
        plain.start()
        bump = tree.commit("reinstall node-1", {
            "nodes/node-1.yaml": (tree.path / "nodes" / "node-1.yaml").read_text() + "reinstall: 1\n"})
        plain.wait_served(bump)
        node = wait_for(lambda: _node(plain, "node-1"), "node-1's rollout on the instance without credentials")
        assert node["state"] == "needs-manual-reboot", node

        powering.start()
        wait_for(lambda: "this instance (powering) drives them" in powering.log(),
                 f"the instance with --bmc-credentials to run the rollouts\n{powering.log()[-2000:]}", timeout=60)
        assert "no longer drives them (an instance with --bmc-credentials does)" in plain.log()
    finally:
        plain.stop()
        powering.stop()
