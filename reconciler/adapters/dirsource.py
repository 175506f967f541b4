"""Snapshots of a plain directory (or a git work tree as it is on disk).

Called by `validate`/`render` on a PATH and by the daemon when `--repo` is a directory that
is not a git repository. Reads only the paths of the repository format, refuses symlinks,
FIFOs, sockets, devices and files over the size limit, and names a revision after the content
(a digest).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from reconciler.core.model import Issue
from reconciler.core.snapshot import (
    MAX_FILE_BYTES,
    Snapshot,
    bad_name,
    escaped,
    is_candidate_dir,
    kind_of,
    not_read,
    refuse_size,
    refuse_special,
    refuse_symlink,
)


def content_digest(files: dict[str, bytes]) -> str:
    """A revision for content that has no commit: sha256 over paths and bytes."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + str(len(files[path])).encode() + b"\0" + files[path])
    return "dir-" + h.hexdigest()[:40]


def _read_regular(dir_fd: int, name: str, rel: str, refused: list[Issue]) -> bytes | None:
    """The bytes of the regular file `name` in the directory `dir_fd`, which the listing said is a
    regular file. Opened without following links and without blocking (a FIFO would block the read
    forever), then checked again on the open file, so a swap after the listing changes nothing."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink since the listing
            refused.append(refuse_symlink(rel))
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            refused.append(refuse_special(rel, st.st_mode))
            return None
        if st.st_size > MAX_FILE_BYTES:
            refused.append(refuse_size(rel, st.st_size))
            return None
        # Ask for the size fstat saw plus one byte (not for the whole limit: a buffer of a megabyte
        # per file is most of the read's time), and read on to the end so a file that grew is seen.
        parts = [os.read(fd, st.st_size + 1)]
        total = len(parts[0])
        while parts[-1] and total <= MAX_FILE_BYTES:
            parts.append(os.read(fd, MAX_FILE_BYTES + 1 - total))
            total += len(parts[-1])
    finally:
        os.close(fd)
    if total > MAX_FILE_BYTES:  # grew since the fstat
        refused.append(refuse_size(rel, total))
        return None
    return b"".join(parts)


def read_directory(root: Path) -> Snapshot:
    """Read the repository format from `root`. OSError when `root` itself cannot be read."""
    files: dict[str, bytes] = {}
    refused: list[Issue] = []
    unread: list[Issue] = []
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        root_fd = None  # as os.walk did: an unreadable directory is read as empty
    if root_fd is not None:
        _read_tree(root_fd, "", files, refused, unread)
    return Snapshot(revision=content_digest(files), files=files, refused=tuple(refused), unread=tuple(unread),
                    origin=str(root))


def _read_tree(dir_fd: int, rel_dir: str, files: dict[str, bytes], refused: list[Issue], unread: list[Issue]) -> None:
    """Read the directory `dir_fd` (at `rel_dir`, "" for the root) into `files`, then the
    candidate directories in it, by name; closes `dir_fd`. Walks as os.walk(followlinks=False)
    did, in the same order, but by directory descriptors and the listing's file types: one open,
    one fstat and the reads per file, where a path and an lstat per file were most of the time."""
    try:
        with os.scandir(dir_fd) as listing:
            entries = list(listing)
    except OSError:
        entries = []  # as os.walk did: an unreadable directory is read as empty
    try:
        dirs: list[os.DirEntry[str]] = []
        file_entries: list[os.DirEntry[str]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows a symlink, as os.walk's split did
            except OSError:
                is_dir = False
            (dirs if is_dir else file_entries).append(entry)
        # Prune early; but still report symlinked directories where the format would look.
        for d in dirs:
            rel = f"{rel_dir}/{d.name}" if rel_dir else d.name
            if _is_link(d) and is_candidate_dir(rel):
                refused.append(refuse_symlink(rel))
            elif not is_candidate_dir(rel) and (miss := not_read(escaped(rel) or rel, is_dir=True)) is not None:
                unread.append(miss)
        for entry in sorted(file_entries, key=lambda e: e.name):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if escaped(rel) is not None:  # a name that is not UTF-8: in no snapshot
                if (said := bad_name(rel, is_dir=False)) is not None:
                    (refused if said.is_error else unread).append(said)
                continue
            if kind_of(rel) is None:
                if (miss := not_read(rel, is_dir=False)) is not None:
                    unread.append(miss)
                continue
            if _is_link(entry):
                refused.append(refuse_symlink(rel))
                continue
            if not entry.is_file(follow_symlinks=False):  # never opened: a device may act on open
                refused.append(refuse_special(rel, entry.stat(follow_symlinks=False).st_mode))
                continue
            data = _read_regular(dir_fd, entry.name, rel, refused)
            if data is not None:
                files[rel] = data
        subdirs = sorted(d.name for d in dirs
                         if is_candidate_dir(f"{rel_dir}/{d.name}" if rel_dir else d.name) and not _is_link(d))
        for name in subdirs:
            try:
                sub_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                continue  # as os.walk did: an unreadable (or swapped) directory is skipped
            _read_tree(sub_fd, f"{rel_dir}/{name}" if rel_dir else name, files, refused, unread)
    finally:
        os.close(dir_fd)


def _is_link(entry: os.DirEntry[str]) -> bool:
    """Whether the entry is a symlink; False when that cannot be told (as os.path.islink)."""
    try:
        return entry.is_symlink()
    except OSError:
        return False
