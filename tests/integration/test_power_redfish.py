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


def _setup(tmp_path: Path, port: int, password: str = PASSWORD,
           verify_ca: str | None = "emulator") -> tuple[Path, Path]:
    """A repository whose node-1 has the emulator as its BMC; `verify_ca` as given (YAML), by
    default the emulator's own certificate, None: left out (the default check)."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, dirs_exist_ok=True)
    if verify_ca == "emulator":
        verify_ca = f"'{tmp_path / 'redfish' / 'cert.pem'}'"
    extra = f", verify_ca: {verify_ca}" if verify_ca is not None else ""
    node = repo / "nodes" / "node-1.yaml"
    node.write_text((EXAMPLE / "nodes" / "node-1.yaml").read_text()
                    + f"bmc: {{driver: redfish, address: '127.0.0.1:{port}', credentials: rf{extra}}}\n")
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


def test_redfish_checks_the_bmc_certificate_against_the_system_cas_or_verify_ca(tmp_path: Path,
                                                                                emulator: int) -> None:
    """The emulator's certificate is self-signed: by default (no verify_ca: the system's CAs) and
    against another CA it is refused with a message saying why and what to set; with verify_ca
    naming it, or false, the BMC is driven. A relative path is a schema finding at its line."""
    repo, creds = _setup(tmp_path, emulator, verify_ca=None)
    result = _power(repo, creds, "node-1", "status")
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"node-1: BMC redfish 127.0.0.1:{emulator}: TLS certificate not trusted "
                                    "(self-signed certificate; checked against the system's CAs): set "
                                    "bmc.verify_ca to the path of its CA bundle"), result.stderr

    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "other.key"),
                    "-out", str(other), "-days", "1", "-subj", "/CN=other-ca"], check=True, capture_output=True)
    _setup(tmp_path, emulator, verify_ca=f"'{other}'")
    result = _power(repo, creds, "node-1", "status")
    assert result.returncode == 1, result.stdout
    assert f"TLS certificate not trusted (self-signed certificate; checked against the CA bundle {other})" \
        in result.stderr, result.stderr

    _setup(tmp_path, emulator, verify_ca=f"'{tmp_path / 'missing.pem'}'")
    result = _power(repo, creds, "node-1", "status")
    assert result.returncode == 1 and f"bmc.verify_ca {tmp_path / 'missing.pem'}: no such file" in result.stderr

    for accepted in ("emulator", "false"):
        _setup(tmp_path, emulator, verify_ca=accepted)
        result = _power(repo, creds, "node-1", "status")
        assert (result.returncode, result.stdout) == (0, "node-1: off\n"), result.stderr

    _setup(tmp_path, emulator, verify_ca="certs/bmc-ca.pem")
    result = _power(repo, creds, "node-1", "status")
    assert result.returncode == 2, result.stderr
    line = (repo / "nodes" / "node-1.yaml").read_text().splitlines().index(
        next(x for x in (repo / "nodes" / "node-1.yaml").read_text().splitlines() if x.startswith("bmc:"))) + 1
    assert f"nodes/node-1.yaml:{line}" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "verify_ca" in result.stdout + result.stderr
