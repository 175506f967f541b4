"""Instances sharing a PostgreSQL store take each other's boot reports: one report secret for all.

A machine installs from the seed one instance rendered (its report token, HMAC of that
instance's secret) and reports to whichever instance the address it reports to leads to; when
that address moves (keepalived's, after an instance died), the report reaches another one. Each
state directory had its own secret, so the other instance refused the token (403) and the
install was never recorded. Real daemon processes and a real PostgreSQL (tests/pgcluster.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.daemon_support import DaemonProcess, WorkTree, http_get, http_post
from tests.pgcluster import PgCluster

MAC = "52:54:00:aa:bb:01"  # node-1 of example-repo: the autoinstall profile, whose seed reports


def test_a_report_signed_for_one_instance_is_taken_by_another(tmp_path: Path, pg_cluster: PgCluster) -> None:
    tree = WorkTree(tmp_path / "work")
    url = pg_cluster.create_database()
    extra = ["--interval", "3600", "--store", url]
    first = DaemonProcess(str(tree.path), tmp_path / "a", [*extra, "--instance", "a"])
    second = DaemonProcess(str(tree.path), tmp_path / "b", [*extra, "--instance", "b"])
    try:
        first.start()
        second.start()
        first.wait_served(tree.head())
        second.wait_served(tree.head())
        code, seed = http_get(f"{first.url}/cloud-init/{MAC}/user-data")
        assert code == 200, seed
        tokens = re.findall(rb"token=([0-9a-f]{32})", seed)
        assert tokens, seed[:2000]
        code, reply = http_post(f"{second.url}/report/{MAC}?token={tokens[0].decode()}",
                                json.dumps({"status": "success"}).encode(), {"Content-Type": "application/json"})
        assert code == 200, reply  # was 403: the token of another instance's secret
        assert http_get(f"{second.url}/cloud-init/{MAC}/user-data")[1] == seed  # one secret: the same seed
    finally:
        first.stop()
        second.stop()
