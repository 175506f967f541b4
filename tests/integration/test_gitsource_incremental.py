"""read_tree with a source's TreeCache (only what a diff against the last tree names is read
again) gives, over any sequence of commits, exactly the snapshot a full read gives: the same
files, refusals and warnings in the same order (issue 25). Real git objects (pygit2's index)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import pygit2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.adapters import gitsource, rawtree
from reconciler.adapters.gitsource import TreeCache, read_incrementally, read_tree
from reconciler.core.snapshot import MAX_FILE_BYTES, Changes, Snapshot
from reconciler.settings import Settings

# Names that exercise each outcome: read files, a subdirectory of a read directory, a misplaced
# directory and file (warnings), names ordered around a directory's ("a", "a.b", "a/"), a file
# at the root the format ignores, templates of any name.
_PATHS = ["netboot.yaml", "netboot.yml", "README.md", "nodes/a.yaml", "nodes/a.yml", "nodes/a", "nodes/a.b",
          "nodes/a/x.yaml", "nodes/b.yaml", "nodes/b.json", "node/c.yaml", "profiles/p.yaml", "ignition/a",
          "ignition/a.b", "docs/x/y.md", "sub/netboot.yaml", "sub/nodes/d.yaml"]
_MODES = [pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE, pygit2.GIT_FILEMODE_LINK,
          pygit2.GIT_FILEMODE_COMMIT]
_Op = tuple[str, int | None, int]  # path, mode (None: delete), content number (-1: over the size limit)
_ops = st.tuples(st.sampled_from(_PATHS), st.sampled_from([*_MODES, None, pygit2.GIT_FILEMODE_BLOB]),
                 st.integers(-1, 3))


class _Repo:
    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), bare=True)
        self.entries: dict[str, tuple[int, bytes]] = {}
        self.parent: list[pygit2.Oid] = []
        self.big = b"x" * (MAX_FILE_BYTES + 1)

    def apply(self, op: _Op) -> None:
        path, mode, number = op
        for other in list(self.entries):  # no file where a directory goes, nor the other way
            if other == path or other.startswith(path + "/") or path.startswith(other + "/"):
                del self.entries[other]
        if mode is not None:
            self.entries[path] = (mode, self.big if number < 0 else f"mac: 52:54:00:00:00:0{number}\n".encode())

    def commit(self) -> str:
        index = pygit2.Index()
        for path, (mode, data) in self.entries.items():
            oid = self.repo.create_blob(data) if mode != pygit2.GIT_FILEMODE_COMMIT else self.repo.create_blob(b"c")
            index.add(pygit2.IndexEntry(path, oid, pygit2.enums.FileMode(mode)))
        tree = index.write_tree(self.repo)
        sig = pygit2.Signature("t", "t@example.org", 0, 0)
        oid = self.repo.create_commit(None, sig, sig, "c", tree, self.parent)
        self.parent = [oid]
        return str(oid)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_ops, min_size=1, max_size=4), min_size=1, max_size=10), st.sampled_from(["", "sub"]),
       st.sampled_from([1, 2, rawtree.MARK_EVERY]))
def test_reading_with_the_cache_equals_a_full_read(tmp_path_factory: pytest.TempPathFactory,
                                                   commits: list[list[_Op]], subdir: str, every: int) -> None:
    repo = _Repo(tmp_path_factory.mktemp("repo"))
    repo.apply(("sub/netboot.yaml", pygit2.GIT_FILEMODE_BLOB, 0))
    with mock.patch.object(rawtree, "MARK_EVERY", every):  # marks as far apart as a directory's entries, or closer
        _read_each(repo, commits, subdir)


def _three_nodes_read(tmp_path: Path) -> tuple[_Repo, TreeCache, Snapshot]:
    """A repository of three node files, committed and read once with a new tree cache."""
    repo = _Repo(tmp_path)
    for i in range(3):
        repo.apply((f"nodes/n{i}.yaml", pygit2.GIT_FILEMODE_BLOB, i))
    cache = TreeCache()
    return repo, cache, read_tree(repo.repo, repo.commit(), cache=cache)


def _read_each(repo: _Repo, commits: list[list[_Op]], subdir: str) -> None:
    cache = TreeCache()
    last: Snapshot | None = None
    for ops in commits:
        for op in ops:
            repo.apply(op)
        if subdir and "sub/netboot.yaml" not in repo.entries:
            repo.apply(("sub/netboot.yaml", pygit2.GIT_FILEMODE_BLOB, 0))
        revision = repo.commit()
        snapshot = read_tree(repo.repo, revision, subdir, cache=cache)
        assert snapshot == read_tree(repo.repo, revision, subdir)
        if snapshot.changes is not None:  # what it says changed since the last read, it did; nothing else
            assert last is not None and snapshot.changes.base == last.revision
            assert list(snapshot.files) == list(last.files)
            assert {p for p in snapshot.files if snapshot.files[p] != last.files[p]} <= set(snapshot.changes.paths)
        last = snapshot


def test_a_commit_that_edits_a_file_says_which(tmp_path: Path) -> None:
    repo, cache, first = _three_nodes_read(tmp_path)
    assert first.changes is None  # read whole: nothing to say
    repo.apply(("nodes/n1.yaml", pygit2.GIT_FILEMODE_BLOB, 3))
    repo.apply(("README.md", pygit2.GIT_FILEMODE_BLOB, 1))
    second = read_tree(repo.repo, repo.commit(), cache=cache)
    assert second.changes == Changes(first.revision, ("nodes/n1.yaml",))
    repo.apply(("nodes/n3.yaml", pygit2.GIT_FILEMODE_BLOB, 1))
    assert read_tree(repo.repo, repo.commit(), cache=cache).changes is None  # a path added: not said


def test_unchanged_files_are_the_bytes_read_last_time(tmp_path: Path) -> None:
    repo, cache, first = _three_nodes_read(tmp_path)
    repo.apply(("nodes/n0.yaml", pygit2.GIT_FILEMODE_BLOB, 3))
    second = read_tree(repo.repo, repo.commit(), cache=cache)
    assert second.files["nodes/n0.yaml"] != first.files["nodes/n0.yaml"]
    assert second.files["nodes/n1.yaml"] is first.files["nodes/n1.yaml"]  # not read from git again


def test_verify_incremental_serves_a_full_read_when_the_cache_is_wrong(tmp_path: Path) -> None:
    repo = _Repo(tmp_path)
    repo.apply(("nodes/n0.yaml", pygit2.GIT_FILEMODE_BLOB, 0))
    revision = repo.commit()
    cache = TreeCache()
    checked = Settings(repo=str(tmp_path), verify_incremental=True)
    read_incrementally(repo.repo, revision, checked, "", cache)
    assert cache.last is not None  # a cache gone wrong (the bug --verify-incremental is for): other bytes
    nodes = cache.last.entries["nodes"].value
    nodes.entries["n0.yaml"] = nodes.entries["n0.yaml"]._replace(value=b"mac: 52:54:00:00:00:09\n")
    assert cache.flat is not None  # and the files flattened from it, which an unchanged tree reuses
    cache.flat[0]["nodes/n0.yaml"] = b"mac: 52:54:00:00:00:09\n"
    served = read_incrementally(repo.repo, revision, checked, "", cache)
    assert served.files["nodes/n0.yaml"] == b"mac: 52:54:00:00:00:00\n"
    assert cache.last is None and cache.flat is None
    unchecked = dataclasses.replace(checked, verify_incremental=False)
    assert read_incrementally(repo.repo, revision, unchecked, "", cache) == served


# Modes as some tools wrote them (zero-padded, group-writable, odd bits: libgit2 reads them as one
# of its five), one that rawtree leaves to libgit2 (seven digits), and names of any byte: names that
# are not UTF-8 are refused where the format reads (`\xff.yaml`), ignored where it does not (`\xe9.txt`).
_RAW_MODES = [b"100644", b"100755", b"100664", b"40000", b"040000", b"120000", b"160000", b"100600", b"0100644"]
_raw_ops = st.tuples(st.sampled_from([b"a.yaml", b"b.yaml", b"b", b"c.json", b"d.yaml", b"\xe9.txt", b"\xff.yaml",
                                      b"\xfe.json"]),
                     st.one_of(st.none(), st.tuples(st.sampled_from(_RAW_MODES), st.integers(0, 2))))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_raw_ops, min_size=1, max_size=3), min_size=1, max_size=8))
@example([[(b"a.yaml", (b"100644", 0))], [(b"\xff.yaml", (b"100644", 1)), (b"\xe9.txt", (b"100644", 1))],
          [(b"\xff.yaml", (b"100644", 2))], [(b"a.yaml", (b"100644", 2)), (b"\xfe.json", (b"40000", 0))],
          [(b"\xff.yaml", (b"120000", 0))], [(b"\xff.yaml", None)]])
def test_trees_written_by_other_tools_read_with_the_cache_as_in_full(
        tmp_path_factory: pytest.TempPathFactory, commits: list[list[tuple[bytes, tuple[bytes, int] | None]]]) -> None:
    repo = pygit2.init_repository(str(tmp_path_factory.mktemp("repo")), bare=True)
    blobs = [repo.create_blob(f"mac: 52:54:00:00:00:0{i}\n".encode()) for i in range(3)]
    sub = repo.odb.write(pygit2.enums.ObjectType.TREE, b"100644 x.yaml\0" + blobs[0].raw)
    sig = pygit2.Signature("t", "t@example.org", 0, 0)
    entries: dict[bytes, tuple[bytes, int]] = {}
    parents: list[pygit2.Oid] = []
    cache = TreeCache()
    for ops in commits:
        for name, entry in ops:
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry

        dirs = {n for n, (mode, _) in entries.items() if mode.lstrip(b"0") == b"40000"}
        nodes = repo.odb.write(pygit2.enums.ObjectType.TREE, b"".join(  # in git's order: a directory's name + "/"
            b"%s %s\0%s" % (entries[n][0], n, (sub if n in dirs else blobs[entries[n][1]]).raw)
            for n in sorted(entries, key=lambda n: n + b"/" if n in dirs else n)))
        root = repo.odb.write(pygit2.enums.ObjectType.TREE, b"40000 nodes\0" + nodes.raw)
        parents = [repo.create_commit(None, sig, sig, "c", root, parents)]
        full = read_tree(repo, str(parents[0]))  # a name not UTF-8 raised UnicodeEncodeError here (its order key)
        assert read_tree(repo, str(parents[0]), cache=cache) == full
        assert all(path.isascii() for path in full.files)
        bad = {i.file: i.code for i in full.refused if i.file.startswith("nodes/\\x")}
        assert bad == ({"nodes/\\xff.yaml": "file-name-encoding"} if b"\xff.yaml" in entries and
                       b"\xff.yaml" not in dirs else {})


def test_a_read_that_fails_half_way_empties_the_cache(tmp_path: Path) -> None:
    repo, cache, _first = _three_nodes_read(tmp_path)
    repo.apply(("nodes/n0.yaml", pygit2.GIT_FILEMODE_BLOB, 3))
    repo.apply(("nodes/n2.yaml", pygit2.GIT_FILEMODE_BLOB, 3))
    revision = repo.commit()
    real, calls = gitsource._outcome, []

    def failing(*args: object, **kwargs: object) -> object:  # the second changed entry cannot be read
        calls.append(args)
        if len(calls) == 3:  # nodes/, then its first changed entry, then this one
            raise pygit2.GitError("object not found")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(gitsource, "_outcome", failing), pytest.raises(pygit2.GitError):
        read_tree(repo.repo, revision, cache=cache)
    assert cache.last is None and cache.flat is None  # its old tree was half changed in place: not kept
    assert read_tree(repo.repo, revision, cache=cache) == read_tree(repo.repo, revision)
