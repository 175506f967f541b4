"""A rollout through a Redfish BMC: sushy-tools' emulator (fake driver, https, basic auth) as the
node's BMC. The daemon power-cycles the node with a one-time PXE override; once the node is seen
netbooting (here: its boot report, posted by the test as the installed system would), the daemon
sets the override back (target None where the service allows it, else Hdd; enabled Disabled):
Redfish services that keep `Once` as `Continuous` (sushy-tools' libvirt driver, some BMCs) would
otherwise netboot the machine at every later boot."""

from __future__ import annotations

from pathlib import Path

from reconciler.core import template
from tests.integration.daemon_support import DaemonProcess, WorkTree, http_post, wait_for
from tests.integration.test_power_redfish import PASSWORD, _system, emulator
from tests.support import write_bmc_credentials

__all__ = ["emulator"]  # the fixture, used by name

MAC = "52:54:00:aa:bb:02"  # node-2: the harness fetches node-1's script to see what is served


def _boot(port: int) -> dict[str, object]:
    system = _system(port)
    assert system is not None
    boot = system["Boot"]
    assert isinstance(boot, dict)
    return {"power": system["PowerState"], **boot}


def test_a_redfish_rollout_sets_pxe_once_then_clears_the_override(tmp_path: Path, emulator: int) -> None:
    tree = WorkTree(tmp_path / "work")
    node = (tree.path / "nodes" / "node-2.yaml").read_text()
    with_bmc = node + (f"bmc: {{driver: redfish, address: '127.0.0.1:{emulator}', credentials: rf, "
                       f"verify_ca: '{tmp_path / 'redfish' / 'cert.pem'}'}}\n")
    tree.commit("a Redfish BMC and a rollout", {
        "nodes/node-2.yaml": with_bmc,
        "netboot.yaml": (tree.path / "netboot.yaml").read_text() + "rollout: {power: true}\n"})
    creds = tmp_path / "creds.json"
    write_bmc_credentials(creds, "rf", PASSWORD)
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600", "--bmc-credentials",
                                                                 str(creds)]).start()
    try:
        daemon.wait_served(tree.head())
        bump = tree.commit("reinstall node-2", {"nodes/node-2.yaml": with_bmc + "reinstall: 1\n"})
        daemon.wait_served(bump)
        # (the emulator's system starts On: the cycle takes it Off, sets Pxe, then On)
        wait_for(lambda: (b := _boot(emulator)) and b["power"] == "On" and b["BootSourceOverrideTarget"] == "Pxe",
                 "the power cycle with a PXE override", timeout=180, every=0.5)
        wait_for(lambda: daemon.status_doc()["rollout"]["nodes"]["node-2"].startswith("in-flight: power-cycled"),
                 "the power cycle to be done", timeout=180, every=0.5)

        secret = (daemon.state_dir / "report-secret").read_bytes().strip()
        token = template.report_token(secret, "node-2", bump)
        code, _ = http_post(f"{daemon.url}/report/{MAC}?token={token}", b'{"status": "success"}',
                            {"Content-Type": "application/json"})
        assert code == 200
        # sushy-tools allows no target None: the disk, with the override disabled
        boot = wait_for(lambda: (b := _boot(emulator)) and b["BootSourceOverrideTarget"] == "Hdd" and b,
                        "the override set back", timeout=120, every=0.5)
        assert boot["power"] == "On"
        status = daemon.status_doc()["rollout"]
        assert status["state"] == "done" and status["nodes"]["node-2"].startswith("done")
        assert PASSWORD not in daemon.log() and "Traceback" not in daemon.log()
    finally:
        daemon.stop()
