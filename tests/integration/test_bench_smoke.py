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
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.daemon_support import wait_for
from tests.support import processes_naming, require_root

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


def test_boot_storm_stopped_by_sigterm_leaves_no_guest_server_or_namespace(tmp_path: Path) -> None:
    """bench/boot_storm.py stopped mid-storm (a CI timeout, ^C) kills its guests, nginx (with its
    workers), dnsmasq and the daemon, and deletes its namespaces. Before, Python's default SIGTERM
    skipped the labs' `finally`: the namespace and nginx's workers stayed until the machine restarted."""
    require_root()
    work = Path(tempfile.mkdtemp(prefix="boot-storm-sigterm-"))  # not tmp_path (0700): nginx's workers read it
    work.chmod(0o755)
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    log = tmp_path / "bench.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.boot_storm", "--smoke", "--workdir", str(work)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        # the classic stack's guest is up: QEMU, nginx and dnsmasq all run in the second lab
        wait_for(lambda: (work / "n1-r0" / "apart" / "classic" / "vm-1.serial.log").exists() or proc.poll() is not None,
                 "the classic storm's guest", timeout=300)
        assert proc.poll() is None, log.read_text()
        assert processes_naming(work), "nothing of the bench's was running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 128 + signal.SIGTERM, log.read_text()
        assert wait_for(lambda: not processes_naming(work), "the bench's processes to end", timeout=30)
        after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        assert not {ns for ns in after - before if ns.startswith("nre2e-")}, "the bench's namespace is left"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
