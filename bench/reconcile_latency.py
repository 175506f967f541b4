"""Reconcile latency: from `git push` (bare remote, webhook trigger) and from `git commit` (local repo,
inotify trigger) until `/ipxe` serves the new revision; p50 and p95 over N changes, per repo size.

Run on purpose (not a test), as a module (bench/http.py would shadow the standard library's `http`):
`.venv/bin/python -m bench.reconcile_latency [--sizes 1000,10000] [--changes 20]` (`--smoke`: tiny, for the tests).
The daemon runs as a real process on 127.0.0.1; each change edits one node. The peer measured in
the same run is git itself (the `git push` / `git commit` the user waits for anyway): the ratio
says how much longer than git the daemon takes to serve the change. Target: p50 < 0.5 s at 1,000 nodes.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.integration.daemon_support import DaemonProcess, WorkTree, git, http_get

SECRET = b"bench-secret"


def seed(tree: WorkTree, nodes: int) -> None:
    for i in range(nodes):
        (tree.path / "nodes" / f"bulk-{i:05d}.yaml").write_text(
            f"mac: 52:54:02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}\nprofile: local-disk\n"
        )
    tree.commit(f"{nodes} nodes")


def edit(tree: WorkTree, n: int) -> None:
    (tree.path / "nodes" / "bulk-00000.yaml").write_text(
        f"mac: 52:54:02:00:00:00\nprofile: local-disk\nlabels: {{change: c{n}}}\n"
    )
    git(tree.path, "add", "-A")


def wait_revision(daemon: DaemonProcess, revision: str, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    url = f"{daemon.url}/ipxe?mac=52:54:02:00:00:00"
    while time.monotonic() < deadline:
        code, body = http_get(url)
        if code == 200 and revision.encode() in body:
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {revision}\n{daemon.log()[-2000:]}")


def webhook(daemon: DaemonProcess) -> None:
    body = b'{"ref": "refs/heads/main"}'
    sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(daemon.url + "/hooks/git", data=body, method="POST",
                                 headers={"X-Hub-Signature-256": sig})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


_APPLIED = re.compile(r"applied in ([0-9.]+)s \(trigger (\w+); ([^)]*)\)")


def step_medians(log: str, skip: int = 1) -> str:
    """Median seconds per reconcile step over the applied reconciles in the daemon's log (the first
    `skip`, the initial full write, left out): where the time goes, from the daemon's own clock."""
    runs = [dict((k, float(v)) for k, v in (kv.split("=") for kv in m.group(3).split()))
            for m in _APPLIED.finditer(log)][skip:]
    if not runs:
        return "no applied reconciles in the log"
    return " ".join(f"{k}={statistics.median(r.get(k, 0.0) for r in runs):.3f}" for k in runs[0])


def measure(kind: str, nodes: int, changes: int, work: Path) -> tuple[list[float], list[float], str]:
    tree = WorkTree(work / "repo")
    seed(tree, nodes)
    secret = work / "secret"
    secret.write_bytes(SECRET)
    if kind == "push":
        remote = tree.bare_remote(work / "remote.git")
        repo = f"file://{remote}"
    else:
        repo = str(tree.path)
    daemon = DaemonProcess(repo, work / "state", ["--interval", "3600", "--webhook-secret-file", str(secret)])
    daemon.start()
    latencies, git_times = [], []
    try:
        wait_revision(daemon, tree.head())
        for n in range(changes):
            edit(tree, n)
            if kind == "push":
                git(tree.path, "commit", "-q", "-m", f"change {n}")
                t0 = time.monotonic()
                tree.push()
                t_git = time.monotonic()
                webhook(daemon)
            else:
                t0 = time.monotonic()
                git(tree.path, "commit", "-q", "-m", f"change {n}")
                t_git = time.monotonic()
            t1 = wait_revision(daemon, tree.head())
            latencies.append(t1 - t0)
            git_times.append(t_git - t0)
    finally:
        daemon.stop()
    return latencies, git_times, step_medians(daemon.log())


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="node counts, comma-separated")
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--kinds", default="push,commit")
    parser.add_argument("--smoke", action="store_true", help="20 nodes, 2 changes: does the bench still run (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.changes = "20", 2
    print(f"{'trigger':<18} {'nodes':>6} {'n':>3} {'p50 s':>8} {'p95 s':>8} {'git p50 s':>10} {'ratio p50':>10}")
    # Work directories are removed at the end, not between runs: on ext4 without a journal,
    # thousands of files freed a moment ago make every file the next run creates slower
    # (the kernel skips recently freed inodes), which would measure the bench's own cleanup.
    works: list[Path] = []
    try:
        for nodes in (int(s) for s in args.sizes.split(",")):
            for kind in args.kinds.split(","):
                work = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-{nodes}-"))
                works.append(work)
                load = os.getloadavg()[0]
                lat, gits, steps = measure(kind, nodes, args.changes, work)
                report(kind, nodes, lat, gits, steps, load)
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; target: p50 < 0.5 s at 1,000 nodes)")
    return 0


def report(kind: str, nodes: int, lat: list[float], gits: list[float], steps: str, load: float) -> None:
    label = "push+webhook" if kind == "push" else "commit+inotify"
    g50 = statistics.median(gits)
    print(f"{label:<18} {nodes:>6} {len(lat):>3} {pct(lat, 0.5):8.3f} {pct(lat, 0.95):8.3f} "
          f"{g50:10.3f} {pct(lat, 0.5) / g50 if g50 else 0:10.1f}x", flush=True)
    print(f"    daemon step medians (s): {steps}", flush=True)
    print(f"    load average {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
