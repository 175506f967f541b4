"""`netboot-reconcile power` against a Redfish service: sushy-tools' emulator (PyPI sushy-tools)
with its fake driver (a system kept in the emulator's memory; no libvirt needed), over https
with a self-signed certificate and HTTP basic auth, on loopback, driven through the CLI.

The fake driver applies a power change 1 to 11 s after it is asked (like hardware), so this also
exercises waiting for the state to show. Like its libvirt driver it keeps a `Once` override as
`Continuous`, so `--pxe-once` sets the boot source back once the system is on: the emulator's log
shows a PATCH (the override), the reset, a PATCH (set back); its state shows the target Hdd.
The libvirt driver, with a guest that really netboots, is tests/e2e/test_power_redfish_libvirt.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redfish_support import boot_override, sushy_emulator, system
from tests.render_support import EXAMPLE, ROOT
from tests.support import write_bmc_credentials

PASSWORD = "rf-Pw-9qLm"  # the emulator's; looked for in every output


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[int]:
    with sushy_emulator(tmp_path / "redfish", PASSWORD, ["--fake"]) as port:
        yield port


def _system(port: int) -> dict[str, object] | None:
    """The emulator's one system, read by the test itself (basic auth, certificate not checked)."""
    return system(port, PASSWORD)


def _setup(tmp_path: Path, port: int, password: str = PASSWORD) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    node = repo / "nodes" / "node-1.yaml"
    node.write_text(node.read_text() + f"bmc: {{driver: redfish, address: '127.0.0.1:{port}', credentials: rf}}\n")
    creds = tmp_path / "creds.json"
    write_bmc_credentials(creds, "rf", password)
    return repo, creds


def _power(repo: Path, creds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "power", *args, "--repo", str(repo),
                           "--bmc-credentials", str(creds), "--timeout", "30"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)


def test_redfish_power_and_pxe_once_through_the_emulator(tmp_path: Path, emulator: int) -> None:
    repo, creds = _setup(tmp_path, emulator)
    result = _power(repo, creds, "node-1", "status")
    assert (result.returncode, result.stdout) == (0, "node-1: off\n"), result.stderr
    assert boot_override(emulator, PASSWORD)[0] != "Pxe"

    result = _power(repo, creds, "node-1", "on", "--pxe-once")
    assert (result.returncode, result.stdout) == (0, "node-1: on\n"), result.stderr
    system = _system(emulator)
    assert system is not None and system["PowerState"] == "On"
    log = (tmp_path / "redfish" / "log").read_text()
    calls = re.findall(r'"\S*(PATCH|POST) /redfish/v1/Systems/[^/ ]+(/Actions/ComputerSystem\.Reset)?', log)
    assert [m + r for m, r in calls] == ["PATCH", "POST/Actions/ComputerSystem.Reset", "PATCH"], log[-3000:]
    assert boot_override(emulator, PASSWORD)[0] == "Hdd"  # kept as Continuous, so set back once on

    # on a machine already on, the override is for its next boot: it stays
    result = _power(repo, creds, "node-1", "on", "--pxe-once")
    assert (result.returncode, result.stdout) == (0, "node-1: on\n"), result.stderr
    assert boot_override(emulator, PASSWORD)[0] == "Pxe"

    result = _power(repo, creds, "node-1", "off")
    assert (result.returncode, result.stdout) == (0, "node-1: off\n"), result.stderr
    system = _system(emulator)
    assert system is not None and system["PowerState"] == "Off"
    assert PASSWORD not in result.stdout + result.stderr


def test_redfish_wrong_password_exits_1_naming_the_bmc(tmp_path: Path, emulator: int) -> None:
    wrong = "wrong-rf-Pw-4"
    repo, creds = _setup(tmp_path, emulator, password=wrong)
    result = _power(repo, creds, "node-1", "on")
    assert result.returncode == 1
    assert result.stderr.startswith(f"node-1: BMC redfish 127.0.0.1:{emulator}: "), result.stderr
    assert wrong not in result.stdout + result.stderr and "Traceback" not in result.stderr
    system = _system(emulator)
    assert system is not None and system["PowerState"] == "Off"
