"""CPU of a one-node commit in one process, on the daemon worker's code path: `validate` with a
ValidateMemo, then `render_generation` with a NodeMemo (issue 25: a one-node commit must cost
about one node).

Run on purpose: `.venv/bin/python -m bench.commit_cpu [--sizes 10000,100000] [--commits 7]
[--repo latency|render] [--check]` (`--smoke`: a few nodes, for the tests). Each size: a first
validation and render (the memos filled), then `--commits` commits each editing one node's labels;
prints the median CPU seconds of validate and render per commit. `latency`: reconcile_latency's
repository (example-repo and N nodes of the local-disk profile); `render`: render_scale's (3
profiles, two with autoinstall user-data and args that name the revision as whole outputs: the
validation checks their nodes at its memo's stand-in revision, core.bootcheck). `--check`: each
commit also validated and rendered from scratch, which must give the same findings, state and
bytes (slow). The git snapshot and the worker's pipe are not in these numbers
(bench/reconcile_latency measures the whole daemon).

Measured 2026-12-07 (nice 19; load 6-25: a 16-guest QEMU storm and other helpers' tests on the 2
shared CPUs, so each number is rough), latency repository, CPU seconds per one-node commit,
median of 5-7:
- 10,000 nodes: main fc0a3d5 validate 0.109, render 0.068 (total 0.176) -> 0.049-0.058 and
  0.005-0.007 (0.054-0.064).
- 100,000 nodes: main fc0a3d5 validate 1.56, render 1.19 (total 2.84; first validation and render
  13.1 s of CPU) -> 36a96d7 (render patched from the last generation; parse, nodes, cross
  references and boot checks looking at what changed) validate 0.84, render 0.11 (total 0.99) ->
  27db8e7 (the boot check's replay in a few steps, bmcinherit kept per node, one sort) validate
  0.70, render 0.11 (total 0.80; first 15.9 s) -> 3605503 (fewer passes: profiles and groups by
  bisection, nodes_of_groups, the profiles each site uses) validate 0.62, render 0.11 (total
  0.74, load 3-5; first 16.5 s).
- The first commit, the memos filled (20,000 nodes, interleaved runs, load 3-5): main 2.3-3.05 s,
  this 2.6-3.8 s; no difference this loaded machine can tell apart.
- `--check` (each commit against validation and rendering from scratch): the same findings, state
  and bytes at 2,000 and 20,000 nodes (latency repository) and 5,000 (render repository, 0.31 s a
  commit), at 27db8e7 and again at 3605503.
Measured 2026-12-07 again after issue 25's validation work (nice 19, load 6-9: other helpers'
benches, so rough), CPU seconds per one-node commit, median of 5-7, main 07e42fa -> this:
- latency repository: 1,000 nodes validate 0.004 -> 0.002; 10,000 0.038-0.041 -> 0.021 (commit
  0.043-0.046 -> 0.025-0.027); 100,000 validate 0.33-0.34, render 0.09-0.10 (commit 0.42-0.44;
  0.62 + 0.11 before).
- render repository: 1,000 nodes validate 0.057 -> 0.009; 10,000 0.52-0.60 -> 0.046-0.049 (its
  install profiles name `cloud_init_url`: their nodes are now checked at the memo's stand-in
  revision and replayed, core.bootcheck); 100,000 validate 0.76 at 9801077, 0.52 at 803cd52
  (render 0.12, commit 0.63; load 5-6; first validation and render 29.2 s). First validation and
  render at 10,000: 3.7-4.3 -> 2.7-3.1 s (yamldoc's plain-lines shortcut, clean_shape).
- `--check` equal to from scratch at 2,000 and 20,000 nodes, both repositories.
What is left per commit is still a few passes over every node with small constants (the 10k/1k
ratio of the validation is ~10, not 1.5): the boot check's loop over every kept node (a dict
lookup or two each; a render-repository node at the stand-in also scans its keys for the
revision), its `finish` (a set difference), crossref's id dicts of every node (check_groups,
check_nodes), parse_all's compare of every path's bytes with the last snapshot's, at_site and
the nodes' sort in validate, ignition.read_templates and build.cloud_init's scans of every path.
Removing them needs "what changed" handed from build.nodes down (positions, as bmcinherit now
uses) and, for the boot check, per-key producer lists (the first node by name linting each key)
instead of a replay in name order.
Measured 2026-12-07 09:50 (nice 19, load 4-6, interleaved with main 332d8fe), render repository,
20,000 nodes, CPU seconds per one-node commit, median of 7: validate 0.072-0.078 -> 0.026-0.027
(commit 0.086-0.093 -> 0.040-0.041): the boot check replays the unchanged nodes in runs between
the nodes it visits (core.bootpass: their lint keys added with a set update, their sizes by a
running sum) instead of one by one (58.6 -> 9.6 ms of section timers); crossref finds the nodes
that came and went place by place (7.2 -> 2.2 ms). The first commit after a restart also builds
that index (0.12 s of CPU at 20,000). `--check` equal to from scratch at 2,000 (both
repositories) and 20,000 (render).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.render_scale import make_snapshot  # noqa: E402
from reconciler.adapters.dirsource import read_directory  # noqa: E402
from reconciler.core.docmemo import ValidateMemo  # noqa: E402
from reconciler.core.render import NodeMemo, render_generation  # noqa: E402
from reconciler.core.snapshot import Snapshot  # noqa: E402
from reconciler.core.validate import validate  # noqa: E402

SMOKE_NODES = 20


def latency_repo(count: int) -> tuple[dict[str, bytes], str]:
    """reconcile_latency's repository, and the node file its commits edit."""
    files = dict(read_directory(ROOT / "example-repo").files)
    for i in range(count):
        files[f"nodes/bulk-{i:05d}.yaml"] = (f"mac: 52:54:02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}\n"
                                             "profile: local-disk\n").encode()
    return files, "nodes/bulk-00000.yaml"


