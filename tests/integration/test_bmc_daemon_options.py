"""`run --bmc-credentials FILE`: checked at start-up like the other secret files (exit 2, the file
named, nothing of its text quoted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.render_support import EXAMPLE, ROOT

PASSWORD = "pw-never-shown-4Rt"


def _run(tmp_path: Path, creds: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "run", "--repo", str(EXAMPLE), "--state-dir",
                           str(tmp_path / "state"), "--no-dhcp", "--no-tftp", "--http-listen", "127.0.0.1:0",
                           "--bmc-credentials", str(creds)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_a_too_open_credentials_file_stops_the_daemon_at_start(tmp_path: Path) -> None:
    creds = tmp_path / "bmc.yaml"
    creds.write_text(json.dumps({"lab": {"username": "admin", "password": PASSWORD}}))
    creds.chmod(0o644)
    result = _run(tmp_path, creds)
    assert result.returncode == 2
    assert f"{creds}: permissions 0644 are too open" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_a_malformed_credentials_file_is_reported_by_line_without_its_text(tmp_path: Path) -> None:
    creds = tmp_path / "bmc.yaml"
    creds.write_text(f"lab:\n  username: admin\n  password: [{PASSWORD}\n")
    creds.chmod(0o600)
    result = _run(tmp_path, creds)
    assert result.returncode == 2 and f"{creds}: not valid YAML or JSON" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
