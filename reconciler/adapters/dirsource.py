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


def _read_regular(full: str, rel: str, refused: list[Issue]) -> bytes | None:
    """The bytes of a regular file; a symlink, FIFO, socket or device is refused, never opened as
    such (a FIFO would block the read forever). Opened without following links and without
    blocking, then checked again on the open file, so a swap after the first look changes nothing."""
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
        if exc.errno == errno.ELOOP:  # became a symlink since the lstat
            refused.append(refuse_symlink(rel))
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            refused.append(refuse_special(rel, st.st_mode))
            return None
        if st.st_size > MAX_FILE_BYTES:
            refused.append(refuse_size(rel, st.st_size))
            return None
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:  # grew since the fstat
        refused.append(refuse_size(rel, len(data)))
        return None
    return data


def read_directory(root: Path) -> Snapshot:
    """Read the repository format from `root`. OSError when `root` itself cannot be read."""
    files: dict[str, bytes] = {}
    refused: list[Issue] = []
    unread: list[Issue] = []
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        # Prune early; but still report symlinked directories where the format would look.
        for d in list(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if os.path.islink(os.path.join(dirpath, d)) and is_candidate_dir(rel):
                refused.append(refuse_symlink(rel))
            elif not is_candidate_dir(rel) and (miss := not_read(rel, is_dir=True)) is not None:
                unread.append(miss)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if is_candidate_dir(f"{rel_dir}/{d}" if rel_dir else d) and not os.path.islink(os.path.join(dirpath, d))
        )
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if kind_of(rel) is None:
                if (miss := not_read(rel, is_dir=False)) is not None:
                    unread.append(miss)
                continue
            data = _read_regular(os.path.join(dirpath, name), rel, refused)
            if data is not None:
                files[rel] = data
    return Snapshot(revision=content_digest(files), files=files, refused=tuple(refused), unread=tuple(unread),
                    origin=str(root))
