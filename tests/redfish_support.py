"""sushy-tools' Redfish emulator (PyPI sushy-tools), started and stopped by a test: https with a
self-signed certificate (`d/cert.pem`, for 127.0.0.1: a node's `bmc.verify_ca` names it), HTTP
basic auth, on loopback; and the test's own read of its system.

Callers: tests/integration/test_power_redfish.py (its fake driver, a system in the emulator's
memory) and tests/e2e/test_power_redfish_libvirt.py (its libvirt driver, a QEMU domain).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, require_tool

USERNAME = "admin"


Reader = Callable[[int, str], "dict[str, object] | None"]


@contextmanager
def sushy_emulator(d: Path, password: str, backend: Sequence[str], env: Mapping[str, str] | None = None,
                   timeout: float = 60, popen: Callable[..., Any] = subprocess.Popen,
                   read: Reader | None = None) -> Iterator[int]:
    """sushy-emulator with `backend` (`--fake`, or `--libvirt-uri URI`), files in `d`; yields its port.
    `popen` starts it (another namespace's), `read` reads its system from where it listens."""
    read = read or system
    import bcrypt

    openssl = require_tool("openssl", "openssl")
    emulator = Path(sys.executable).with_name("sushy-emulator")
    if not emulator.exists():
        pytest.fail("sushy-emulator not found: pip install sushy-tools (the [test] extra installs it)")
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    (d / "htpasswd").write_text(f"{USERNAME}:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode() + "\n")
    (d / "config.py").write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n"
                                 f"SUSHY_EMULATOR_STATE_DIR = {str(d / 'state')!r}\n")
    port = free_port()
    proc = popen([str(emulator), *backend, "-i", "127.0.0.1", "-p", str(port), "--ssl-certificate",
                             str(d / "cert.pem"), "--ssl-key", str(d / "key.pem"), "--config", str(d / "config.py")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(d / "log").open("wb"),
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None or read(port, password) is not None:
                break
            time.sleep(0.5)
        if read(port, password) is None:
            pytest.fail(f"sushy-emulator {' '.join(backend)} did not answer: {(d / 'log').read_text()[-3000:]}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def system(port: int, password: str) -> dict[str, object] | None:
    """The emulator's first system, read by the test itself (basic auth, certificate not checked)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    auth = base64.b64encode(f"{USERNAME}:{password}".encode()).decode()
    base = f"https://127.0.0.1:{port}"
    try:
        def get(path: str) -> dict[str, object]:
            request = urllib.request.Request(base + path, headers={"Authorization": f"Basic {auth}"})
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return dict(json.load(response))
        members = get("/redfish/v1/Systems")["Members"]
        assert isinstance(members, list)
        return get(members[0]["@odata.id"]) if members else None
    except OSError:
        return None


def boot_override(port: int, password: str, read: Reader | None = None) -> tuple[str, str]:
    """(BootSourceOverrideTarget, BootSourceOverrideEnabled) as the emulator reports them."""
    doc = (read or system)(port, password)
    assert doc is not None, "the emulator did not answer"
    boot = doc["Boot"]
    assert isinstance(boot, dict)
    return str(boot["BootSourceOverrideTarget"]), str(boot["BootSourceOverrideEnabled"])


if __name__ == "__main__":  # `python -m tests.redfish_support PORT`, password on stdin: the system as JSON
    print(json.dumps(system(int(sys.argv[1]), sys.stdin.read().strip())))
