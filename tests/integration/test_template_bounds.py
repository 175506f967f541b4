"""A commit's templates cannot hurt the server (issue 21 item 4): every template failure, whatever
raised it, is a `template-error` finding at the template's line naming the node; values, output
and CPU time are bounded, so a bomb is refused before it takes memory or time.

The processes run under real resource limits (address space, CPU seconds): a bomb that is
computed instead of refused dies there (MemoryError, SIGXCPU) instead of passing validation.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon_support import EXAMPLE, HANG, DaemonProcess, WorkTree, wait_for

TEMPLATE = "cloud-init/ubuntu-autoinstall.yaml"
ADDRESS_SPACE = 1536 * 1024 * 1024  # far below what computing any of the bombs takes
CPU_SECONDS = 30  # the CLI's whole run, bombs included (the CPU-time bound itself is 2 s a render)

BOMBS = {
    "string-repeat": "{{ 'A' * 1000000000 }}",
    "big-power": "{{ 9 ** 9999999 }}",
    "doubling-loop": "{% set ns = namespace(x='A') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "endless-loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "output-over-1mib": "{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}",
    "format-width": "{{ '{:>999999999}'.format(1) }}",
    "filter-padding": "{{ 'x'|center(1000000000) }}",
}


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def _with_bomb(root: Path, bomb: str) -> int:
    """Append the bomb as a YAML comment line of the example's template; its line number."""
    path = root / TEMPLATE
    text = path.read_text()
    path.write_text(text + f"# {bomb}\n")
    return text.count("\n") + 1


@pytest.mark.parametrize("bomb", BOMBS.values(), ids=BOMBS.keys())
def test_validate_reports_a_template_bomb_at_its_line(tmp_path: Path, bomb: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    line = _with_bomb(repo, bomb)
    proc = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(repo), "--format", "json"],
                          capture_output=True, text=True, preexec_fn=_limits, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    hits = [i for i in doc["issues"] if i["code"] == "template-error"]
    assert hits, doc["issues"]
    assert {(i["file"], i["line"]) for i in hits} == {(TEMPLATE, line)}
    assert "rendering for node '" in hits[0]["message"] and "nodes/" in hits[0]["message"]


def test_a_daemon_refuses_a_template_bomb_as_invalid_and_keeps_serving(tmp_path: Path) -> None:
    """Under an address-space limit: today's computed 'A' * 10**9 would be a MemoryError, an
    internal error retried; the commit must be Stalled (invalid, not retried) with its finding.
    The limit's hard value is below the worker's own 4 GiB bound, as under systemd's LimitAS=:
    the worker keeps to it (it used to fail every commit, trying to raise it)."""
    tree = WorkTree(tmp_path / "repo")
    remote = tree.bare_remote(tmp_path / "remote.git")
    daemon = DaemonProcess(f"file://{remote}", tmp_path / "state", ["--interval", "3600"])
    daemon.args = ["prlimit", f"--as={ADDRESS_SPACE * 2}", "--", *daemon.args]
    daemon.start()
    try:
        good = tree.head()
        daemon.wait_served(good)
        text = (tree.path / TEMPLATE).read_text()
        bad = tree.commit("bomb", {TEMPLATE: text + "# {{ 'A' * 1000000000 }}\n"})
        tree.push()
        daemon.signal(signal.SIGHUP)
        def outcome() -> dict[str, Any] | None:
            daemon.alive()
            s = daemon.status()
            attempted = s is not None and s.get("last_attempted_revision") == bad
            done = s is not None and (s["condition"] == "Stalled" or s["reason"] == "RetryingAfterError")
            return s if attempted and done else None

        status = wait_for(outcome, "the bomb's outcome", timeout=HANG)
        assert status["condition"] == "Stalled", status  # invalid: never retried
        assert status["last_attempted_revision"] == bad
        assert status["last_applied_revision"] == good
        hits = [f for f in status["findings"] if f["code"] == "template-error"]
        assert [(f["file"], f["line"]) for f in hits] == [(TEMPLATE, text.count("\n") + 1)], status["findings"]
        assert good in daemon.ipxe()
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
