"""Real cloud-init code reads the seeds a running daemon serves: Debian's 20.4.1, 22.4.x and today's release.

Each case runs cloud-init's own kernel-command-line parsing and NoCloud datasources
(tests/peers/cloudinit_probe.py: the local and network stages of `cloud-init init`) against
`netboot-reconcile run` on 127.0.0.1, for the kernel command line the daemon renders into the
node's iPXE script and for the other spellings of the seed argument. What decides whether a
machine is configured: which stage consumes the user-data (none: cloud-init ends without running
it, the machine never installs). The releases are Debian's packages: bookworm's (installed),
bullseye's and sid's (tests/peers/debian_archive.py).

| seed argument                        | 20.4.1, 22.4 (before 23.2)        | today's (sid: 26.2)       |
|--------------------------------------|-----------------------------------|---------------------------|
| `ds=nocloud;s=<http url>`            | never consumed                    | network stage             |
| `ds=nocloud-net;s=<http url>`        | network stage                     | network stage, deprecated |
| `ds=nocloud;s=<http url>;dsmode=net` | network stage                     | network stage             |

The third is what the project recommends (example-repo's profiles, README); the daemon here
serves a node whose profile carries example-repo's seed argument.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.daemon_support import EXAMPLE, DaemonProcess, http_get, serving_files
from tests.peers.cloud_init import probe
from tests.support import free_port

MAC = "52:54:00:c1:00:01"
EXAMPLE_PROFILE = EXAMPLE / "profiles" / "ubuntu-2204-install.yaml"


def example_seed_arg() -> str:
    """The seed argument example-repo recommends (its Ubuntu 22.04 profile: a pre-23.2 cloud-init)."""
    args = yaml.safe_load(EXAMPLE_PROFILE.read_text())["boot"]["args"]
    seed: str = next(a for a in args if a.startswith("ds="))
    return seed


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    work = tmp_path_factory.mktemp("cloudinit-peers")
    port = free_port()
    files = {
        "netboot.yaml": f"server:\n  address: 127.0.0.1\n  http_port: {port}\ndhcp:\n  mode: off\n",
        "nodes/n1.yaml": f"mac: {MAC}\nprofile: seed\n",
        "profiles/seed.yaml": "name: seed\nboot:\n  kernel: /assets/k\n  initrd: [/assets/i]\n"
                              f"  args: [console=ttyS0, {json.dumps(example_seed_arg())}]\ncloud_init: seed\n",
        "cloud-init/seed.yaml": "#cloud-config\nhostname: {{ hostname }}\nruncmd: [[echo, '{{ revision }}']]\n",
    }
    with serving_files(work, port, files, "one node with a NoCloud seed", MAC) as (proc, _):
        yield proc


def daemon_ipxe(daemon: DaemonProcess) -> str:
    return daemon.ipxe(MAC)


def rendered_cmdline(daemon: DaemonProcess) -> str:
    """The kernel command line of the node's iPXE script, as the kernel would see it."""
    script = daemon_ipxe(daemon)
    line = next(ln for ln in script.splitlines() if ln.startswith("kernel "))
    words = shlex.split(line.split(" && ", 1)[0])[1:]  # `kernel URL args... && goto ok || ...`
    return " ".join(w for w in words if not w.startswith(("http://", "https://", "initrd=")))


def seed_url(cmdline: str) -> str:
    m = re.search(r"ds=nocloud[-a-z]*;s=(\S+?/)(?:;|\s|$)", cmdline)
    assert m, cmdline
    return m.group(1)


def served(url: str) -> bytes:
    code, body = http_get(url)
    assert code == 200, (url, code, body[:300])
    return body


def assert_consumed(doc: dict[str, Any], url: str) -> None:
    assert doc["consumed_in"] == "net", "\n".join(doc.pop("log")) + f"\n{doc}"
    assert doc["user_data"] == served(url + "user-data").decode(), doc
    assert doc["meta_data"]["instance-id"].startswith("iid-"), doc["meta_data"]
    assert doc["meta_data"]["local-hostname"] == "n1"


CLOUD_INITS = ["debian", "debian-11", "debian-sid"]  # bookworm 22.4, bullseye 20.4.1, sid (today's)
BEFORE_23_2 = ("debian", "debian-11")


@pytest.mark.parametrize("which", CLOUD_INITS)
def test_rendered_seed_argument_runs_the_user_data(daemon: DaemonProcess, which: str) -> None:
    cmdline = rendered_cmdline(daemon)
    url = seed_url(cmdline)
    doc = probe(which, cmdline)
    assert_consumed(doc, url)
    assert not [w for w in doc["warnings"] if "deprecat" in w.lower()], doc["warnings"]


@pytest.mark.parametrize("which", CLOUD_INITS)
@pytest.mark.parametrize(
    "form",
    ["ds=nocloud;s={url}", "ds=nocloud-net;s={url}", "ds=nocloud;s={url};dsmode=net"],
)
def test_seed_argument_forms(daemon: DaemonProcess, which: str, form: str) -> None:
    # before 23.2, plain ds=nocloud means dsmode=local: the network stage exits, nothing runs;
    # since then the mode follows the seed URL's scheme
    consumed = None if form == "ds=nocloud;s={url}" and which in BEFORE_23_2 else "net"
    url = seed_url(rendered_cmdline(daemon))
    doc = probe(which, "console=ttyS0 " + form.format(url=url))
    assert doc["consumed_in"] == consumed, doc
    if consumed:
        assert_consumed(doc, url)
    else:
        assert doc["stages"]["net"]["dsmode"] == "local", doc  # it fetched the seed, then did nothing
    deprecated = [w for w in doc["warnings"] if "'nocloud-net' datasource name is deprecated" in w]
    assert bool(deprecated) == (which == "debian-sid" and "nocloud-net" in form), doc["warnings"]


@pytest.mark.parametrize("which", CLOUD_INITS)
def test_network_config_is_served_and_leaves_networking_alone(daemon: DaemonProcess, which: str,
                                                              tmp_path: Path) -> None:
    url = seed_url(rendered_cmdline(daemon))
    body = served(url + "network-config")
    assert body.startswith(b"#"), body
    # cloud-init's own reading of what was served: no network configuration from the datasource,
    # so the machine's networking is what it would be without the file (cloud-init's fallback)
    doc = probe(which, rendered_cmdline(daemon))
    assert doc["consumed_in"] == "net" and doc["has_network_config"] is False, doc
    code, _ = http_get(f"{daemon.url}/cloud-init/{MAC}/network-config")
    assert code == 200
