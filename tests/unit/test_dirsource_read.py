"""adapters.dirsource reads a directory by descriptors and the listing's file types (for the
100,000-node `validate`); this pins that it reads and refuses exactly what the os.walk reader it
replaced did: the reference below is that reader, kept verbatim in spirit (lstat, open by path)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from reconciler.adapters.dirsource import content_digest, read_directory
from reconciler.core.model import Issue
from reconciler.core.snapshot import (
    MAX_FILE_BYTES,
    is_candidate_dir,
    kind_of,
    not_read,
    refuse_size,
    refuse_special,
    refuse_symlink,
)


def _reference_regular(full: str, rel: str, refused: list[Issue]) -> bytes | None:
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        refused.append(refuse_symlink(rel))
        return None
    if not stat.S_ISREG(st.st_mode):
        refused.append(refuse_special(rel, st.st_mode))
        return None
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refused.append(refuse_symlink(rel))
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size > MAX_FILE_BYTES:
            refused.append(refuse_size(rel, st.st_size))
            return None
        data = fh.read(MAX_FILE_BYTES + 1)
    return data


def _reference(root: Path) -> tuple[dict[str, bytes], list[Issue], list[Issue]]:
    files: dict[str, bytes] = {}
    refused: list[Issue] = []
    unread: list[Issue] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        for d in list(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if os.path.islink(os.path.join(dirpath, d)) and is_candidate_dir(rel):
                refused.append(refuse_symlink(rel))
            elif not is_candidate_dir(rel) and (miss := not_read(rel, is_dir=True)) is not None:
                unread.append(miss)
        dirnames[:] = sorted(d for d in dirnames if is_candidate_dir(f"{rel_dir}/{d}" if rel_dir else d)
                             and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if kind_of(rel) is None:
                if (miss := not_read(rel, is_dir=False)) is not None:
                    unread.append(miss)
                continue
            data = _reference_regular(os.path.join(dirpath, name), rel, refused)
            if data is not None:
                files[rel] = data
    return files, refused, unread


def _odd_tree(root: Path) -> None:
    """Every kind of entry the reader must tell apart, in and out of the format's directories."""
    for d in ("nodes", "profiles", "groups", "cloud-init", "keys", "ignition", "generic", "docs", "node"):
        (root / d).mkdir()
    (root / "netboot.yaml").write_text("server:\n  address: 10.0.0.2\n")
    (root / "netboot.yml").write_text("near miss\n")
    (root / "README.md").write_text("readme\n")
    for i in range(40):
        (root / "nodes" / f"n{i:02d}.yaml").write_text(f"mac: 52:54:00:00:00:{i:02x}\n")
    (root / "nodes" / "empty.yaml").write_bytes(b"")
    (root / "nodes" / "exact.yaml").write_bytes(b"#" * MAX_FILE_BYTES)
    (root / "nodes" / "over.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (root / "nodes" / "wrong.json").write_text("{}")
    (root / "nodes" / "rack1").mkdir()
    (root / "nodes" / "rack1" / "deep.yaml").write_text("mac: x\n")
    os.symlink("/etc/passwd", root / "nodes" / "link.yaml")
    os.symlink(root / "nowhere", root / "nodes" / "broken.yaml")
    os.symlink(root / "docs", root / "nodes" / "dirlink.yaml")  # a link to a directory, named as a node
    os.symlink(root / "docs", root / "groups-link")
    os.mkfifo(root / "profiles" / "fifo.yaml")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "profiles" / "sock.yaml"))
    (root / "profiles" / "install.yaml").write_text("kernel: k\n")
    (root / "ignition" / "any-name").write_bytes(b"\x00\xff binary")
    (root / "ignition" / ".hidden").write_text("skipped\n")
    (root / "docs" / "nodes.yaml").write_text("not read\n")
    os.symlink(root / "profiles", root / "cloud-init-real")
    (root / "cloud-init").rmdir()
    os.symlink(root / "cloud-init-real", root / "cloud-init")  # a candidate directory that is a link


def test_the_descriptor_reader_reads_and_refuses_exactly_what_os_walk_did(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    _odd_tree(root)
    files, refused, unread = _reference(root)
    snap = read_directory(root)
    assert snap.files == files
    assert list(snap.files) == list(files)  # same order too: the digest and the findings follow it
    assert list(snap.refused) == refused
    assert sorted(snap.unread, key=repr) == sorted(unread, key=repr)  # dirs: listing order in both
    assert snap.revision == content_digest(files)
    codes = {(i.file, i.code) for i in snap.refused}
    assert {("nodes/link.yaml", "symlink"), ("nodes/broken.yaml", "symlink"), ("cloud-init", "symlink"),
            ("profiles/fifo.yaml", "special-file"), ("profiles/sock.yaml", "special-file"),
            ("nodes/over.yaml", "file-too-large")} <= codes
    assert snap.files["nodes/exact.yaml"] == b"#" * MAX_FILE_BYTES
    assert snap.files["nodes/empty.yaml"] == b""


def test_names_that_are_not_utf8_are_refused_where_read_and_ignored_elsewhere(tmp_path: Path) -> None:
    """A name that is not UTF-8 crashed the read (its digest encodes each path): now refused by name
    where the format reads, warned of where `not_read` warns, ignored where the format ignores."""
    root = tmp_path / "repo"
    (root / "nodes").mkdir(parents=True)
    (root / "nodes" / "ok.yaml").write_text("mac: 52:54:00:00:00:01\n")
    raw = os.fsencode(root)
    for name in (b"nodes/\xff.yaml", b"nodes/\xfe.txt", b"nodes/\xfd.json", b"ignition/\xfc", b"\xfb.md"):
        Path(os.fsdecode(raw + b"/" + name)).parent.mkdir(exist_ok=True)
        Path(os.fsdecode(raw + b"/" + name)).write_text("x: 1\n")
    os.mkdir(os.fsdecode(raw + b"/nodes/\xfa"))
    snap = read_directory(root)
    assert list(snap.files) == ["nodes/ok.yaml"]
    assert [(i.file, i.code) for i in snap.refused] == [
        ("ignition/\\xfc", "file-name-encoding"), ("nodes/\\xff.yaml", "file-name-encoding")]
    assert sorted((i.file, i.code) for i in snap.unread) == [
        ("nodes/\\xfa", "not-read"), ("nodes/\\xfd.json", "not-read")]
    assert all(i.is_error for i in snap.refused)
