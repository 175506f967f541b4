"""adapters.looseobj: a loose object's bytes as libgit2 reads them, or None (the caller then reads
through libgit2): packed objects, objects whose bytes do not match their name, another kind.
Real git repositories (git init, commit, gc)."""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

import pygit2
import pytest

from reconciler.adapters import looseobj


def _repo(tmp_path: Path, files: int = 300) -> tuple[pygit2.Repository, pygit2.Oid]:
    work = tmp_path / "repo"
    (work / "nodes").mkdir(parents=True)
    for i in range(files):
        (work / "nodes" / f"n{i:04d}.yaml").write_text(f"mac: 52:54:00:00:{i >> 8:02x}:{i & 255:02x}\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True)
    repo = pygit2.Repository(str(work))
    return repo, repo.head.peel(pygit2.Commit).tree["nodes"].id


def _objects(repo: pygit2.Repository) -> str:
    return os.path.join(repo.path, "objects")


def test_a_loose_tree_reads_as_libgit2_reads_it(tmp_path: Path) -> None:
    repo, oid = _repo(tmp_path)
    body = looseobj.read(_objects(repo), b"tree", oid.raw)
    assert body is not None and body == repo.odb.read(oid)[1]
    assert looseobj.read(_objects(repo), b"blob", oid.raw) is None  # not of that kind


def test_a_packed_object_is_left_to_libgit2(tmp_path: Path) -> None:
    repo, oid = _repo(tmp_path)
    subprocess.run(["git", "gc", "-q", "--prune=now"], cwd=repo.workdir, check=True)
    assert looseobj.read(_objects(repo), b"tree", oid.raw) is None


def test_a_loose_object_whose_bytes_are_not_what_its_name_says_is_not_read(tmp_path: Path) -> None:
    """Same kind, same length, one byte of an entry's id changed (what a tampered or damaged
    object store holds): not returned; libgit2, which the caller asks next, refuses it too."""
    repo, oid = _repo(tmp_path)
    path = Path(_objects(repo)) / str(oid)[:2] / str(oid)[2:]
    data = zlib.decompress(path.read_bytes())
    damaged = data[:-1] + bytes([data[-1] ^ 1])
    path.chmod(0o644)
    path.write_bytes(zlib.compress(damaged))
    assert looseobj.read(_objects(repo), b"tree", oid.raw) is None
    with pytest.raises(pygit2.GitError):
        pygit2.Repository(repo.path).odb.read(oid)
    path.write_bytes(b"not zlib")
    assert looseobj.read(_objects(repo), b"tree", oid.raw) is None
