"""A local repository another user owns (what the shipped unit's DynamicUser=yes meets).

libgit2, like git, refuses such a repository unless `safe.directory` trusts it. `run` and `diff`
(and `validate PATH REV`, which reads the commit from git) say so in one line naming the path
and the fix (exit 2), and the fix they name works. Runs as
root and gives the repository to another uid, as the unit's dynamic user finds /srv/netboot-repo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon_support import ROOT, WorkTree
from tests.support import require_root

OTHER_UID = 54321


@pytest.fixture
def foreign_repo(tmp_path: Path) -> WorkTree:
    require_root()
    tree = WorkTree(tmp_path / "site")
    tree.commit("second")
    for top, dirs, files in os.walk(tree.path):
        for name in (top, *(os.path.join(top, f) for f in dirs + files)):
            os.lchown(name, OTHER_UID, OTHER_UID)
    return tree


def cli(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
    try:
        return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"netboot-reconcile {args[0]} kept running on a repository it cannot open: {exc.stderr!r}")


def assert_names_path_and_fix(proc: subprocess.CompletedProcess[str], repo: Path) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "safe.directory" in line]
    assert len(lines) == 1, proc.stderr
    assert f"{repo}: the repository is owned by uid {OTHER_UID}" in lines[0]
    assert f"git config --system --add safe.directory {repo}" in lines[0]


def test_run_and_diff_name_the_path_and_the_fix(foreign_repo: WorkTree, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    repo = foreign_repo.path
    run = cli("run", "--repo", repo, "--state-dir", tmp_path / "state", "--no-dhcp", "--no-tftp",
              "--http-listen", "127.0.0.1:0", home=home)
    assert_names_path_and_fix(run, repo)
    assert "cannot start" in run.stderr
    diff = cli("diff", "--repo", repo, "HEAD~1", "HEAD", home=home)
    assert_names_path_and_fix(diff, repo)
    validate = cli("validate", repo, "HEAD", home=home)  # a commit, read from git as the daemon reads it
    assert_names_path_and_fix(validate, repo)

    # The fix named works: safe.directory trusts it (the global file of this HOME here; --system
    # writes the same key to /etc/gitconfig, which a DynamicUser service, having no home, reads).
    (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {repo}\n")
    trusted = cli("diff", "--repo", repo, "HEAD~1", "HEAD", home=home)
    assert trusted.returncode == 0, trusted.stderr
