"""Two daemons started with one `--instance` name on one PostgreSQL store: the second is refused.

Instances tell their own lease changes from others' by that name (a NOTIFY stamped with it is
skipped as their own), so two with one name silently ignored each other's (and /status showed
one row for both). Now the name is claimed at start (`adapters.pginstance`): the second exits 2
naming the name, the store and where the first connects from; once the first stopped, the name
is free. Real daemon processes and a real PostgreSQL (tests/pgcluster.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.daemon_support import HANG, DaemonProcess, WorkTree
from tests.pgcluster import PgCluster


def test_a_second_instance_with_the_same_name_is_refused_at_start(tmp_path: Path, pg_cluster: PgCluster) -> None:
    tree = WorkTree(tmp_path / "work")
    url = pg_cluster.create_database()
    extra = ["--interval", "3600", "--store", url]
    first = DaemonProcess(str(tree.path), tmp_path / "a", [*extra, "--instance", "rack-1"])
    twin = DaemonProcess(str(tree.path), tmp_path / "a2", [*extra, "--instance", "rack-1"])
    other = DaemonProcess(str(tree.path), tmp_path / "b", [*extra, "--instance", "rack-2"])
    try:
        first.start()
        first.wait_served(tree.head())
        twin.start(wait=False)
        assert twin.proc is not None and twin.proc.wait(HANG) == 2, twin.log()
        said = twin.log()
        assert "cannot start: another instance named 'rack-1' is connected to the store" in said, said
        assert "from a local socket, since" in said and "give each instance its own --instance" in said, said
        other.start()  # another name is welcome
        other.wait_served(tree.head())
        assert first.proc is not None and first.proc.poll() is None  # the first goes on serving
        assert first.stop() == 0
        twin.start()  # the name is free once its holder stopped
        twin.wait_served(tree.head())
    finally:
        first.stop()
        twin.stop()
        other.stop()
