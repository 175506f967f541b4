"""Server health as the sockets say it: /status Degraded (ServerDown), /readyz, netboot_server_up.

Real daemon processes on loopback. DHCP binds to netboot.yaml's `dhcp.interface` (no
--dhcp-interface here): an interface that does not exist keeps it down, with the interface and
the OS error in /status, until a commit names one that exists (`lo`). A second daemon's HTTP
port in use makes it exit 2 naming the process that holds the port.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.daemon.bind_errors import explain, port_holder
from reconciler.daemon.supervisor import RETRY_MAX
from tests.integration.daemon_support import HANG, ROOT, DaemonProcess, WorkTree, http_get, wait_for
from tests.support import free_port, udp_port_taken

MISSING = "nbr-missing0"


def site_with_interface(tree: WorkTree, interface: str) -> dict[str, str | None]:
    text = (tree.path / "netboot.yaml").read_text()
    lines = [f"  interface: {interface}" if line.startswith("  interface:") else line for line in text.splitlines()]
    return {"netboot.yaml": "\n".join(lines) + "\n"}


def metric(url: str, series: str) -> str | None:
    body = http_get(url + "/metrics")[1].decode()
    return next((line.rpartition(" ")[2] for line in body.splitlines() if line.startswith(series + " ")), None)


def test_dhcp_on_a_missing_interface_is_down_in_status_readyz_and_metrics_until_a_commit_fixes_it(
        tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    tree.commit("a missing interface", site_with_interface(tree, MISSING))
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"], dhcp=True,
                           dhcp_interface=None).start()
    try:
        wait_for(lambda: daemon.served_revision() == tree.head(), "the first commit applied", timeout=90)
        # (The packet thread tries the bind within a moment of the swap; until then: "not serving".)
        status = wait_for(lambda: (s := daemon.status()) and "No such device" in s["message"] and s, "Degraded",
                          timeout=60)
        assert status["condition"] == "Degraded"
        assert status["reason"] == "ServerDown"
        assert "dhcp" in status["message"] and MISSING in status["message"]
        assert "No such device" in status["message"] and "dhcp.interface" in status["message"]
        assert status["servers"]["dhcp"]["state"] == "down"
        assert status["servers"]["http"]["state"] == "running"
        assert http_get(daemon.url + "/healthz")[0] == 200  # liveness: a valid generation is served
        code, body = http_get(daemon.url + "/readyz")
        assert code == 503 and MISSING in body.decode()
        assert metric(daemon.url, 'netboot_server_up{server="dhcp"}') == "0.0"
        assert metric(daemon.url, 'netboot_server_up{server="http"}') == "1.0"
        assert metric(daemon.url, 'netboot_reconcile_total{result="failed"}') == "0.0"  # present before any
        assert metric(daemon.url, 'netboot_reconcile_total{result="rejected"}') == "0.0"  # /status's word
        assert not udp_port_taken(daemon.dhcp_port)
        assert daemon.stop() == 0

        # A restart with that generation on disk: DHCP fails to start; the daemon stays up, says so.
        daemon.start()
        status = wait_for(lambda: (s := daemon.status()) and s["condition"] == "Degraded" and s, "Degraded again",
                          timeout=60)
        assert MISSING in status["message"] and status["servers"]["dhcp"]["state"] == "down"

        fixed = tree.commit("dhcp on lo", site_with_interface(tree, "lo"))
        daemon.signal(signal.SIGHUP)
        status = wait_for(lambda: (s := daemon.status()) and s["condition"] == "Ready" and s,
                          "Ready once the commit names an interface that exists", timeout=90)
        assert status["last_applied_revision"] == fixed
        assert status["servers"]["dhcp"] == {"state": "running", "address": f"127.0.0.1:{daemon.dhcp_port}",
                                             "interface": "lo"}
        assert http_get(daemon.url + "/readyz")[0] == 200
        assert metric(daemon.url, 'netboot_server_up{server="dhcp"}') == "1.0"
        assert udp_port_taken(daemon.dhcp_port)
    finally:
        daemon.stop()


def test_an_http_port_in_use_exits_2_naming_the_process_that_holds_it(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); print('ok', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        daemon = DaemonProcess(str(tree.path), tmp_path / "state", port=port).start(wait=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(30) == 2
        log = daemon.log()
        assert f"127.0.0.1:{port} is in use, held by pid {holder.pid} (python" in log, log
        assert "Traceback" not in log
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(("code", "port", "needs"), [
    (errno.EACCES, 67, ["port 67", "CAP_NET_BIND_SERVICE", "--dhcp-listen"]),
    (errno.ENODEV, 67, ["interface 'eth9' does not exist", "lo", "dhcp.interface", "--dhcp-interface"]),
    (errno.EADDRNOTAVAIL, 67, ["10.1.2.3 is not an address of this host", "--dhcp-listen"]),
])
def test_a_bind_error_says_what_to_change(code: int, port: int, needs: list[str]) -> None:
    text = explain("dhcp", f"10.1.2.3:{port}", "eth9", OSError(code, os.strerror(code)))
    assert text.startswith(f"dhcp on 10.1.2.3:{port} interface eth9: {os.strerror(code)}: ")
    for need in needs:
        assert need in text


def test_port_holder_finds_a_udp_socket_of_another_process() -> None:
    port = free_port(socket.SOCK_DGRAM)
    child = subprocess.Popen([sys.executable, "-c", (
        "import socket, time\n"
        f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', {port})); "
        "print('ok', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        assert (port_holder(port, udp=True) or "").startswith(f"pid {child.pid} (python")
    finally:
        child.kill()
        child.wait()


def test_a_tftp_port_held_by_another_process_is_named_then_retried_until_free(tmp_path: Path) -> None:
    """TFTP failing to start does not stop the daemon: Degraded, the holder named, and the
    supervisor's retries (backoff) bring it up once the port is free, with no commit."""
    tree = WorkTree(tmp_path / "repo")
    port = free_port(socket.SOCK_DGRAM)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import socket, time\n"
        f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', {port})); "
        "print('ok', flush=True); time.sleep(3600)\n")], stdout=subprocess.PIPE)  # until killed below
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"])
    daemon.args = [a for a in daemon.args if a != "--no-tftp"] + ["--tftp-listen", f"127.0.0.1:{port}",
                                                                  "--tftp-root", str(tmp_path)]
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        daemon.start()
        status = wait_for(lambda: (s := daemon.status()) and s["condition"] == "Degraded" and s, "Degraded",
                          timeout=HANG)
        tftp = status["servers"]["tftp"]
        assert tftp["state"] == "down"
        assert f"127.0.0.1:{port} is in use, held by pid {holder.pid} (python" in tftp["error"], tftp
        assert http_get(daemon.url + "/readyz")[0] == 503
        holder.kill()
        holder.wait()
        # The next retry is due at most RETRY_MAX after the last (a slow start under load has
        # doubled the delay up to it); Ready also needs the first commit applied, however long
        # that takes on this machine. Each waits for its own condition.
        def tftp_running() -> bool:
            daemon.alive()
            s = daemon.status()
            return s is not None and s["servers"]["tftp"]["state"] == "running"

        wait_for(tftp_running, "TFTP up after a retry", timeout=RETRY_MAX + 60)
        daemon.wait_served(tree.head())
        wait_for(lambda: (s := daemon.status()) and s["condition"] == "Ready", "Ready")
        assert http_get(daemon.url + "/readyz")[0] == 200
        assert metric(daemon.url, 'netboot_server_up{server="tftp"}') == "1.0"
    finally:
        holder.kill()
        holder.wait()
        daemon.stop()
