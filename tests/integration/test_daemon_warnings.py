"""/status `warnings` and `netboot-reconcile status`: a serving DHCP that sends clients where we do not listen."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.integration.daemon_support import EXAMPLE, ROOT, DaemonProcess, WorkTree, wait_for
from tests.support import free_port

DHCP_OFF = (EXAMPLE / "netboot.yaml").read_text().replace("mode: full ", "mode: off  ")


def status_text(daemon: DaemonProcess) -> str:
    proc = subprocess.run([sys.executable, "-m", "reconciler", "status", "--url", daemon.url], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr  # warnings do not make it not Ready
    return proc.stdout


def test_dhcp_pointing_past_our_listeners_is_warned_until_it_does_not_serve(tmp_path: Path) -> None:
    assert "mode: off" in DHCP_OFF
    tree = WorkTree(tmp_path / "repo")
    first = tree.head()
    # DHCP on; HTTP on 127.0.0.1:<ephemeral> and TFTP off, while example-repo's server is 10.10.10.12:80
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"], dhcp=True).start()
    try:
        status = wait_for(lambda: (s := daemon.status()) and s["last_applied_revision"] == first and s,
                          "the first commit applied")
        http, tftp = status["warnings"]
        assert "http://10.10.10.12/" in http and f"127.0.0.1:{daemon.port}" in http
        assert "--http-listen 10.10.10.12:80" in http
        assert "10.10.10.12:69" in tftp and "--no-tftp" in tftp
        assert status["condition"] == "Ready"
        text = status_text(daemon)
        assert f"warning:    {http}" in text and f"warning:    {tftp}" in text
        assert daemon.log().count(http) == 1  # logged once for the generation

        off = tree.commit("dhcp off", {"netboot.yaml": DHCP_OFF})
        status = wait_for(lambda: (s := daemon.status()) and s["last_applied_revision"] == off and s,
                          "the dhcp-off commit applied")
        assert status["warnings"] == []
        assert "warning:" not in status_text(daemon)
        assert daemon.log().count(http) == 1
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_no_warnings_without_the_embedded_dhcp(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"]).start()  # --no-dhcp
    try:
        status = wait_for(lambda: (s := daemon.status()) and s["last_applied_revision"] == tree.head() and s,
                          "the first commit applied")
        assert status["warnings"] == []
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_boot_files_missing_from_the_tftp_root_are_warned(tmp_path: Path) -> None:
    """PXE firmware asks TFTP for boot_files' names: one the root does not hold is 'file not found'
    at every such machine's boot, so the daemon says so when it activates the generation."""
    root = tmp_path / "tftp-root"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(b"\x00" * 64)  # the BIOS binary is there; the UEFI ones are not
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"])
    daemon.args = [a for a in daemon.args if a != "--no-tftp"] + [
        "--tftp-listen", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "--tftp-root", str(root)]
    daemon.start()
    try:
        status = wait_for(lambda: (s := daemon.status()) and s["last_applied_revision"] == tree.head() and s,
                          "the first commit applied")
        missing = [w for w in status["warnings"] if w.startswith("boot_files:")]
        assert [w.split("'")[1] for w in missing] == ["ipxe.efi", "snp.efi"], status["warnings"]
        assert "is not in the TFTP root" in missing[0] and status["condition"] == "Ready"
        assert missing[0] in daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
