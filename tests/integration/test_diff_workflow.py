"""example-repo/.github/workflows/netboot.yml from the workflow's point of view.

The `run:` scripts of its validate and diff steps are executed with bash, as the runner does,
in a real two-commit checkout with the runner's environment files (GITHUB_OUTPUT,
GITHUB_STEP_SUMMARY), so the commands, arguments and exit-code handling written in the
workflow are the ones tested. (The github-script step needs GitHub; it only reads the file
checked here.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.diff_support import THREE_NODES, git, two_commits

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "example-repo" / ".github" / "workflows" / "netboot.yml"


def workflow() -> dict[Any, Any]:
    doc: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return doc


def step(job: str, name_start: str) -> dict[str, Any]:
    for s in workflow()["jobs"][job]["steps"]:
        if str(s.get("name", "")).startswith(name_start):
            return dict(s)
    raise AssertionError(f"no step {name_start!r} in job {job}")


def run_step(s: dict[str, Any], cwd: Path, tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(tmp / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp / "summary"),
        **env,
    }
    return subprocess.run(
        ["bash", "-e", "-c", s["run"]], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


def test_triggers_and_permissions() -> None:
    doc = workflow()
    on = doc.get("on", doc.get(True))  # PyYAML reads the bare key `on` as a boolean
    assert on is not None
    assert "nodes/**" in on["pull_request"]["paths"] and "cloud-init/**" in on["pull_request"]["paths"]
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    checkout = workflow()["jobs"]["diff"]["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0


def test_validate_step_annotates_the_pull_request(tmp_path: Path) -> None:
    bad = "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"
    repo = two_commits(tmp_path / "r", {"nodes/node-1.yaml": bad})
    proc = run_step(step("validate", "Validate"), repo, tmp_path, {})
    assert proc.returncode == 1  # the job fails
    assert proc.stdout.startswith("::error file=nodes/node-1.yaml,line=2,col=1,title=ip-in-pool::ip 10.10.10.50")


def test_diff_step_writes_the_comment_and_the_summary(tmp_path: Path) -> None:
    node3 = THREE_NODES["nodes/node-3.yaml"]
    assert node3 is not None
    repo = two_commits(tmp_path / "r", {"nodes/node-3.yaml": node3 + "reinstall: 1\n"})
    diff_step = step("diff", "Diff")
    assert diff_step["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    proc = run_step(diff_step, repo, tmp_path, {"BASE_SHA": git(repo, "rev-parse", "HEAD~1")})
    assert proc.returncode == 0, proc.stdout + proc.stderr  # exit 1 of diff ("changes") is not a failure
    assert (tmp_path / "output").read_text() == "changed=true\n"
    comment = (repo / "netboot-comment.md").read_text()
    assert comment.startswith("<!-- netboot-reconcile-diff -->\n## netboot-reconcile diff ")
    assert "| `node-3` | changed | `install` | reinstall counter | **WILL REINSTALL** |" in comment
    assert "**WILL REINSTALL**" in (tmp_path / "summary").read_text()
    post = step("diff", "Post")
    script = post["with"]["script"]
    assert "netboot-comment.md" in script and "<!-- netboot-reconcile-diff -->" in script


def test_diff_step_fails_on_a_command_error(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {})
    proc = run_step(step("diff", "Diff"), repo, tmp_path, {"BASE_SHA": "0" * 40})
    assert proc.returncode == 2
    assert "::error title=netboot-reconcile diff::the diff could not run (exit 2)" in proc.stdout


def test_no_change_says_so(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"README.md": "lab notes\n"})
    proc = run_step(step("diff", "Diff"), repo, tmp_path, {"BASE_SHA": git(repo, "rev-parse", "HEAD~1")})
    assert proc.returncode == 0
    assert (tmp_path / "output").read_text() == "changed=false\n"
    assert "**No change**" in (repo / "netboot-comment.md").read_text()
