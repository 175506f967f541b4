"""Benchmark: validate repositories of 1,000 and 10,000 nodes; print time and peak RSS.

Run: .venv/bin/python -m bench.validate_scale [--sizes 1000,10000]  (each size in a fresh child
process, so the peak RSS is the validation's own; `--smoke`: a few nodes, for the tests).
Targets: 10,000 nodes in under 2 s and under 300 MB; 100,000 in under 15 s (issue 25). `validate s`
is wall time, `cpu s` the process's CPU time in it: on a shared machine the wall time measures the
load as much as the code.

Measured 2026-12-07 on the shared 2-CPU machine (nice 19, load 4-5; other helpers' benches running),
this repository at 100,000 nodes, validate() in one process:
  main at b2bc96b (before):         78.2 s wall, 33.8 s of CPU, 860 MB
  after issue 25's validation work: 10.5 s wall,  9.3 s of CPU, 422 MB
  (this bench, the same day: 10,000 nodes 1.05 s and 115 MB; 100,000 nodes 17.5 s wall, 404 MB.)
The same work on bench/render_scale's repository (3 profiles, two with autoinstall user-data),
validate() alone, 100,000 nodes: 40.1 s of CPU and 1,028 MB before, 12.6 s and 448 MB after.
Where it went (py-spy, 10,000 nodes): the cyclic GC walking the growing heap (40% at 100,000),
composing every node's rendered user-data to lint it (core.lint.clean_shape now compares it with a
clean one), PyYAML's tag resolution, the thread-CPU-time system call per output chunk, per-node
positions looked up eagerly, the node files' YAML trees kept in memory.
The `netboot-reconcile validate` command around it (same day, nice 19, load 2.9-4.9): reading the
directory (adapters.dirsource, bench/gen_repo's 100,000 nodes) took 1.1-1.3 s user + 1.8-2.2 s
system, now 0.5-0.7 + 0.5-0.6 (by directory descriptors and the listing's file types, reads of the
file's size instead of a 1 MiB buffer); the command's start (cli importing every command: the
daemon, the store, psycopg) 0.9-1.0 s of CPU, now 0.4 (only the named command's module). On
render_scale's repository at 100,000 nodes the command then took 13.0-16.7 s of CPU (18-23 s wall at
load 3), of which validate() itself 11.5-12: what is left is validation (bootcheck's renders, YAML).
Later the same day (nice 19, load 6.5-8, interleaved): the command on render_scale's repository at
100,000 nodes 13.2-14.3 s of CPU (20.7-30.4 s wall) at main 07e42fa -> 10.7-11.0 s (13.6-18.9 s
wall) with core.yamldoc reading plain `key: value` files without composing their YAML (a node
file 24 -> 9 us) and lint.clean_shape's comparison (13 -> 6.6 us a user-data). This bench then
(nice 19, load 4-8): 10,000 nodes 0.74 s, 74 MB; 100,000 nodes validate() 7.5 s of CPU (16.8 s
wall: the load's), 396 MB. Of validate() on render_scale's repository at 100,000 nodes (10.2 s
of CPU) the boot check is half (its per-node user-data render, core.template, the most), the
node files' parse and schema check a third.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOKE_NODES = 20


def child(nodes: int) -> None:
    from bench.gen_repo import write_repo
    from reconciler.adapters.dirsource import read_directory
    from reconciler.core.validate import validate

    with tempfile.TemporaryDirectory() as tmp:
        root = write_repo(Path(tmp), nodes)
        t0 = time.perf_counter()
        snapshot = read_directory(root)
        t1 = time.perf_counter()
        c1 = time.process_time()
        result = validate(snapshot)
        t2 = time.perf_counter()
        cpu = time.process_time() - c1
    assert result.state is not None, result.issues[:5]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"nodes": nodes, "read_s": t1 - t0, "validate_s": t2 - t1, "validate_cpu_s": cpu,
                      "peak_rss_mb": rss_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="node counts, comma-separated")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_NODES} nodes: does the bench still run (tests)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sizes = [SMOKE_NODES] if args.smoke else [int(s) for s in args.sizes.split(",")]
    print(f"{'nodes':>7} {'read s':>8} {'validate s':>11} {'cpu s':>7} {'total s':>8} {'peak RSS MB':>12}  target")
    for nodes in sizes:
        out = subprocess.run(
            [sys.executable, "-m", "bench.validate_scale", "--child", str(nodes)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        total = r["read_s"] + r["validate_s"]
        target = {10000: "< 2 s, < 300 MB", 100000: "< 15 s"}.get(nodes, "")
        print(f"{nodes:>7} {r['read_s']:>8.2f} {r['validate_s']:>11.2f} {r['validate_cpu_s']:>7.2f} {total:>8.2f} "
              f"{r['peak_rss_mb']:>12.0f}  {target}")


if __name__ == "__main__":
    main()
