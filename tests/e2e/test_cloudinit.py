"""A real Debian userspace running Debian's own cloud-init from the NoCloud seed the daemon serves.

The guest (`ci-1`, SeaBIOS + the NIC's iPXE ROM) boots the way Ubuntu's live installer does:
kernel + initrd over HTTP, live-boot's `fetch=` downloads the squashfs root from `--assets-dir`,
systemd starts cloud-init 22.4.x (bookworm), which reads `ds=nocloud;s=...;dsmode=net` from the
kernel command line, runs the committed user-data (hostname, write_files, runcmd printing one
`E2E-CI ...` line on the serial console), POSTs `phone_home` to `/report/phone-home/<mac>` and
powers off (power_state), which ends QEMU.

Two boots in all (each about a minute of TCG on an idle 2-CPU machine):
1. commit 1 -> the node succeeded for commit 1 with the whole timeline, as `results` shows it;
2. commit 2 changes the user-data, commit 3 on top of it is invalid (and changes the user-data
   too): the next boot runs commit 2's user-data under a new instance-id, recorded against
   commit 2; nothing is served or recorded for commit 3.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.harness import tail
from tests.e2e.site import LIVE_MARKER, Site, live_user_data

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(1800)]

BOOT_TIMEOUT = 900  # seconds for one TCG boot of a full Debian on a loaded 2-core machine (a bound)
# DHCP -> iPXE -> kernel -> initrd -> root image (live-boot fetch=) -> meta-data -> user-data -> report
TIMELINE = ("dhcp-ack", "ipxe-bootstrap", "ipxe-script", "kernel", "initrd", "asset", "meta-data", "user-data",
            "phone-home")
_LINE = re.compile(LIVE_MARKER + r" hostname=(\S*) marker=(\S*) (\S*) iid=(\S*)")


def evidence(site: Site, text: str) -> str:
    """What a failing assertion shows: the serial console's last lines and the daemon's log."""
    return f"\nserial console (last lines):\n{tail(text, 60)}\ndaemon log (last lines):\n{tail(site.daemon.log_text())}"


def boot(site: Site) -> tuple[tuple[str, str, str, str], str]:
    """Power on ci-1 and wait for cloud-init to power it off; ((hostname, marker, revision, iid), console)."""
    vm = site.vm("ci-1", "bios")
    vm.start()
    try:
        text = vm.wait(BOOT_TIMEOUT)
    except TimeoutError as exc:
        vm.kill()
        raise AssertionError(f"{exc}{evidence(site, vm.serial())}") from None
    found = _LINE.findall(text)
    assert found, f"cloud-init's runcmd never printed its {LIVE_MARKER} line before power-off{evidence(site, text)}"
    hostname, marker, revision, iid = found[-1]
    return (hostname, marker, revision, iid.strip()), text


def node_entry(site: Site, revision: str, text: str, timeout: float = 60) -> dict[str, Any]:
    """`netboot-reconcile results --commit REV --node ci-1`, once it shows succeeded with a phone-home."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        proc = site.daemon.results("--commit", revision, "--node", "ci-1")
        assert proc.returncode == 0, f"netboot-reconcile results failed ({proc.returncode}): {proc.stderr}"
        last = proc.stdout
        doc = json.loads(proc.stdout)
        nodes = [n for c in doc["commits"] if c["revision"] == revision for n in c["nodes"] if n["node"] == "ci-1"]
        if nodes and nodes[0]["outcome"] == "succeeded" and any(e["stage"] == "phone-home" for e in nodes[0]["events"]):
            entry: dict[str, Any] = nodes[0]
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"results never showed ci-1 succeeded with a phone-home at {revision[:12]}:\n"
                                 f"{last[:3000]}{evidence(site, text)}")
        time.sleep(1)


def phone_homes(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [e.get("detail", e) for e in entry["events"] if e["stage"] == "phone-home"]


def assert_timeline(entry: dict[str, Any], site: Site, text: str) -> None:
    stages = [e["stage"] for e in entry["events"]]
    missing = [s for s in TIMELINE if s not in stages]
    assert not missing, f"timeline lacks {missing}; recorded {stages}{evidence(site, text)}"
    firsts = [stages.index(s) for s in TIMELINE]
    assert firsts == sorted(firsts), f"timeline out of order: {stages}"
    roots = [e for e in entry["events"] if e["stage"] == "asset"]
    assert any("filesystem.squashfs" in json.dumps(e) for e in roots), roots


def test_debian_cloud_init_runs_the_committed_user_data(live_site: Site) -> None:
    site = live_site
    (hostname, marker, revision, iid), text = boot(site)
    assert (hostname, marker, revision) == ("ci-1", "gitops-1", site.good), evidence(site, text)
    assert "Cloud-init v. 22.4" in text, "not Debian's cloud-init 22.4.x?" + evidence(site, text)

    entry = node_entry(site, site.good, text)
    assert_timeline(entry, site, text)
    homes = phone_homes(entry)
    assert homes and homes[-1].get("instance_id") == iid and homes[-1].get("hostname") == "ci-1", homes


def test_gitops_user_data_change_reaches_next_boot_and_invalid_commit_does_not(live_site: Site) -> None:
    site = live_site
    first = site.good
    before = node_entry(site, first, "")
    old_iid = phone_homes(before)[-1]["instance_id"]

    second = site.repo.commit({"cloud-init/live.yaml": live_user_data("gitops-2")}, "live: user-data marker 2")
    site.daemon.wait_status(lambda s: s.get("last_applied_revision") == second, timeout=120)
    broken = live_user_data("gitops-3").replace("write_files:\n", "write_files: [\n", 1)
    third = site.repo.commit({"cloud-init/live.yaml": broken}, "live: user-data marker 3, not YAML")
    status = site.daemon.wait_status(lambda s: s.get("last_attempted_revision") == third, timeout=120)
    assert status["last_applied_revision"] == second, status
    assert any(f["file"] == "cloud-init/live.yaml" and f["severity"] == "error" for f in status["findings"]), status
    site.good = second

    (hostname, marker, revision, iid), text = boot(site)
    assert (hostname, marker, revision) == ("ci-1", "gitops-2", second), evidence(site, text)
    assert iid != old_iid, f"same instance-id {iid} after a user-data change: cloud-init would skip it"

    entry = node_entry(site, second, text)
    assert_timeline(entry, site, text)
    assert phone_homes(entry)[-1]["instance_id"] == iid
    assert phone_homes(node_entry(site, first, text)) == phone_homes(before)  # commit 1's record stays as it was
    proc = site.daemon.results("--commit", third)
    served = [n for c in json.loads(proc.stdout or "{}").get("commits", []) if c["revision"] == third
              for n in c["nodes"] if n.get("events")]
    assert not served, f"events recorded against the invalid commit: {served}"