def edited(content: bytes, number: int) -> bytes:
    """The node file with its labels set to `number`'s."""
    kept = b"\n".join(line for line in content.split(b"\n") if line and not line.startswith(b"labels:"))
    return kept + f"\nlabels: {{change: c{number}}}\n".encode()


def run(count: int, commits: int, repo: str, check: bool) -> tuple[float, float, float]:
    """(first validate + render, median validate, median render) in CPU seconds."""
    files, path = latency_repo(count) if repo == "latency" else (make_snapshot(count), "nodes/n00007.yaml")
    validated, rendered = ValidateMemo(), NodeMemo()

    def revision(number: int) -> str:
        return hashlib.sha1(str(number).encode()).hexdigest()

    c0 = time.process_time()
    first = validate(Snapshot(revision(0), dict(files)), memo=validated)
    if first.state is None:
        raise SystemExit(f"invalid: {first.errors[:3]}")
    render_generation(first.state, b"bench", memo=rendered)
    cold = time.process_time() - c0
    times: list[tuple[float, float]] = []
    for number in range(1, commits + 1):
        files[path] = edited(files[path], number)
        snapshot = Snapshot(revision(number), dict(files))
        c0 = time.process_time()
        result = validate(snapshot, memo=validated)
        c1 = time.process_time()
        state = result.for_site(None)
        generation = render_generation(state, b"bench", memo=rendered)
        c2 = time.process_time()
        times.append((c1 - c0, c2 - c1))
        if check:
            scratch = validate(snapshot)
            if (scratch.issues, scratch.state) != (result.issues, result.state):
                raise SystemExit(f"commit {number}: validation differs from one from scratch")
            if list(generation.items()) != list(render_generation(state, b"bench").items()):
                raise SystemExit(f"commit {number}: the generation differs from one rendered from scratch")
    return cold, statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="node counts, comma-separated")
    parser.add_argument("--commits", type=int, default=7)
    parser.add_argument("--repo", choices=("latency", "render"), default="latency")
    parser.add_argument("--check", action="store_true", help="compare each commit with one from scratch")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_NODES} nodes: does the bench still run (tests)")
    args = parser.parse_args()
    sizes = [SMOKE_NODES] if args.smoke else [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        args.commits, args.check = 3, True
    print(f"{'nodes':>7} {'first s':>8} {'validate s':>11} {'render s':>9} {'commit s':>9}  (CPU, median of "
          f"{args.commits}, {args.repo} repository)")
    for count in sizes:
        cold, checked, rendered = run(count, args.commits, args.repo, args.check)
        print(f"{count:>7} {cold:>8.2f} {checked:>11.3f} {rendered:>9.3f} {checked + rendered:>9.3f}")


if __name__ == "__main__":
    main()
