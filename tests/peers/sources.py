"""Peers' source trees at a release tag, cloned once into tests/peers/.cache/ and checked by commit.

For peers that are neither Debian packages nor on PyPI in a form that runs here (upstream
cloud-init builds with meson; curtin is not published): `tag_tree()` clones `--branch <tag>`
from the project's GitHub URL, or from the clone or mirror an environment variable names (for
machines without GitHub access), and fails the test, naming both, when that is impossible or
the tag's commit is not the pinned one.
Callers: tests/peers/cloud_init.py, tests/peers/curtin_peer.py.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

CACHE = Path(__file__).resolve().parent / ".cache"


def tag_tree(name: str, url: str, env: str, tag: str, commit: str, marker: str) -> Path:
    """The source tree of `name` at `tag` (commit `commit`); `marker` is a file it must hold."""
    tree = CACHE / f"{name}-{tag}"
    if (tree / marker).exists():
        return tree
    source = os.environ.get(env, url)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        proc = subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", tag, source, f"{tmp}/tree"],
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            pytest.fail(f"cannot clone {name} {tag} from {source}: {proc.stderr.strip()}\n"
                        f"set {env} to a clone or mirror of {url}")
        head = subprocess.run(["git", "-C", f"{tmp}/tree", "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        if head != commit:
            pytest.fail(f"{name} tag {tag} from {source} is {head}, expected {commit}")
        if not (Path(tmp) / "tree" / marker).exists():
            pytest.fail(f"{name} {tag} from {source} has no {marker}")
        os.replace(f"{tmp}/tree", tree)
    return tree
