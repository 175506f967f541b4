"""The `netboot-validate` pre-commit hook, run by the real `pre-commit try-repo` in a provisioning repo.

try-repo clones this checkout at its committed HEAD (`--ref`), builds a virtualenv and
pip-installs the package into it (dependencies come from PyPI: the one slow step, about 20 s
with a warm pip cache, longer on a cold one), then runs the hook in the provisioning
repository's root. Both runs below share one PRE_COMMIT_HOME, so the environment is built once.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests import repo_builder

ROOT = Path(__file__).resolve().parents[2]
PRE_COMMIT = ROOT / ".venv" / "bin" / "pre-commit"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ops",
    "GIT_AUTHOR_EMAIL": "ops@lab.example",
    "GIT_COMMITTER_NAME": "Ops",
    "GIT_COMMITTER_EMAIL": "ops@lab.example",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def test_try_repo_runs_validate_in_the_provisioning_repo(tmp_path: Path) -> None:
    assert PRE_COMMIT.exists(), "pre-commit not installed: .venv/bin/pip install -e '.[test]'"
    env = {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(tmp_path / "cache")}
    repo = tmp_path / "site"
    repo_builder.write(repo, {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"})
    (repo / "README.md").write_text("our lab\n")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, timeout=30)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    ref = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()

    def try_repo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PRE_COMMIT), "try-repo", str(ROOT), "netboot-validate", "--ref", ref, "--all-files", "--color=never"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    failed = try_repo()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "netboot-reconcile validate" in failed.stdout and "Failed" in failed.stdout
    # the finding, as validate prints it, names the file, line and column in the provisioning repo
    assert "nodes/node-1.yaml:2:1: error ip-in-pool: ip 10.10.10.50 of node 'node-1'" in failed.stdout

    repo_builder.write(repo)  # fix the address
    git("add", "-A")
    passed = try_repo()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "netboot-reconcile validate" in passed.stdout and "Passed" in passed.stdout
