"""The cloud-inits the tests run: Debian's package (22.4.x) and upstream releases from their source tags.

- Debian's: the `cloud-init` package (scripts/test.sh installs it); its modules live in
  /usr/lib/python3/dist-packages and run under /usr/bin/python3.
- Upstream: the source trees of releases 26.2 (today's) and 20.4.1 (the oldest line in use,
  Ubuntu 20.04's era); not on PyPI (26.2 builds with meson); each cloned
  once into tests/peers/.cache/ from https://github.com/canonical/cloud-init, or from the
  clone or mirror named by $CLOUD_INIT_GIT, and checked against the tag's commit
  (tests/peers/sources.py). It runs under
  /usr/bin/python3 with the tree first on PYTHONPATH (its dependencies, PyYAML, Jinja2, requests,
  jsonschema, configobj, come with Debian's package).

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

from tests.peers.sources import tag_tree

HERE = Path(__file__).resolve().parent
PROBE = HERE / "cloudinit_probe.py"
PYTHON = "/usr/bin/python3"
DEBIAN_MODULES = Path("/usr/lib/python3/dist-packages/cloudinit")
UPSTREAM_GIT = "https://github.com/canonical/cloud-init"
# release tag -> its commit: today's release, and the last of 20.x (Ubuntu 20.04's era)
UPSTREAM = {
    "26.2": "f19affc8df980a4daff3b8250d4b4b262ce24232",
    "20.4.1": "9db8620beda698a67548defe76f7b75da35db4b9",
}


def debian_cloud_init() -> dict[str, str]:
    """The environment that runs Debian's cloud-init (fails naming the package when absent)."""
    if not DEBIAN_MODULES.is_dir() or not Path(PYTHON).exists():
        pytest.fail(f"{DEBIAN_MODULES} not found: apt-get install cloud-init (scripts/test.sh installs it)")
    return {"PYTHONPATH": ""}


def upstream_cloud_init(tag: str) -> dict[str, str]:
    """The environment that runs upstream cloud-init `tag` (cloned on first use)."""
    tree = tag_tree("cloud-init", UPSTREAM_GIT, "CLOUD_INIT_GIT", tag, UPSTREAM[tag],
                    "cloudinit/sources/DataSourceNoCloud.py")
    return {"PYTHONPATH": str(tree)}


def environment(which: str) -> dict[str, str]:
    """"debian" (the package) or an upstream release tag (a key of UPSTREAM)."""
    return debian_cloud_init() if which == "debian" else upstream_cloud_init(which)


def probe(which: str, cmdline: str) -> dict[str, Any]:
    """What cloud-init `which` ("debian" or an UPSTREAM tag) does with `cmdline` (see cloudinit_probe.py)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **environment(which)}
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run([PYTHON, str(PROBE), "--cmdline", cmdline, "--workdir", work], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{which} cloud-init probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc["which"] = which
    return doc
