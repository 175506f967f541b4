"""Real firmware netbooting a real Linux kernel through `netboot-reconcile run`, from a git commit.

One lab per module (see conftest.py): the daemon serves DHCP (full mode), TFTP and HTTP on a
bridge in a network namespace; QEMU guests (TCG) boot from it:
- vm-1, BIOS: SeaBIOS + the virtio NIC's iPXE ROM: DHCP -> /boot.ipxe -> /ipxe -> kernel + initrd.
- vm-2, UEFI: OVMF's own PXE (NIC ROM disabled): DHCP arch 7 -> TFTP ipxe.efi -> iPXE -> HTTP.
The busybox initramfs fetches its NoCloud seed from the URL on its command line and POSTs a
report to /report/<mac>; it also prints that report on the serial console, which is what the
tests read for what the guest saw (/proc/cmdline, meta-data, user-data).

What the daemon saw is read from its results store (`results.sqlite3`, boot events stamped with
the serving revision) and from `netboot-reconcile results --format json` (the node's outcome per
commit, with its DHCP, TFTP, script, kernel, initrd, NoCloud and report events).

The tests run in file order and build on each other: first boots, then a GitOps change to the
profile (a kernel argument) applied without restart, then an invalid commit that must not be served.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import serial_reply, serial_report, tail
from tests.e2e.site import Site
from tests.support import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 420  # seconds for one TCG boot on a loaded 2-core machine (a bound, not an expectation)
BIOS_STAGES = {"dhcp-ack", "ipxe-bootstrap", "ipxe-script", "kernel", "initrd", "meta-data", "user-data"}
UEFI_STAGES = BIOS_STAGES | {"tftp"}
MARKER = "e2e.marker=gitops-1"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # screenshots CI keeps (gitignored)


def boot(site: Site, name: str, firmware: str, timeout: float = BOOT_TIMEOUT) -> tuple[dict[str, Any], str]:
    """Power on `name`, wait for it to power off; (the report it printed on its console, the console).
    Also the boot of test_http_boot.py and test_secure_boot.py."""
    vm = site.vm(name, firmware)
    vm.start()
    try:
        text = vm.wait(timeout)
    except TimeoutError as exc:
        vm.kill()
        raise AssertionError(f"{name} ({firmware}): {exc}; serial log {vm.log}:\n{tail(vm.serial())}\n"
                             f"daemon log:\n{tail(site.daemon.log_text())}") from None
    report = serial_report(text)
    assert report is not None, (
        f"{name} ({firmware}) powered off without reaching the Linux callback; serial log {vm.log}:\n{tail(text)}\n"
        f"daemon log:\n{tail(site.daemon.log_text())}"
    )
    assert report["status"] == "success", f"{name}: {report['message']}; serial log:\n{tail(text)}"
    assert report["mac"] == site.node(name).mac
    return report, text


Event = tuple[str, str, dict[str, Any]]


def boot_events(site: Site, revision: str | None = None, mac: str | None = None) -> list[Event]:
    """(stage, revision, detail) of the daemon's recorded boot events, oldest first."""
    db = site.daemon.state_dir / "results.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT stage, revision, detail FROM boot_events WHERE (? IS NULL OR revision = ?) "
            "AND (? IS NULL OR mac = ?) ORDER BY id",
            (revision, revision, mac, mac),
        ).fetchall()
    finally:
        conn.close()
    return [(stage, rev, json.loads(detail)) for stage, rev, detail in rows]


def wait_stages(site: Site, revision: str, mac: str, stages: Iterable[str], timeout: float = 20) -> set[str]:
    """The stages recorded for (revision, mac), once they include `stages` (events are written in batches)."""
    want = set(stages)
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = {stage for stage, _, _ in boot_events(site, revision, mac)}
        if want <= seen:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"events for {mac} at {revision[:12]}: missing {sorted(want - seen)}; seen {sorted(seen)}")


def assert_served(report: dict[str, Any], revision: str, mac: str) -> None:
    """The guest booted `revision`: its NoCloud URL is pinned to it and its user-data carries it."""
    assert f"/r/{revision}/cloud-init/{mac}/" in report["cmdline"], report["cmdline"]
    assert f"e2e.report=http://10.10.10.12/report/{mac}" in report["cmdline"]
    assert revision in report["user_data"], report["user_data"]
    assert report["user_data"].startswith("#cloud-config")
    assert report["meta_data"].startswith("instance-id: iid-"), report["meta_data"]


