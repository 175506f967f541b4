"""The autoinstall webhook reporter, as Subiquity drives it, posting to a running daemon.

The reporter (tests/peers/reporter_peer.py: cloud-init's reporting package, of which curtin's
reporter is a fork with the same configuration and wire format; curtin itself is in no registry
reachable here) is configured with the `reporting:`
mapping of the node's served user-data, as Subiquity configures it: the template's own handler
(`console: {type: print}`) and ours beside it (`netboot`, a webhook to
/report/autoinstall/<mac> with the node's token); it POSTs Subiquity's events to ours. `netboot-reconcile results` then
shows the install's outcome for the commit: succeeded on `subiquity/Install/install` finishing
SUCCESS, failed on a nested step finishing FAIL (what real installs do when, e.g., apt fails).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.daemon_support import ROOT, DaemonProcess, http_get, serving_files, wait_for
from tests.peers.reporter_peer import Event, post_events
from tests.support import free_port

NODES = {"n1": "52:54:00:c2:00:01", "n2": "52:54:00:c2:00:02"}
USER_DATA = """\
#cloud-config
autoinstall:
  version: 1
  identity: {hostname: "{{ hostname }}", username: ops, password: "$6$x$y"}
  late-commands: ["echo {{ revision }}"]
  reporting:
    console: {type: print}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    work = tmp_path_factory.mktemp("curtin")
    port = free_port()
    files = {
        "netboot.yaml": f"server:\n  address: 127.0.0.1\n  http_port: {port}\ndhcp:\n  mode: off\n",
        "profiles/install.yaml": "name: install\nboot:\n  kernel: /assets/k\n  initrd: [/assets/i]\n"
        '  args: [autoinstall, ip=dhcp, "ds=nocloud;s={{ cloud_init_url }};dsmode=net"]\ncloud_init: install\n',
        "cloud-init/install.yaml": USER_DATA,
        **{f"nodes/{name}.yaml": f"mac: {mac}\nprofile: install\n" for name, mac in NODES.items()},
    }
    with serving_files(work, port, files, "two nodes installing Ubuntu", NODES["n1"]) as served:
        yield served


def served_reporting(daemon: DaemonProcess, mac: str) -> dict[str, Any]:
    """The `reporting:` of the node's served autoinstall: the author's handler and ours beside it."""
    code, body = http_get(f"{daemon.url}/cloud-init/{mac}/user-data")
    assert code == 200, body
    reporting: dict[str, Any] = yaml.safe_load(body)["autoinstall"]["reporting"]
    assert reporting["console"] == {"type": "print"}, reporting
    assert reporting["netboot"]["endpoint"].startswith(f"{daemon.url}/report/autoinstall/{mac}"), reporting
    return reporting


def outcome(daemon: DaemonProcess, revision: str, node: str, want: str) -> dict[str, Any]:
    def entry() -> dict[str, Any] | None:
        proc = subprocess.run([sys.executable, "-m", "reconciler", "results", "--state-dir", str(daemon.state_dir),
                               "--commit", revision, "--node", node, "--format", "json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            return None
        found = [n for c in json.loads(proc.stdout)["commits"] for n in c["nodes"] if n["node"] == node]
        return found[0] if found and found[0]["outcome"] == want else None

    result: dict[str, Any] = wait_for(entry, f"results to show {node} {want}\n{daemon.log()[-3000:]}", timeout=30,
                                      every=0.5)
    return result


def install(daemon: DaemonProcess, mac: str, events: list[Event]) -> None:
    log = post_events(served_reporting(daemon, mac), events)
    assert "failed posting event" not in log.lower(), log


def test_subiquity_install_finishing_success_is_succeeded(daemon: tuple[DaemonProcess, str]) -> None:
    proc, head = daemon
    install(proc, NODES["n1"], [
        ("start", "subiquity/Install", "installing", ""),
        ("start", "subiquity/Install/install", "final system configuration", ""),
        ("finish", "subiquity/Install/install", "final system configuration", "SUCCESS"),
    ])
    entry = outcome(proc, head, "n1", "succeeded")
    stages = [e["stage"] for e in entry["events"]]
    assert stages.count("autoinstall") == 3, stages


def test_a_nested_step_finishing_fail_is_failed(daemon: tuple[DaemonProcess, str]) -> None:
    proc, head = daemon
    install(proc, NODES["n2"], [
        ("start", "subiquity/Install", "installing", ""),
        ("start", "subiquity/Install/install/configure_apt", "configuring apt", ""),
        ("finish", "subiquity/Install/install/configure_apt", "configuring apt", "FAIL"),
    ])
    entry = outcome(proc, head, "n2", "failed")
    assert "configure_apt" in json.dumps(entry), entry
