"""Two-commit git repositories for the `diff` tests: a base, then the edits under review."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests import repo_builder

# A fixed identity and clock: the same edits make the same commit shas (golden files name them).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ops",
    "GIT_AUTHOR_EMAIL": "ops@lab.example",
    "GIT_COMMITTER_NAME": "Ops",
    "GIT_COMMITTER_EMAIL": "ops@lab.example",
    "GIT_AUTHOR_DATE": "2024-05-01T12:00:00+00:00",
    "GIT_COMMITTER_DATE": "2024-05-01T12:00:00+00:00",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}

# Three nodes on one install-once profile: the shape most reviews are about.
THREE_NODES: dict[str, str | None] = {
    "nodes/node-3.yaml": "mac: 52:54:00:aa:bb:03\nip: 10.10.10.203\nprofile: install\nlabels: {rack: r2}\n",
    "profiles/install.yaml": repo_builder.BASE["profiles/install.yaml"] + "install_once: true\n",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def apply(root: Path, edits: Mapping[str, str | None]) -> None:
    for path, text in edits.items():
        target = root / path
        if text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def two_commits(
    root: Path, head_edits: Mapping[str, str | None], base_edits: Mapping[str, str | None] | None = None
) -> Path:
    """A repository at `root` whose branch `main` has BASE (HEAD~1) and HEAD (`head_edits` applied)."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    repo_builder.write(root, {**THREE_NODES, **(base_edits or {})})
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    apply(root, head_edits)
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", "head")
    return root
