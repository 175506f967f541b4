"""HTTP latency while a large commit reconciles: validation and rendering in the worker process
(the daemon's default) against the same work in the serving process (`--no-worker`, the peer).

Run on purpose (not a test), as a module: `.venv/bin/python -m bench.reconcile_serving
[--nodes 10000] [--seconds 3]` (`--smoke`: 20 nodes, for the tests). For each mode a real daemon
serves a local repository of N nodes; a client thread here fetches `/boot.ipxe` over one
keep-alive connection as fast as it answers, first with the daemon idle, then from the commit
that changes one node until that commit is served (every node is validated and rendered again),
then from a commit adding a template bomb until it is attempted (refused: a finding).
Printed: p50, p99 and max of the request latency idle and during the reconcile, and the
reconcile's duration. Target: p99 < 50 ms during a 10,000-node reconcile with the worker.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.reconcile_latency import edit, pct, seed, wait_revision
from tests.integration.daemon_support import DaemonProcess, WorkTree, git


class Prober:
    """GET /boot.ipxe in a loop on one connection; latencies (s) recorded with their start time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                conn.request("GET", "/boot.ipxe")
                resp = conn.getresponse()
                resp.read()
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            self.samples.append((t0, time.monotonic() - t0))
            time.sleep(0.001)
        conn.close()

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def between(self, start: float, end: float) -> list[float]:
        return [d for t, d in self.samples if start <= t <= end]


TEMPLATE = "cloud-init/ubuntu-autoinstall.yaml"
BOMB = "# {{ 'A' * 1000000000 }}\n"  # refused by the sandbox (a finding), however it is computed


def wait_attempted(daemon: DaemonProcess, revision: str, timeout: float = 1800) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.status()
        if status is not None and status.get("last_attempted_revision") == revision:
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {revision} to be attempted\n{daemon.log()[-2000:]}")


def measure(mode: str, nodes: int, seconds: float, work: Path) -> dict[str, tuple[list[float], float]]:
    tree = WorkTree(work / "repo")
    seed(tree, nodes)
    extra = ["--interval", "3600", *(["--no-worker"] if mode == "in-process" else [])]
    daemon = DaemonProcess(str(tree.path), work / "state", extra)
    daemon.start()
    try:
        wait_revision(daemon, tree.head(), timeout=1800)
        with Prober(daemon.port) as probe:
            t_idle = time.monotonic()
            time.sleep(seconds)
            edit(tree, 1)
            t0 = time.monotonic()
            git(tree.path, "commit", "-q", "-m", "one node changes")
            t1 = wait_revision(daemon, tree.head(), timeout=1800)
            template = tree.path / TEMPLATE
            template.write_text(template.read_text() + BOMB)
            git(tree.path, "add", "-A")
            t2 = time.monotonic()
            git(tree.path, "commit", "-q", "-m", "a template bomb")
            t3 = wait_attempted(daemon, tree.head())
        return {"idle": (probe.between(t_idle, t0), seconds), "busy": (probe.between(t0, t1), t1 - t0),
                "bomb": (probe.between(t2, t3), t3 - t2)}
    finally:
        daemon.stop()


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<8} {'-':>6}"
    ms = [v * 1000 for v in values]
    return f"{label:<8} {len(ms):>6} {statistics.median(ms):8.1f} {pct(ms, 0.99):8.1f} {max(ms):8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=3.0, help="idle sampling before the commit")
    parser.add_argument("--modes", default="worker,in-process")
    parser.add_argument("--smoke", action="store_true", help="20 nodes, 0.3 s idle: does the bench still run")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.seconds = 20, 0.3
    print(f"{'mode':<11} {'phase':<8} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   reconcile")
    works: list[Path] = []
    try:
        for mode in args.modes.split(","):
            work = Path(tempfile.mkdtemp(prefix=f"bench-serving-{mode}-"))
            works.append(work)
            phases = measure(mode, args.nodes, args.seconds, work)
            for i, (phase, (values, took)) in enumerate(phases.items()):
                what = {"idle": "", "busy": f"   {took:.2f} s for {args.nodes} nodes",
                        "bomb": f"   {took:.2f} s to a finding"}[phase]
                print(f"{mode if i == 0 else '':<11} {row(phase, values)}{what}", flush=True)
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; target: busy p99 < 50 ms with the worker)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
