"""The instance running a site's rollouts is cut off (its host died): another takes over in seconds.

A host that dies sends no FIN: PostgreSQL kept the cut-off instance's session, and the rollout
lock with it, until the system's TCP keepalive gave up (about 2 h 11 min by default), and no
instance ran the site's rollouts meanwhile. Here instance `a` runs in a network namespace of the
test's own, reaching PostgreSQL over a veth pair; instance `b` over PostgreSQL's unix socket.
`a` takes the lock; the test sets the veth down (nothing is sent either way, as when a host
dies) and `b` says it runs the rollouts well before any system default would have let go.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.daemon_support import DaemonProcess, WorkTree, wait_for
from tests.pgcluster import PORT, PgCluster
from tests.support import free_port, require_root, require_tool, write_bmc_credentials

NET = "10.213.{}.{}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def test_a_driver_cut_off_from_postgresql_is_replaced_within_a_minute(tmp_path: Path) -> None:
    require_root()
    require_tool("ip", "iproute2")
    pid = os.getpid() % 250
    ns, host_side, ns_side = f"nbr-rv-{os.getpid()}", f"nbrh{os.getpid()}"[:15], f"nbrn{os.getpid()}"[:15]
    server, client = NET.format(pid, 1), NET.format(pid, 2)
    cluster = PgCluster(prefix="nbr-pg-driver-")
    daemons: list[DaemonProcess] = []
    try:
        cluster.stop()  # PostgreSQL also on the veth's address, trusting the namespace's
        with open(cluster.data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"listen_addresses = '{server}'\n")
        with open(cluster.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {client}/32 trust\n")
        _ip("netns", "add", ns)
        _ip("link", "add", host_side, "type", "veth", "peer", "name", ns_side)
        _ip("link", "set", ns_side, "netns", ns)
        _ip("addr", "add", f"{server}/30", "dev", host_side)
        _ip("link", "set", host_side, "up")
        _ip("-n", ns, "addr", "add", f"{client}/30", "dev", ns_side)
        _ip("-n", ns, "link", "set", ns_side, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        cluster.start()
        database = "rollouts"
        cluster.create_database(database)

        tree = WorkTree(tmp_path / "work")
        creds = tmp_path / "bmc-credentials.yaml"
        write_bmc_credentials(creds, "lab", "unused")
        extra = ["--interval", "3600", "--bmc-credentials", str(creds)]
        cut_off = DaemonProcess(str(tree.path), tmp_path / "a",
                                [*extra, "--store", f"postgresql://postgres@{server}:{PORT}/{database}",
                                 "--instance", "a"])
        port = free_port()  # the namespace's own port space: any port free here is free there
        cut_off.args = ["ip", "netns", "exec", ns, *[f"{client}:{port}" if a == f"127.0.0.1:{cut_off.port}" else a
                                                   for a in cut_off.args]]
        cut_off.port, cut_off.url = port, f"http://{client}:{port}"
        daemons.append(cut_off)
        cut_off.start()
        wait_for(lambda: "this instance (a) drives them" in cut_off.log(), "instance a to run the rollouts")
        survivor = DaemonProcess(str(tree.path), tmp_path / "b",
                                 [*extra, "--store", cluster.url(database), "--instance", "b"])
        daemons.append(survivor)
        survivor.start()
        assert "drives them" not in survivor.log()  # a holds the lock

        _ip("link", "set", host_side, "down")  # a's host is gone: no FIN, no RST, nothing
        wait_for(lambda: "this instance (b) drives them" in survivor.log(),
                 f"instance b to take the rollouts over\n{survivor.log()[-2000:]}", timeout=90)
    finally:
        for daemon in daemons:
            daemon.kill()
        subprocess.run(["ip", "link", "del", host_side], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        cluster.close()
