"""Reading a commit's tree without a checkout: --path, and the same refusals as a directory read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pygit2
import pytest

from reconciler.adapters.dirsource import read_directory
from reconciler.adapters.gitsource import read_tree
from reconciler.cli import main as cli_main
from reconciler.core.render import render_generation
from reconciler.core.snapshot import MAX_FILE_BYTES
from reconciler.core.validate import validate
from reconciler.daemon import Daemon, Result
from reconciler.settings import Settings
from tests.integration.daemon_support import EXAMPLE, WorkTree, git


def test_path_selects_a_subdirectory_of_a_monorepo(tmp_path: Path) -> None:
    mono = tmp_path / "mono"
    mono.mkdir()
    shutil.copytree(EXAMPLE, mono / "infra" / "netboot")
    (mono / "README").write_text("other things\n")
    git(mono, "init", "-q", "-b", "main")
    git(mono, "add", "-A")
    git(mono, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "mono")
    daemon = Daemon(Settings(repo=str(mono), path="infra/netboot", state_dir=tmp_path / "s", watch=False),
                    renderer=render_generation)
    daemon.open()
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        generation = daemon.holder.current()
        assert generation is not None and generation.revision == git(mono, "rev-parse", "HEAD")
        assert len(generation.state.nodes) == 5
    finally:
        daemon.shutdown()


def test_symlinks_submodules_and_large_files_are_refused_by_name(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    os.symlink("node-1.yaml", tree.path / "nodes" / "alias.yaml")
    (tree.path / "nodes" / "huge.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    sub = WorkTree(tmp_path / "sub")
    shutil.rmtree(tree.path / "groups")  # a format directory vendored as a submodule
    git(tree.path, "rm", "-q", "-r", "--cached", "groups")
    git(tree.path, "-c", "protocol.file.allow=always", "submodule", "-q", "add", str(sub.path), "groups")
    revision = tree.commit("bad things")
    snapshot = read_tree(pygit2.Repository(str(tree.path)), revision)
    refused = {(i.file, i.code) for i in snapshot.refused}
    assert refused == {
        ("nodes/alias.yaml", "symlink"),
        ("nodes/huge.yaml", "file-too-large"),
        ("groups", "submodule"),
    }
    assert "nodes/alias.yaml" not in snapshot.files and "nodes/node-1.yaml" in snapshot.files


def _misplaced(root: Path) -> None:
    """Files where the format does not read them, as users misplace them, plus two that are
    rightly left alone."""
    for path in ("node/node-9.yaml", "nodes/rack1/node-8.yaml", "nodes/node-7.json", "Profiles/x.yaml"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text((root / "nodes" / "node-1.yaml").read_text())
    (root / "netboot.yml").write_text("x: 1\n")
    (root / "README.md").write_text("# site\n")
    (root / "docs").mkdir()
    (root / "docs" / "a.yaml").write_text("a: 1\n")


MISPLACED_WARNINGS = [
    "Profiles/ is not read: did you mean profiles/?",
    "netboot.yml is not read: did you mean netboot.yaml?",
    "node/ is not read: did you mean nodes/?",
    "nodes/node-7.json is not read: files in nodes/ are read when they end in .yaml or .yml",
    "nodes/rack1/ is not read: only files directly in nodes/ are read, not subdirectories",
]


def test_files_the_format_does_not_read_but_look_meant_are_warned_of_in_a_commit_and_a_directory(
        tmp_path: Path) -> None:
    """A node in the wrong place was silently not declared: no reservation, no boot, exit 0."""
    tree = WorkTree(tmp_path / "repo")
    _misplaced(tree.path)
    revision = tree.commit("misplaced files")
    for snapshot in (read_tree(pygit2.Repository(str(tree.path)), revision), read_directory(tree.path)):
        result = validate(snapshot)
        assert result.state is not None, result.issues  # warnings only
        assert sorted(i.message for i in result.issues if i.code == "not-read") == MISPLACED_WARNINGS
        assert all(not i.is_error for i in result.issues)


def test_a_file_name_that_is_not_utf8_is_refused_by_name_in_a_commit_and_a_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`validate` stopped with "'utf-8' codec can't encode character '\\udcff'" (git and directory
    readers alike), and the daemon's reconcile failed on every retry: now a finding naming the file."""
    tree = WorkTree(tmp_path / "repo")
    nodes = os.fsencode(tree.path / "nodes")
    Path(os.fsdecode(nodes + b"/\xff.yaml")).write_text("mac: 52:54:00:00:00:99\n")
    Path(os.fsdecode(nodes + b"/\xfe.txt")).write_text("ignored, as any .txt there\n")
    Path(os.fsdecode(nodes + b"/\xfd.json")).write_text("{}\n")
    os.symlink("node-1.yaml", os.fsdecode(nodes + b"/\xfa.yaml"))
    Path(os.fsdecode(os.fsencode(tree.path) + b"/\xfc.md")).write_text("ignored\n")
    revision = tree.commit("names that are not UTF-8")
    for snapshot in (read_tree(pygit2.Repository(str(tree.path)), revision), read_directory(tree.path)):
        assert [(i.file, i.code, i.is_error) for i in snapshot.refused] == [
            ("nodes/\\xfa.yaml", "file-name-encoding", True), ("nodes/\\xff.yaml", "file-name-encoding", True)]
        assert "nodes/\\xff.yaml: the name is not UTF-8" in snapshot.refused[1].message
        assert [(i.file, i.code) for i in snapshot.unread] == [("nodes/\\xfd.json", "not-read")]
        assert all(path.isascii() for path in snapshot.files) and "nodes/node-1.yaml" in snapshot.files
        result = validate(snapshot)
        assert result.state is None
        assert {i.file for i in result.issues if i.is_error} == {"nodes/\\xfa.yaml", "nodes/\\xff.yaml"}
    for rev in ([], [revision]):
        assert cli_main(["validate", str(tree.path), *rev]) == 1
        out = capsys.readouterr()
        assert "nodes/\\xff.yaml:0:0: error file-name-encoding: nodes/\\xff.yaml: the name is not UTF-8" in out.out
        assert "codec" not in out.out + out.err
