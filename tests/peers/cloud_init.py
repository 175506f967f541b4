"""The cloud-inits the tests run: Debian's bookworm package (22.4.x), bullseye's (20.4.1) and sid's (today's).

- bookworm's: the `cloud-init` package (scripts/test.sh installs it); its modules live in
  /usr/lib/python3/dist-packages and run under /usr/bin/python3.
- bullseye's 20.4.1 (the Ubuntu 20.04 era) and sid's (today's release, 26.x when written):
  the same package of those suites from Debian's archive, unpacked once into
  tests/peers/.cache/ (tests/peers/debian_archive.py), run under /usr/bin/python3 with their
  dist-packages first on PYTHONPATH (their dependencies, PyYAML, Jinja2, requests, jsonschema,
  configobj, come with the installed package).

`probe(which, cmdline)` runs tests/peers/cloudinit_probe.py (cloud-init's own cmdline parsing
and NoCloud datasources, real HTTP to the seed URL) and returns its JSON.
Callers: tests/integration/test_cloudinit_peers.py.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.peers.debian_archive import unpacked

HERE = Path(__file__).resolve().parent
PROBE = HERE / "cloudinit_probe.py"
PYTHON = "/usr/bin/python3"
DEBIAN_MODULES = Path("/usr/lib/python3/dist-packages/cloudinit")
# test id -> the Debian suite whose cloud-init it runs ("debian": the installed bookworm package)
OTHER_SUITES = {"debian-11": "bullseye", "debian-sid": "sid"}


def debian_cloud_init() -> dict[str, str]:
    """The environment that runs the installed cloud-init (fails naming the package when absent)."""
    if not DEBIAN_MODULES.is_dir() or not Path(PYTHON).exists():
        pytest.fail(f"{DEBIAN_MODULES} not found: apt-get install cloud-init (scripts/test.sh installs it)")
    return {"PYTHONPATH": ""}


def suite_cloud_init(suite: str) -> dict[str, str]:
    """The environment that runs Debian `suite`'s cloud-init (downloaded and unpacked on first use)."""
    root, _version = unpacked(suite, "cloud-init")
    modules = root / "usr" / "lib" / "python3" / "dist-packages"
    if not (modules / "cloudinit" / "sources" / "DataSourceNoCloud.py").exists():
        pytest.fail(f"{root}: Debian {suite}'s cloud-init holds no cloudinit/sources/DataSourceNoCloud.py")
    return {"PYTHONPATH": str(modules)}


def environment(which: str) -> dict[str, str]:
    """"debian" (the installed package) or a key of OTHER_SUITES."""
    return debian_cloud_init() if which == "debian" else suite_cloud_init(OTHER_SUITES[which])


def probe(which: str, cmdline: str) -> dict[str, Any]:
    """What cloud-init `which` ("debian" or a key of OTHER_SUITES) does with `cmdline` (see cloudinit_probe.py)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **environment(which)}
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run([PYTHON, str(PROBE), "--cmdline", cmdline, "--workdir", work], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{which} cloud-init probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc["which"] = which
    return doc
