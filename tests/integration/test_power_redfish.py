"""`netboot-reconcile power` against a Redfish service: sushy-tools' emulator (PyPI sushy-tools)
with its fake driver (a system kept in the emulator's memory; no libvirt needed), over https
with a self-signed certificate and HTTP basic auth, on loopback, driven through the CLI.

The fake driver applies a power change 1 to 11 s after it is asked (like hardware), so this also
exercises waiting for the state to show. It records the boot override target but, like its
libvirt driver, ignores BootSourceOverrideEnabled: the test checks Pxe was set, not `Once`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.render_support import EXAMPLE, ROOT
from tests.support import free_port, require_tool

PASSWORD = "rf-Pw-9qLm"  # the emulator's; looked for in every output


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[int]:
    import bcrypt

    openssl = require_tool("openssl", "openssl")
    emulator = Path(sys.executable).with_name("sushy-emulator")
    if not emulator.exists():
        pytest.fail("sushy-emulator not found: pip install sushy-tools (the [test] extra installs it)")
    d = tmp_path / "redfish"
    d.mkdir()
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    (d / "htpasswd").write_text("admin:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode() + "\n")
    (d / "config.py").write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n"
                                 f"SUSHY_EMULATOR_STATE_DIR = {str(d / 'state')!r}\n")
    port = free_port()
    proc = subprocess.Popen([str(emulator), "--fake", "-i", "127.0.0.1", "-p", str(port), "--ssl-certificate",
                             str(d / "cert.pem"), "--ssl-key", str(d / "key.pem"), "--config", str(d / "config.py")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(d / "log").open("wb"))
    try:
        for _ in range(200):
            if proc.poll() is not None or _system(port) is not None:
                break
            time.sleep(0.1)
        if _system(port) is None:
            pytest.fail(f"sushy-emulator did not start: {(d / 'log').read_text()}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _system(port: int) -> dict[str, object] | None:
    """The emulator's one system, read by the test itself (basic auth, certificate not checked)."""
    import base64
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    auth = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    base = f"https://127.0.0.1:{port}"
    try:
        def get(path: str) -> dict[str, object]:
            request = urllib.request.Request(base + path, headers={"Authorization": f"Basic {auth}"})
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return dict(json.load(response))
        members = get("/redfish/v1/Systems")["Members"]
        assert isinstance(members, list)
        return get(members[0]["@odata.id"])
    except OSError:
        return None


def _setup(tmp_path: Path, port: int, password: str = PASSWORD) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    node = repo / "nodes" / "node-1.yaml"
    node.write_text(node.read_text() + f"bmc: {{driver: redfish, address: '127.0.0.1:{port}', credentials: rf}}\n")
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"rf": {"username": "admin", "password": password}}))
    creds.chmod(0o600)
    return repo, creds


def _power(repo: Path, creds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "power", *args, "--repo", str(repo),
                           "--bmc-credentials", str(creds), "--timeout", "30"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)


def test_redfish_power_and_pxe_once_through_the_emulator(tmp_path: Path, emulator: int) -> None:
    repo, creds = _setup(tmp_path, emulator)
    result = _power(repo, creds, "node-1", "status")
    assert (result.returncode, result.stdout) == (0, "node-1: off\n"), result.stderr

    result = _power(repo, creds, "node-1", "on", "--pxe-once")
    assert (result.returncode, result.stdout) == (0, "node-1: on\n"), result.stderr
    system = _system(emulator)
    assert system is not None and system["PowerState"] == "On"
    boot = system["Boot"]
    assert isinstance(boot, dict) and boot["BootSourceOverrideTarget"] == "Pxe"

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
