"""Dashboard and results API at fleet scale: /ui/ (the commit list), /ui/fleet, a node page and
/api/commits over a results store of N nodes and C applied commits, against the same pages over a
small store (100 nodes, 100 commits) measured in the same run: the ratio says how much a large
fleet and a long history cost a page that is paged server-side.

Run on purpose, as a module: `.venv/bin/python -m bench.dashboard_scale [--nodes 10000] [--commits 1000]`;
`--smoke` runs a small size once (tests/integration/test_bench_dashboard.py runs it, no timing asserted).

The store is filled through `ResultsStore` as the daemon fills it: every commit records every
node with its plan digest (1% of the nodes change plan per commit), a reconcile with subject and
author per commit, and each node one install (ten boot events, a success report) at some commit,
a tenth of them a second one later.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from reconciler.adapters.store import ReconcileRecord, ResultsStore
from reconciler.core.events import EventRow
from reconciler.core.outcomes import Target
from reconciler.generation import GenerationHolder
from reconciler.servers.http_results import ResultsRecorder, make_results_apps

HOUR = 3600.0


def mac(i: int) -> str:
    return f"52:54:03:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def rev(c: int) -> str:
    return f"{c:040x}"


def install(t0: float, revision: str, i: int) -> list[EventRow]:
    m, node, client = mac(i), f"node-{i:05d}", f"10.1.{i >> 8 & 255}.{i & 255}"
    steps: list[tuple[str, dict[str, Any]]] = [
             ("dhcp-offer", {"message": "DISCOVER", "vendor_class": "PXEClient:Arch:00007"}),
             ("dhcp-ack", {"message": "REQUEST"}), ("tftp", {"filename": "ipxe.efi", "bytes": 1_000_000}),
             ("ipxe-bootstrap", {"status": 200}), ("ipxe-script", {"status": 200}),
             ("kernel", {"status": 200, "path": "/assets/vmlinuz", "bytes": 12_000_000}),
             ("initrd", {"status": 200, "path": "/assets/initrd", "bytes": 80_000_000}),
             ("meta-data", {"status": 200}), ("user-data", {"status": 200}),
             ("report", {"status": "success"})]
    return [(t0 + k * 20.0, stage, revision, m, node, client, detail) for k, (stage, detail) in enumerate(steps)]


def fill(path: Path, nodes: int, commits: int, now: float) -> None:
    store = ResultsStore(path)
    try:
        start = now - commits * HOUR
        plan = [0] * nodes
        for c in range(commits):
            t = start + c * HOUR
            for i in range(c % 100, nodes, 100):  # 1% of the nodes change plan at each commit
                plan[i] += 1
            targets = [Target(f"node-{i:05d}", mac(i), "install", True, 0, f"{i:08x}{plan[i]:08x}")
                       for i in range(nodes)]
            store.record_reconcile(ReconcileRecord(rev(c), "poll", "applied", t, 0.5, subject=f"change {c}",
                                                   author="Ops <ops@example.org>", committed=t - 60))
            store.record_revision(rev(c), t, targets)
        rows: list[EventRow] = []
        for i in range(nodes):
            c = i * commits // nodes
            rows += install(start + c * HOUR + 60, rev(c), i)
            if i % 10 == 0 and c + 1 < commits:
                rows += install(start + (c + 1) * HOUR + 120, rev(c + 1), i)
        for k in range(0, len(rows), 50_000):
            store.record_rows(rows[k : k + 50_000])
            assert store.flush(120.0)
    finally:
        store.close()


def get(app: Callable[..., Iterable[bytes]], path: str) -> tuple[str, bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got["status"] = status

    path, _, query = path.partition("?")
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}, start_response))
    return got["status"], body


PAGES = ("/ui/", "/ui/?page=3", "/ui/fleet", "/ui/nodes/node-00050", "/api/commits", "/api/nodes?limit=100",
         "/api/live")


def measure(path: Path, nodes: int, repeat: int, now: float) -> tuple[dict[str, float], dict[str, float]]:
    """(first request, median of the next `repeat`) per page: the first one after a start reads
    every machine's events; later ones re-read only the machines that booted since."""
    store = ResultsStore(path)
    try:
        apps = make_results_apps(holder=GenerationHolder(), recorder=ResultsRecorder(store, CollectorRegistry()),
                                 registry=CollectorRegistry(), secret=None, boot_timeout=HOUR, clock=lambda: now)
        ui, api = apps["/ui"], apps["/api"]
        first, warm = {}, {}
        for page in PAGES:
            app = api if page.startswith("/api") else ui
            times = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                status, body = get(app, page)
                times.append(time.perf_counter() - t0)
                assert status == "200 OK", (page, status, body[:300])
            first[page], warm[page] = times[0], statistics.median(times[1:])
        status, body = get(ui, "/ui/fleet")
        assert body.count(b"<tr data-node=") == min(nodes, 100), body[:500]
        return first, warm
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="300 nodes, 30 commits, once")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.commits, args.repeat = 300, 30, 1
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        small, large = Path(tmp) / "small.sqlite3", Path(tmp) / "large.sqlite3"
        t0 = time.perf_counter()
        fill(small, 100, 100, now)
        fill(large, args.nodes, args.commits, now)
        print(f"filled stores in {time.perf_counter() - t0:.1f} s ({args.nodes} nodes x {args.commits} commits, "
              f"{large.stat().st_size / 2**20:.0f} MiB)")
        _, base = measure(small, 100, args.repeat, now)
        cold, big = measure(large, args.nodes, args.repeat, now)
    size = f"{args.nodes} x {args.commits}"
    print(f"{'page':<34} {'100 x 100 ms':>12} {size + ' ms':>16} {'ratio':>6} {'first request ms':>17}")
    for page in PAGES:
        print(f"{page:<34} {base[page] * 1000:>12.1f} {big[page] * 1000:>16.1f} {big[page] / base[page]:>6.1f} "
              f"{cold[page] * 1000:>17.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
