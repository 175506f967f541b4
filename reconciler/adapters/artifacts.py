"""Generations on disk: write `generations/<sha>/` atomically, swap `current`, load it, collect old ones.

Called by the daemon's write/swap steps (`reconciler.daemon.steps`) and at start-up (`load_current`).
`write` and `swap_current` raise `core.errors.StoreUnwritable` (a temporary failure) when the
state directory refuses them.

Crash safety (a `kill -9` at any point never leaves a torn generation in service):
1. everything is written under `generations/<sha>.tmp/`, then made durable (one `syncfs` of the
   file system: one flush for thousands of small files instead of an fsync each),
2. `generations/<sha>.tmp` is renamed to `generations/<sha>` and the directory is fsynced,
3. a new symlink `current.tmp` is renamed over `current` (rename(2) is atomic) and fsynced.
Leftover `*.tmp` entries are debris from a crash and are removed at start-up.

Each generation also keeps the repository files it was rendered from under `.source/`, so a
restart can rebuild the validated state of `current` without the source (the remote may be
down, a plain directory may have changed since), and facts about how it was rendered under
`.meta/` (the fingerprint of the report secret its tokens are signed with). matchbox ignores
dot-directories.

A generation is immutable, except that the daemon may render the same revision again (the
report secret changed): `write(..., replace=True)` writes `<sha>.tmp` as usual, then swaps it
with `<sha>` in one `renameat2(RENAME_EXCHANGE)` and recycles the old tree.

Inode recycling (`recycle/` in the state directory): a collected generation is renamed out of
`generations/` and taken apart into spare inodes that `write` renames into place and overwrites,
because creating inodes is the write step's cost (why, and what it measured: docs/GENERATION.md).
A spare keeps its mode, so one that held a secret (0600) is reused for private files only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import itertools
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.adapters.durable import fsync_dir
from reconciler.core.errors import StoreUnwritable
from reconciler.core.render.files import RenderedFiles

log = logging.getLogger(__name__)

GENERATIONS = "generations"
CURRENT = "current"
SOURCE_DIR = ".source"
META_DIR = ".meta"
TMP_SUFFIX = ".tmp"
PACE_EVERY = 64  # files between two calls of `write`'s `pace` (~3-6 ms of writing at 10,000 nodes)
_PRIVATE_KEPT = 8  # generations whose private files the store remembers (the previous one is what it needs)
RECYCLE = "recycle"
_TAKING_APART = "gen-"  # recycle/gen-<name>: a collected generation not yet taken apart
_PUBLIC_SPARE = "s"  # recycle/s<n>: a spare file readable by others
_PRIVATE_SPARE = "p"  # recycle/p<n>: a spare file of mode 0600 (f<n>: either, from before the two were told apart)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_REUSED_FILE = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW


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
    meta: Mapping[str, bytes] = field(default_factory=dict)  # `.meta/<name>`: how it was rendered


class ArtifactStore:
    """The `generations/` directory and the `current` symlink of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.generations = self.state_dir / GENERATIONS
        self.current_link = self.state_dir / CURRENT
        self.recycle = self.state_dir / RECYCLE
        self._spare_files: list[str] = []  # names in recycle/: regular files nothing else links
        self._spare_private: list[str] = []  # the same, mode 0600 (`_PRIVATE_SPARE`): for private files only
        self._spare_dirs: list[str] = []  # names in recycle/: empty directories
        self._names = itertools.count()
        self._pool_limit = 0  # files of the latest generation written: no write needs more
        self._private: dict[str, frozenset[str]] = {}  # revision -> its private files, as written or loaded

    def prepare(self) -> None:
        """Create the directories, recycle debris that a crash left behind, index the pool."""
        self.generations.mkdir(parents=True, exist_ok=True)
        self.recycle.mkdir(exist_ok=True)
        self._spare_files, self._spare_private, self._spare_dirs = [], [], []
        leftovers, last = [], -1
        with os.scandir(self.recycle) as entries:
            for entry in entries:
                kind, number = entry.name[:1], entry.name[1:]
                if kind in "fspd" and number.isdigit():
                    last = max(last, int(number))
                    if kind in "fsp" and entry.is_file(follow_symlinks=False):
                        private = kind == _PRIVATE_SPARE or (
                            kind == "f" and _private_mode(entry.stat(follow_symlinks=False).st_mode))
                        (self._spare_private if private else self._spare_files).append(entry.name)
                    elif kind == "d" and entry.is_dir(follow_symlinks=False) and not os.listdir(entry.path):
                        self._spare_dirs.append(entry.name)
                    else:
                        _remove(entry.path)
                elif entry.name.startswith(_TAKING_APART):
                    leftovers.append(entry.path)  # a collection interrupted by a crash
        self._names = itertools.count(last + 1)
        for path in leftovers:
            self._take_apart(path)
        for debris in self.generations.iterdir():
            if debris.name.endswith(TMP_SUFFIX):
                log.info("recycling debris of an interrupted write: %s", debris)
                self._recycle(debris)
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
        timings: MutableMapping[str, float] | None = None,
        meta: Mapping[str, bytes] | None = None,
        replace: bool = False,
        private: Collection[str] = (),
        pace: Callable[[], None] | None = None,
    ) -> Path:
        """Write one generation durably; return its final directory. Idempotent per revision
        unless `replace`: then a stored one of the same revision is swapped out atomically.
        `private`: paths of `files` holding a secret's value (`core.secrets.private_paths`),
        written mode 0600 and never hard-linked.

        Files whose bytes equal the same path in `previous` are hard-linked from it (creating an
        inode costs far more than a link; generations are immutable, so sharing is safe), found
        without stamping either side when both are `RenderedFiles` (`_plan`); a file private in
        either generation is not. The others get recycled inodes where the pool has them (module
        docstring). `meta` goes to `.meta/`. `timings`, when given, receives the seconds spent
        writing files, making them durable and renaming. `pace`, when given, is called every
        `PACE_EVERY` files (the daemon's writer waits there for a commit on its way: daemon.persist).
        StoreUnwritable when the file system refuses.
        """
        try:
            return self._write(revision, files, source, previous, timings, meta, replace, frozenset(private),
                               pace)
        except OSError as exc:
            raise StoreUnwritable(f"writing generation: {exc}") from exc

    def _write(
        self,
        revision: str,
        files: Mapping[str, bytes],
        source: Mapping[str, bytes],
        previous: StoredGeneration | None,
        timings: MutableMapping[str, float] | None,
        meta: Mapping[str, bytes] | None,
        replace: bool,
        private: frozenset[str] = frozenset(),
        pace: Callable[[], None] | None = None,
    ) -> Path:
        final = self.path_of(revision)
        exists = final.is_dir()
        if exists and not replace:
            return final
        t0 = time.monotonic()
        tmp = final.with_name(final.name + TMP_SUFFIX)
        if tmp.exists():
            self._recycle(tmp)
        self._make_dir(self.generations, tmp.name)
        prev_root = previous.root if previous is not None and previous.root.is_dir() else None
        tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        prev_fd = os.open(prev_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if prev_root else None
        pool_fd = os.open(self.recycle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            made: set[str] = {""}
            was_private = self._private_of(previous, prev_fd)
            for prefix, tree, before in (
                ("", files, previous.files if prev_fd is not None and previous else None),
                (SOURCE_DIR + "/", source, previous.source if prev_fd is not None and previous else None),
                (META_DIR + "/", meta or {}, None),
            ):
                for n, (rel, data) in enumerate(_plan(tree, before), 1):
                    if pace is not None and not n % PACE_EVERY:
                        pace()
                    path = prefix + _safe_relative(rel)
                    parent = path.rpartition("/")[0]
                    if parent not in made:
                        self._make_dirs(tmp_fd, pool_fd, parent, made)
                    secret = not prefix and rel in private
                    if data is not None:
                        self._write_file(tmp_fd, pool_fd, path, data, private=secret)
                        continue
                    # The previous generation's file holds these bytes: linked, unless either
                    # side is private (never shared, and a link would carry the other's mode).
                    if not secret and not (not prefix and was_private(rel)):
                        try:
                            os.link(path, path, src_dir_fd=prev_fd, dst_dir_fd=tmp_fd, follow_symlinks=False)
                            continue
                        except OSError:
                            pass  # collected meanwhile, or another file system: write it
                    self._write_file(tmp_fd, pool_fd, path, tree[rel], private=secret)
        finally:
            for fd in (tmp_fd, prev_fd, pool_fd):
                if fd is not None:
                    os.close(fd)
        t1 = time.monotonic()
        _sync_filesystem(tmp)
        t2 = time.monotonic()
        if exists:
            self._replace(tmp, final)
        else:
            os.rename(tmp, final)
            fsync_dir(self.generations)
        self._pool_limit = len(files) + len(source)
        self._remember_private(revision, private)
        if timings is not None:
            timings.update({"files": t1 - t0, "sync": t2 - t1, "rename": time.monotonic() - t2})
        return final

    def _replace(self, new: Path, final: Path) -> None:
        """Put the tree at `new` in place of `final` (both in `generations/`), recycle the old one."""
        try:
            _exchange(new, final)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            # No atomic exchange on this file system: old out, new in. A crash in between leaves
            # no `generations/<sha>` (`current` dangles): the next start reconciles from git.
            log.warning("no atomic directory exchange here (%s): replacing %s in two renames", exc, final)
            parked = final.with_name(final.name + ".old" + TMP_SUFFIX)
            os.rename(final, parked)
            os.rename(new, final)
            new = parked
        fsync_dir(self.generations)
        self._recycle(new)  # the old tree; a `.tmp` name, so a crash leaves debris prepare() recycles

    def _write_file(self, dir_fd: int, pool_fd: int, path: str, data: bytes, private: bool = False) -> None:
        """`path` (under `dir_fd`) holding `data`: a recycled inode overwritten, else a new one.
        `private`: mode 0600 before a byte is written (a recycled inode keeps its old mode)."""
        fd = -1
        spares = self._spare_private if private else self._spare_files
        while spares and fd < 0:
            name = spares.pop()
            try:
                os.rename(name, path, src_dir_fd=pool_fd, dst_dir_fd=dir_fd)
                fd = os.open(path, _REUSED_FILE, dir_fd=dir_fd)
            except FileNotFoundError:
                continue  # gone from the pool (removed by hand): take the next
            except OSError as exc:
                log.warning("not recycling inodes: %s", exc)
                spares.clear()  # e.g. recycle/ on another file system
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path, dir_fd=dir_fd)
        if fd < 0:
            fd = os.open(path, _NEW_FILE, 0o600 if private else 0o666, dir_fd=dir_fd)
        try:
            if private:
                os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.ftruncate(fd, len(data))  # after the write: a truncate to 0 first would flush on close
        finally:
            os.close(fd)

    def _make_dirs(self, dir_fd: int, pool_fd: int, rel: str, made: set[str]) -> None:
        """Directory `rel` and its parents under `dir_fd`, recycled ones first."""
        parent = rel.rpartition("/")[0]
        if parent not in made:
            self._make_dirs(dir_fd, pool_fd, parent, made)
        while self._spare_dirs:
            name = self._spare_dirs.pop()
            try:
                os.rename(name, rel, src_dir_fd=pool_fd, dst_dir_fd=dir_fd)
                break
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("not recycling directories: %s", exc)
                self._spare_dirs.clear()
        else:
            os.mkdir(rel, dir_fd=dir_fd)
        made.add(rel)

    def _make_dir(self, parent: Path, name: str) -> None:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        pool_fd = os.open(self.recycle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._make_dirs(fd, pool_fd, name, {""})
        finally:
            os.close(fd)
            os.close(pool_fd)

    def _remember_private(self, revision: str, private: frozenset[str]) -> None:
        self._private.pop(revision, None)
        self._private[revision] = private
        while len(self._private) > _PRIVATE_KEPT:
            del self._private[next(iter(self._private))]

    def _private_of(self, previous: StoredGeneration | None, prev_fd: int | None) -> Callable[[str], bool]:
        """Whether a file of `previous` (open as `prev_fd`) is private: as this store wrote or read it,
        else by its mode on disk."""
        if previous is None or prev_fd is None:
            return lambda rel: False
        known = self._private.get(previous.revision)
        if known is not None:
            return known.__contains__

        def by_mode(rel: str) -> bool:
            try:
                return _private_mode(os.stat(rel, dir_fd=prev_fd, follow_symlinks=False).st_mode)
            except OSError:
                return True  # gone (collected meanwhile): written, not linked
        return by_mode

    def swap_current(self, revision: str) -> None:
        """Point `current` at `generations/<revision>` atomically and durably (or StoreUnwritable)."""
        try:
            self._swap_current(revision)
        except OSError as exc:
            raise StoreUnwritable(f"swapping current: {exc}") from exc

    def _swap_current(self, revision: str) -> None:
        target = os.path.join(GENERATIONS, _safe_name(revision))
        tmp = self.state_dir / (CURRENT + TMP_SUFFIX)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.rename(tmp, self.current_link)
        fsync_dir(self.state_dir)

    def current_revision(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = os.path.basename(target)
        return name if (self.generations / name).is_dir() else None

    def meta(self, revision: str, name: str) -> bytes | None:
        """`.meta/<name>` of a stored generation; None when it or the generation is absent."""
        try:
            return (self.path_of(revision) / META_DIR / _safe_relative(name)).read_bytes()
        except OSError:
            return None

    def load(self, revision: str) -> StoredGeneration:
        """Read a stored generation (rendered files and sources). OSError when absent."""
        root = self.path_of(revision)
        files: dict[str, bytes] = {}
        source: dict[str, bytes] = {}
        meta: dict[str, bytes] = {}
        private: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                with open(os.path.join(dirpath, name), "rb") as fh:
                    data = fh.read()
                    mode = os.fstat(fh.fileno()).st_mode
                if rel.startswith(SOURCE_DIR + "/"):
                    source[rel[len(SOURCE_DIR) + 1 :]] = data
                elif rel.startswith(META_DIR + "/"):
                    meta[rel[len(META_DIR) + 1 :]] = data
                else:
                    files[rel] = data
                    if _private_mode(mode):
                        private.add(rel)
        if not root.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such generation", str(root))
        self._remember_private(revision, frozenset(private))
        return StoredGeneration(revision, root, files, source, meta)

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
            self._recycle(self.generations / revision)
            removed.append(revision)
        return removed

    def _recycle(self, tree: Path) -> None:
        """Move `tree` out of `generations/` at once (atomic rename), then take it apart."""
        parked = self.recycle / (_TAKING_APART + tree.name)
        try:
            if parked.exists():
                self._take_apart(str(parked))
            os.rename(tree, parked)
        except OSError as exc:
            log.warning("cannot recycle %s (%s): removing it", tree, exc)
            shutil.rmtree(tree, ignore_errors=True)
            return
        self._take_apart(str(parked))

    def _take_apart(self, top: str) -> None:
        """Files only `top` holds and its directories into the pool; shared links unlinked.
        A file keeps its mode in the pool: a private one (0600) is only reused for private files."""
        limit = self._pool_limit or None
        try:
            for dirpath, _dirnames, filenames in os.walk(top, topdown=False):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    st = os.lstat(path)
                    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and (
                            limit is None or len(self._spare_files) + len(self._spare_private) < limit):
                        kind, spares = (_PRIVATE_SPARE, self._spare_private) if _private_mode(st.st_mode) \
                            else (_PUBLIC_SPARE, self._spare_files)
                        spare = f"{kind}{next(self._names)}"
                        os.rename(path, os.path.join(self.recycle, spare))
                        spares.append(spare)
                    else:
                        os.unlink(path)
                if limit is None or len(self._spare_dirs) < limit:
                    spare = f"d{next(self._names)}"
                    os.rename(dirpath, os.path.join(self.recycle, spare))
                    self._spare_dirs.append(spare)
                else:
                    os.rmdir(dirpath)
        except OSError as exc:
            log.warning("taking %s apart (%s): removing it", top, exc)
            _remove(top)


def _plan(tree: Mapping[str, bytes], before: Mapping[str, bytes] | None) -> Iterator[tuple[str, bytes | None]]:
    """Each path of `tree` with its bytes, or with None where `before` (the previous generation's,
    as written) holds the same bytes. Two `RenderedFiles` stamped alike are compared as stored
    entries, neither stamped: an entry equal to the previous one's serves the same bytes when it
    is plain, or stamped but without the revision or a token in it, or at the same revision."""
    if before is None:
        yield from tree.items()
        return
    if isinstance(tree, RenderedFiles) and isinstance(before, RenderedFiles) and tree.stamps_like(before):
        old_entry = before.entries.get
        same_revision = tree.revision == before.revision
        sentinel = tree.sentinel.encode()
        for rel, entry in tree.entries.items():
            old = old_entry(rel)
            if old is entry or old == entry:
                if isinstance(entry, bytes) or same_revision or (not entry[2] and sentinel not in entry[0]):
                    yield rel, None
                    continue
            elif old is not None and type(old) is not type(entry):  # one stamped, one not: by the bytes
                data = tree[rel]
                yield rel, (None if before[rel] == data else data)
                continue
            yield rel, tree[rel]
        return
    get = before.get
    for rel, data in tree.items():
        yield rel, (None if get(rel) == data else data)


def _private_mode(mode: int) -> bool:
    """A file nobody but its owner may read: how private files are written (0600)."""
    return mode & 0o077 == 0


def _safe_name(revision: str) -> str:
    if not revision or "/" in revision or revision.startswith(".") or revision.endswith(TMP_SUFFIX):
        raise ValueError(f"not a revision: {revision!r}")
    return revision


def _safe_relative(rel: str) -> str:
    """`rel` when no component is empty, `.` or `..` (three substring tests: called per file)."""
    padded = f"/{rel}/"
    if "//" in padded or "/./" in padded or "/../" in padded:
        raise ValueError(f"unsafe artifact path: {rel!r}")
    return rel


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _sync_filesystem(path: Path) -> None:
    """Make everything written under `path` durable: syncfs(2) of its file system."""
    libc = _libc()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two directory entries atomically: renameat2(2) with RENAME_EXCHANGE (Linux 3.15+)."""
    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not in this C library")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a), None, str(b))