def node_result(site: Site, revision: str, name: str, stages: set[str], timeout: float = 30) -> dict[str, Any]:
    """`netboot-reconcile results --commit REV --node NAME --format json`: the node's entry, once it
    succeeded with every stage in `stages` plus `report` (events are written in batches)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        proc = site.daemon.results("--commit", revision, "--node", name)
        assert proc.returncode == 0, f"netboot-reconcile results failed ({proc.returncode}): {proc.stderr}"
        last = json.loads(proc.stdout)
        commits = [c for c in last["commits"] if c["revision"] == revision]
        nodes = [n for c in commits for n in c["nodes"] if n["node"] == name]
        if nodes:
            entry: dict[str, Any] = nodes[0]
            seen = {e["stage"] for e in entry["events"]}
            if entry["outcome"] == "succeeded" and stages | {"report"} <= seen:
                assert entry["mac"] == site.node(name).mac
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"results never showed {name} succeeded at {revision[:12]} with {sorted(stages)}"
                                 f" + report:\n{json.dumps(last, indent=1)[:3000]}")
        time.sleep(1)


def assert_reply(text: str, revision: str, name: str) -> None:
    """The daemon took the guest's report for `name` at `revision` (its answer, as the guest printed it)."""
    body = serial_reply(text)
    assert body, f"{name} got no answer to its report POST:\n{tail(text)}"
    reply = json.loads(body)
    assert reply.get("recorded") is True and reply.get("node") == name and reply.get("revision") == revision, reply


# -- the tests, in order ---------------------------------------------------------------------------


def test_bios_ipxe_rom_boots_the_commit(site: Site) -> None:
    node = site.node("vm-1")
    report, console = boot(site, "vm-1", "bios")
    assert_served(report, site.good, node.mac)
    assert "hostname: vm-1" in report["user_data"]
    assert_reply(console, site.good, "vm-1")
    seen = wait_stages(site, site.good, node.mac, BIOS_STAGES)
    assert "tftp" not in seen  # the iPXE ROM goes straight to HTTP
    events = boot_events(site, site.good, node.mac)
    acks = [d for stage, _, d in events if stage == "dhcp-ack"]
    bootstrap = "http://10.10.10.12/boot.ipxe"
    assert any(d.get("user_class") == "iPXE" and d.get("filename") == bootstrap for d in acks), acks
    assert any(d.get("ip") == node.ip for d in acks), acks
    kernel = [d for stage, _, d in events if stage == "kernel"]
    assert kernel and all(d["status"] == 200 for d in kernel), kernel

    result = node_result(site, site.good, "vm-1", BIOS_STAGES)
    assert "fetched NoCloud seed" in result["reason"], result["reason"]


def test_uefi_ovmf_pxe_boots_through_tftp_ipxe_efi(site: Site) -> None:
    node = site.node("vm-2")
    report, console = boot(site, "vm-2", "uefi")
    assert_served(report, site.good, node.mac)
    assert_reply(console, site.good, "vm-2")
    wait_stages(site, site.good, node.mac, UEFI_STAGES)
    events = boot_events(site, site.good, node.mac)
    acks = [d for stage, _, d in events if stage == "dhcp-ack"]
    assert any(d.get("arch") == 7 and d.get("filename") == "ipxe.efi" for d in acks), acks
    assert any(d.get("user_class") == "iPXE" for d in acks), acks
    tftp_ok = [d for stage, _, d in events if stage == "tftp" and d.get("result") == "ok"]
    assert tftp_ok and tftp_ok[-1]["file"] == "ipxe.efi" and tftp_ok[-1]["bytes"] > 0, tftp_ok

    node_result(site, site.good, "vm-2", UEFI_STAGES)


