"""A bench stopped by SIGTERM leaves no PostgreSQL running: bench/scale_out.py --smoke (the one
bench that starts a cluster, tests/pgcluster.py), terminated once its cluster runs. Before,
Python's default SIGTERM ended it without its `finally`: postgres went on running, with its
directory in /tmp, until the machine restarted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.daemon_support import wait_for
from tests.pgcluster import PG_BIN
from tests.support import processes_naming, require_root

ROOT = Path(__file__).resolve().parents[2]


def test_scale_out_smoke_terminated_stops_its_postgresql(tmp_path: Path) -> None:
    require_root()  # the bench makes network namespaces and runs initdb as postgres
    log = tmp_path / "bench.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.scale_out", "--smoke"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    root: Path | None = None
    try:
        found = wait_for(lambda: re.search(r"^postgresql: (/\S+)$", log.read_text(), re.M) or proc.poll() is not None,
                         "the bench's cluster", timeout=300)
        assert proc.poll() is None and not isinstance(found, bool), log.read_text()
        root = Path(found.group(1))
        assert (root / "data" / "postmaster.pid").exists() and processes_naming(root)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(300) == 128 + signal.SIGTERM, log.read_text()
        assert processes_naming(root) == [], "postgres still running after the bench ended"
        assert not root.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if root is not None and (root / "data").exists():  # the old code's leftovers: stopped here
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(root / "data"),
                            "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)
        for pid in processes_naming(root) if root is not None else []:
            os.kill(pid, signal.SIGKILL)
