"""Benches cannot rot: every bench in bench/ runs its `--smoke` mode (tiny sizes, seconds) here.

A bench that no longer runs (bench/render_scale.py generated an invalid repository for weeks
after the pool rules changed) fails this test. Only the exit status is asserted: the numbers a
bench prints are for people comparing against a peer in the same run, never for the tests.
Benches clean up after themselves, except boot_storm, which keeps its logs: removed here when
it passed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPERS = {"__init__", "gen_repo"}  # imported by the benches, not benches themselves
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in HELPERS)
TIMEOUT = {"boot_storm": 600,  # two QEMU guests netbooting under TCG (~30 s); the others take seconds
           "scale_out": 600}  # a PostgreSQL cluster, daemons in namespaces, kea-dhcp4: ~2-3 min on a loaded machine


def test_every_bench_module_is_a_bench_or_a_known_helper() -> None:
    for stem in BENCHES:
        assert 'if __name__ == "__main__":' in (ROOT / "bench" / f"{stem}.py").read_text(), stem
    assert {"render_scale", "validate_scale", "reconcile_latency"} <= set(BENCHES)


@pytest.mark.parametrize("bench", BENCHES)
def test_bench_smoke_mode_runs(bench: str) -> None:
    try:
        proc = subprocess.run([sys.executable, "-m", f"bench.{bench}", "--smoke"], cwd=ROOT,
                              capture_output=True, text=True, timeout=TIMEOUT.get(bench, 300), check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"bench/{bench}.py --smoke still running after {exc.timeout} s:\n{exc.stdout!r}\n{exc.stderr!r}")
    assert proc.returncode == 0, f"bench/{bench}.py --smoke exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    kept = re.search(r"^logs: (/\S+)$", proc.stdout, re.M)
    if kept is not None:
        shutil.rmtree(kept.group(1), ignore_errors=True)
