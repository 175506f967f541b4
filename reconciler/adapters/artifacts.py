"""Generations on disk: write `generations/<sha>/` atomically, swap `current`, load it, collect old ones.

Called by the daemon's write/swap steps (`reconciler.daemon`) and at start-up (`load_current`).

Crash safety (a `kill -9` at any point never leaves a torn generation in service):
1. everything is written under `generations/<sha>.tmp/`, then made durable (one `syncfs` of the
   file system: one flush for thousands of small files instead of an fsync each),
2. `generations/<sha>.tmp` is renamed to `generations/<sha>` and the directory is fsynced,
3. a new symlink `current.tmp` is renamed over `current` (rename(2) is atomic) and fsynced.
Leftover `*.tmp` entries are debris from a crash and are removed at start-up.

Each generation also keeps the repository files it was rendered from under `.source/`, so a
restart can rebuild the validated state of `current` without the source (the remote may be
down, a plain directory may have changed since). matchbox ignores dot-directories.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GENERATIONS = "generations"
CURRENT = "current"
SOURCE_DIR = ".source"
TMP_SUFFIX = ".tmp"



@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True)
class StoredGeneration:
    """A generation read back from disk: its revision, rendered files and source files."""

    revision: str
    root: Path
    files: Mapping[str, bytes]
    source: Mapping[str, bytes]


class ArtifactStore:
    """The `generations/` directory and the `current` symlink of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.generations = self.state_dir / GENERATIONS
        self.current_link = self.state_dir / CURRENT

    def prepare(self) -> None:
        """Create the directories and remove debris that a crash left behind."""
        self.generations.mkdir(parents=True, exist_ok=True)
        for entry in self.generations.iterdir():
            if entry.name.endswith(TMP_SUFFIX):
                log.info("removing debris of an interrupted write: %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
        stale = self.state_dir / (CURRENT + TMP_SUFFIX)
        if stale.is_symlink() or stale.exists():
            stale.unlink()

    def path_of(self, revision: str) -> Path:
        return self.generations / _safe_name(revision)

    def write(
        self,
        revision: str,
        files: Mapping[str, bytes],
        source: Mapping[str, bytes],
        previous: StoredGeneration | None = None,
    ) -> Path:
        """Write one generation durably; return its final directory. Idempotent per revision.

        Files whose bytes equal the same path in `previous` are hard-linked from it (creating an
        inode costs far more than a link; generations are immutable, so sharing is safe).
        """
        final = self.path_of(revision)
        if final.is_dir():
            return final
        tmp = final.with_name(final.name + TMP_SUFFIX)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        made: set[str] = set()
        prev_root = previous.root if previous is not None and previous.root.is_dir() else None
        for prefix, tree, before in (
            ("", files, previous.files if previous else {}),
            (SOURCE_DIR + "/", source, previous.source if previous else {}),
        ):
            for rel, data in tree.items():
                path = prefix + _safe_relative(rel)
                parent = os.path.dirname(path)
                if parent and parent not in made:
                    os.makedirs(tmp / parent, exist_ok=True)
                    made.add(parent)
                if prev_root is not None and before.get(rel) == data:
                    try:
                        os.link(prev_root / path, tmp / path)
                        continue
                    except OSError:
                        pass  # collected meanwhile, or another file system: write it
                with open(tmp / path, "wb") as fh:
                    fh.write(data)
        _sync_filesystem(tmp)
        os.rename(tmp, final)
        _fsync_dir(self.generations)
        return final

    def swap_current(self, revision: str) -> None:
        """Point `current` at `generations/<revision>` atomically and durably."""
        target = os.path.join(GENERATIONS, _safe_name(revision))
        tmp = self.state_dir / (CURRENT + TMP_SUFFIX)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.rename(tmp, self.current_link)
        _fsync_dir(self.state_dir)

    def current_revision(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = os.path.basename(target)
        return name if (self.generations / name).is_dir() else None

    def load(self, revision: str) -> StoredGeneration:
        """Read a stored generation (rendered files and sources). OSError when absent."""
        root = self.path_of(revision)
        files: dict[str, bytes] = {}
        source: dict[str, bytes] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                with open(os.path.join(dirpath, name), "rb") as fh:
                    data = fh.read()
                if rel.startswith(SOURCE_DIR + "/"):
                    source[rel[len(SOURCE_DIR) + 1 :]] = data
                else:
                    files[rel] = data
        if not root.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such generation", str(root))
        return StoredGeneration(revision, root, files, source)

    def load_current(self) -> StoredGeneration | None:
        revision = self.current_revision()
        if revision is None:
            return None
        return self.load(revision)

    def stored(self) -> list[str]:
        """Revisions on disk, oldest first (by the time they were written)."""
        entries = [e for e in self.generations.iterdir() if e.is_dir() and not e.name.endswith(TMP_SUFFIX)]
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return [e.name for e in entries]

    def collect(self, keep: int, referenced: Collection[str] = ()) -> list[str]:
        """Remove all but the newest `keep` generations; never `current` or a referenced one."""
        current = self.current_revision()
        stored = self.stored()
        newest = set(stored[-keep:]) if keep > 0 else set()
        removed = []
        for revision in stored:
            if revision in newest or revision == current or revision in referenced:
                continue
            shutil.rmtree(self.generations / revision, ignore_errors=True)
            removed.append(revision)
        return removed


def _safe_name(revision: str) -> str:
    if not revision or "/" in revision or revision.startswith(".") or revision.endswith(TMP_SUFFIX):
        raise ValueError(f"not a revision: {revision!r}")
    return revision


def _safe_relative(rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe artifact path: {rel!r}")
    return rel


def _sync_filesystem(path: Path) -> None:
    """Make everything written under `path` durable: syncfs(2) of its file system."""
    libc = _libc()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
