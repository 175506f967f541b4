"""The daemon tells a `secure_boot` site which signed binary its machine lacks (issue 29 item 2)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.daemon_support import EXAMPLE, DaemonProcess, WorkTree, wait_for

SECURE = (EXAMPLE / "netboot.yaml").read_text() + (
    "\nsecure_boot: true\n"
    "boot_files:\n  shim_x64: /nonexistent/shimx64.efi.signed\n"
)


def test_a_missing_shim_is_a_warning_naming_the_path_and_the_package(tmp_path: Path) -> None:
    assert "boot_files" not in (EXAMPLE / "netboot.yaml").read_text()  # the key is added once
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"]).start()
    try:
        secure = tree.commit("secure boot", {"netboot.yaml": SECURE})
        daemon_status = wait_for(lambda: (s := daemon.status()) and s["last_applied_revision"] == secure and s,
                                 "the secure_boot commit applied")
        assert daemon_status["condition"] == "Ready"  # a warning: the commit is served
        log = daemon.log()
        assert "secure-boot-file-missing" in log, log[-3000:]
        assert "/nonexistent/shimx64.efi.signed" in log and "apt-get install shim-signed" in log
        assert "secure-boot-file-missing" in json.dumps(daemon_status), json.dumps(daemon_status)[:3000]
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