def test_the_dashboard_draws_the_uefi_boot_from_dhcp_to_report(site: Site) -> None:
    """Issue 24: the node page of vm-2, after its real firmware boot (OVMF PXE: DHCP, TFTP ipxe.efi,
    iPXE script, kernel, initrd, NoCloud seed, report), in headless Chromium inside the lab's
    namespace: a waterfall with every stage of it, and its events in words."""
    chromium = require_tool("chromium", "chromium")
    profile = site.lab.workdir / "chromium-profile"
    url = f"{site.daemon.base}/ui/nodes/vm-2"
    flags = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}")
    proc = site.lab.run(chromium, *flags, "--dump-dom", url, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    phases = re.findall(r'<g data-phase="([^"]+)" data-seconds="([0-9.]+)"', dom)
    assert [p for p, _ in phases] == ["DHCP", "TFTP", "script", "kernel", "initrd", "seed", "report"], phases
    assert re.search(r'<section id="r-[0-9a-f]{40}" data-revision="[0-9a-f]{40}" data-outcome="succeeded"', dom), \
        dom[:3000]
    assert "TFTP sent ipxe.efi (" in dom and "{&quot;" not in dom  # the transfer named, in words not JSON
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "e2e-node-vm-2.png"
    proc = site.lab.run(chromium, *flags, f"--screenshot={shot}", "--window-size=1280,1000", "--hide-scrollbars",
                        url, timeout=120)
    assert proc.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stderr[-2000:]


def test_gitops_kernel_argument_applied_without_restart(site: Site) -> None:
    old = site.good
    node = site.node("vm-1")
    old_events = len(boot_events(site, old, node.mac))
    old_report = serial_report(site.vm("vm-1", "bios").serial())
    old_result = node_result(site, old, "vm-1", BIOS_STAGES)
    profile = site.files["profiles/e2e.yaml"].replace('"e2e.report={{ report_url }}"',
                                                      f'"e2e.report={{{{ report_url }}}}", {MARKER}')
    assert profile != site.files["profiles/e2e.yaml"]
    pid = site.daemon.proc.pid if site.daemon.proc else None
    new = site.repo.commit({"profiles/e2e.yaml": profile}, f"profile e2e: add {MARKER}")
    site.daemon.wait_status(lambda s: s.get("last_applied_revision") == new, timeout=120)
    assert site.daemon.proc is not None and site.daemon.proc.pid == pid and site.daemon.proc.poll() is None
    site.files["profiles/e2e.yaml"] = profile
    site.good = new

    report, console = boot(site, "vm-1", "bios")
    assert MARKER in report["cmdline"].split(), report["cmdline"]
    assert_served(report, new, node.mac)
    assert_reply(console, new, "vm-1")
    assert old_report is not None and old_report["meta_data"] != report["meta_data"]  # new plan, new instance-id
    wait_stages(site, new, node.mac, BIOS_STAGES)
    assert len(boot_events(site, old, node.mac)) == old_events  # the old commit's record stays as it was

    node_result(site, new, "vm-1", BIOS_STAGES)
    after = node_result(site, old, "vm-1", BIOS_STAGES)  # the old commit's result stays as it was
    keys = ("outcome", "started", "finished", "attempts", "reason")
    assert {k: after[k] for k in keys} == {k: old_result[k] for k in keys}
    assert len(after["events"]) == len(old_result["events"])


def test_invalid_commit_is_not_served_and_status_names_it(site: Site) -> None:
    good = site.good
    node = site.node("vm-1")
    bad_node = f"mac: {node.mac}\nip: {node.ip}\nprofile: no-such-profile\n"
    bad = site.repo.commit({"nodes/vm-1.yaml": bad_node}, "vm-1: point at a profile that does not exist")
    status = site.daemon.wait_status(lambda s: s.get("last_attempted_revision") == bad, timeout=120)
    assert status["last_applied_revision"] == good, status
    assert status["generation"]["revision"] == good, status
    assert status["condition"] != "Ready", status
    findings = status["findings"]
    assert any(f["file"] == "nodes/vm-1.yaml" and f["severity"] == "error" and "no-such-profile" in f["message"]
               for f in findings), findings

    report, console = boot(site, "vm-1", "bios")
    assert MARKER in report["cmdline"].split(), report["cmdline"]
    assert_served(report, good, node.mac)
    assert_reply(console, good, "vm-1")
    assert boot_events(site, bad) == []  # nothing was ever served from the invalid commit
    status = site.daemon.status()
    assert status["last_attempted_revision"] == bad and status["last_applied_revision"] == good, status
    proc = site.daemon.results("--commit", bad)
    assert not [n for c in json.loads(proc.stdout or "{}").get("commits", []) if c["revision"] == bad
                for n in c["nodes"] if n.get("outcome") == "succeeded"], proc.stdout[:2000]
