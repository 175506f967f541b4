"""Benchmark: validate repositories of 1,000 and 10,000 nodes; print time and peak RSS.

Run: .venv/bin/python -m bench.validate_scale [--sizes 1000,10000]  (each size in a fresh child
process, so the peak RSS is the validation's own; `--smoke`: a few nodes, for the tests).
Target: 10,000 nodes in under 2 s and under 300 MB.
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
        result = validate(snapshot)
        t2 = time.perf_counter()
    assert result.state is not None, result.issues[:5]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"nodes": nodes, "read_s": t1 - t0, "validate_s": t2 - t1, "peak_rss_mb": rss_mb}))


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
    print(f"{'nodes':>7} {'read s':>8} {'validate s':>11} {'total s':>8} {'peak RSS MB':>12}  target")
    for nodes in sizes:
        out = subprocess.run(
            [sys.executable, "-m", "bench.validate_scale", "--child", str(nodes)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        total = r["read_s"] + r["validate_s"]
        target = "< 2 s, < 300 MB" if nodes == 10000 else ""
        print(
            f"{nodes:>7} {r['read_s']:>8.2f} {r['validate_s']:>11.2f} {total:>8.2f} {r['peak_rss_mb']:>12.0f}  {target}"
        )


if __name__ == "__main__":
    main()
