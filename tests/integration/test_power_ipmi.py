"""`netboot-reconcile power` against a real BMC: OpenIPMI's `ipmi_sim` (Debian openipmi) on
loopback, driven through the CLI as a subprocess, IPMI 2.0 over LAN through pyghmi.

ipmi_sim refuses `chassis bootdev` unless a `chassis_control` program is configured, and power
goes through that program too; the one each test writes here keeps the chassis' power state and
records every request, and at a power-on it consumes a pending `pxe` boot device the way a real
BMC's firmware would (recording it as `booted: pxe`). The effect of --pxe-once is checked there,
not through `get_bootdev`: pyghmi reads `default` from ipmi_sim whatever was set (issue 28).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ipmi_support import PASSWORD, Sim, ipmi_sim
from tests.render_support import EXAMPLE, ROOT
from tests.support import free_port


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    with ipmi_sim(tmp_path / "bmc") as running:
        yield running


def _repo(tmp_path: Path, port: int, credentials: str = "lab") -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    node = repo / "nodes" / "node-1.yaml"
    bmc = f"bmc: {{driver: ipmi, address: '127.0.0.1:{port}', credentials: {credentials}}}\n"
    node.write_text(node.read_text() + bmc)
    return repo


def _credentials(tmp_path: Path, password: str = PASSWORD, mode: int = 0o600) -> Path:
    path = tmp_path / "bmc-credentials.yaml"
    path.write_text(json.dumps({"lab": {"username": "admin", "password": password}}))
    path.chmod(mode)
    return path


def _power(repo: Path, creds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The timeout is the bound a user waits at most; a hang fails the test.
    return subprocess.run([sys.executable, "-m", "reconciler", "power", *args, "--repo", str(repo),
                           "--bmc-credentials", str(creds), "--timeout", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_power_on_off_cycle_and_status_through_a_real_ipmi_bmc(tmp_path: Path, sim: Sim) -> None:
    repo, creds = _repo(tmp_path, sim.port), _credentials(tmp_path)
    result = _power(repo, creds, "node-1", "status")
    assert (result.returncode, result.stdout) == (0, "node-1: off\n"), result.stderr

    result = _power(repo, creds, "node-1", "on")
    assert (result.returncode, result.stdout) == (0, "node-1: on\n"), result.stderr
    assert sim.state()["power"] == 1 and ["booted", "default"] in sim.events()

    result = _power(repo, creds, "node-1", "off")
    assert (result.returncode, result.stdout) == (0, "node-1: off\n"), result.stderr
    assert sim.state()["power"] == 0

    (sim.dir / "chassis.log").write_text("")
    sim_state = sim.state()
    result = _power(repo, creds, "node-1", "cycle")
    assert (result.returncode, result.stdout) == (0, "node-1: on\n"), result.stderr
    assert sim_state["power"] == 0 and sim.state()["power"] == 1 and ["booted", "default"] in sim.events()
    assert PASSWORD not in result.stdout + result.stderr


def test_pxe_once_sets_a_network_boot_the_next_power_on_uses(tmp_path: Path, sim: Sim) -> None:
    repo, creds = _repo(tmp_path, sim.port), _credentials(tmp_path)
    assert _power(repo, creds, "node-1", "on").returncode == 0
    (sim.dir / "chassis.log").write_text("")
    result = _power(repo, creds, "node-1", "cycle", "--pxe-once")
    assert (result.returncode, result.stdout) == (0, "node-1: on\n"), result.stderr
    events = sim.events()
    assert ["set", "boot", "pxe"] in events and ["booted", "pxe"] in events
    assert events.index(["set", "power", "0"]) < events.index(["set", "boot", "pxe"]) < events.index(["booted", "pxe"])

    # Once: the next cycle without --pxe-once boots the default device again.
    (sim.dir / "chassis.log").write_text("")
    assert _power(repo, creds, "node-1", "cycle").returncode == 0
    assert ["booted", "default"] in sim.events() and ["set", "boot", "pxe"] not in sim.events()


def test_a_wrong_password_exits_1_naming_the_bmc_and_never_printing_a_password(tmp_path: Path, sim: Sim) -> None:
    wrong = "not-the-pw-Kf7"
    repo, creds = _repo(tmp_path, sim.port), _credentials(tmp_path, password=wrong)
    result = _power(repo, creds, "node-1", "on")
    assert result.returncode == 1
    assert result.stderr.startswith(f"node-1: BMC ipmi 127.0.0.1:{sim.port}: "), result.stderr
    assert wrong not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert ["set", "power", "1"] not in (sim.events() if (sim.dir / "chassis.log").exists() else [])


def test_an_unreachable_bmc_exits_1_naming_it(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)  # nothing listens there
    repo, creds = _repo(tmp_path, port), _credentials(tmp_path)
    result = _power(repo, creds, "node-1", "status")  # bounded by _power's timeout
    assert result.returncode == 1
    assert result.stderr.startswith(f"node-1: BMC ipmi 127.0.0.1:{port}: "), result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_what_power_can_check_first_exits_2_and_touches_no_bmc(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    repo, creds = _repo(tmp_path, port, credentials="nope"), _credentials(tmp_path)
    result = _power(repo, creds, "node-1", "node-2", "ghost", "on")
    assert result.returncode == 2 and result.stdout == ""
    assert "node-1: bmc.credentials 'nope' (nodes/node-1.yaml) names no entry in" in result.stderr
    assert "node-2: nodes/node-2.yaml has no bmc:" in result.stderr
    assert "ghost: no such node" in result.stderr
    assert PASSWORD not in result.stderr

    repo = tmp_path / "repo2"
    shutil.copytree(tmp_path / "repo", repo)
    node = repo / "nodes" / "node-1.yaml"
    node.write_text(node.read_text().replace("credentials: nope", "credentials: lab"))
    os.chmod(creds, 0o644)
    result = _power(repo, creds, "node-1", "on")
    assert result.returncode == 2 and "permissions 0644 are too open" in result.stderr

    os.chmod(creds, 0o600)
    result = _power(repo, creds, "node-1", "status", "--pxe-once")
    assert result.returncode == 2 and "--pxe-once applies to on and cycle only" in result.stderr


def test_a_malformed_bmc_is_a_schema_finding_at_its_line(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 623)
    node = repo / "nodes" / "node-1.yaml"
    lines = [*node.read_text().splitlines()[:-1], "bmc:", "  driver: ilo", "  address: 'bmc-1:623'",
             "  credentials: lab"]
    node.write_text("\n".join(lines) + "\n")
    line = lines.index("  driver: ilo") + 1
    result = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(repo)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"nodes/node-1.yaml:{line}:3: error schema: bmc.driver" in result.stdout, result.stdout
