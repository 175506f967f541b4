"""The content-addressed asset store under `--assets-dir`, and the served paths linked into it.

Called by `adapters.assetsync` (the sync writes here), the daemon (a tree per generation,
collection of what no kept generation references) and `servers.http_assets` (through the layout
in `core.assets`). Layout, all on one file system so that every link is a hard link:

    <assets-dir>/.netboot/blobs/sha256/ab/<sha256>   content, stored once, read-only
    <assets-dir>/.netboot/partial/<sha256>           a download in progress (resumed with Range)
    <assets-dir>/.netboot/tmp/                       extractions in progress
    <assets-dir>/.netboot/generations/<revision>/... one tree of links per kept generation
    <assets-dir>/.netboot/synced.json                path -> (sha256, spec) of the last sync
    <assets-dir>/<path>                              the served file: a link to its blob

Hard links, not symlinks: a served file is the blob itself (the HTTP server's path checks need
no exception), and a blob's link count says whether anything still references it: a blob with
one link (the store's own) is garbage. Every change is a new name renamed over the old one, so a
reader sees the old file or the new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.durable import fsync_dir
from reconciler.core.assets import STORE_DIR, store_rel


@dataclass(frozen=True)
class Synced:
    """What the last sync put at a path."""

    sha256: str
    spec: str


class AssetStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / STORE_DIR

    # -- content -------------------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.dir / store_rel(sha256)

    def has(self, sha256: str) -> bool:
        try:
            return stat.S_ISREG(self.blob(sha256).lstat().st_mode)
        except OSError:
            return False

    def partial(self, sha256: str) -> Path:
        path = self.dir / "partial" / sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def tmp_dir(self) -> Path:
        path = self.dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def adopt(self, done: Path, sha256: str) -> Path:
        """Move a verified, fsynced file into the store under its digest (kept once: when the
        digest is stored already, `done` is dropped)."""
        target = self.blob(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.has(sha256):
            done.unlink(missing_ok=True)
            return target
        os.chmod(done, 0o444)
        os.replace(done, target)
        fsync_dir(target.parent)
        return target

    def adopt_in_place(self, path: Path, sha256: str) -> None:
        """Take a file already at a served path (placed by hand, verified by the caller) into the
        store by linking it: the bytes are not copied or fetched again."""
        target = self.blob(sha256)
        if self.has(sha256):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o444)
        os.link(path, target)
        fsync_dir(target.parent)

    # -- served paths ---------------------------------------------------------------------------

    def served(self, rel: str) -> Path:
        return self.root / rel

    def links_to(self, path: Path, sha256: str) -> bool:
        """Whether `path` is (a link to) the stored blob of `sha256`."""
        try:
            a, b = path.lstat(), self.blob(sha256).lstat()
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def publish(self, paths: Mapping[str, str]) -> None:
        """Make each served path (relative to the root) a link to its blob, atomically."""
        for rel, sha256 in paths.items():
            _link_into(self.blob(sha256), self.root / rel)

    def link_generation(self, revision: str, paths: Mapping[str, str]) -> Path:
        """A tree of links for one generation, so `/r/<revision>/assets/...` keeps its bytes after
        the path's content changes. Built beside its final name and renamed into place."""
        final = self.generation_root(revision)
        if final.is_dir():
            shutil.rmtree(final)  # same revision again (a restart): rebuilt from what this sync holds
        building = final.with_name(final.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        for rel, sha256 in paths.items():
            _link_into(self.blob(sha256), building / rel)
        os.replace(building, final)
        fsync_dir(final.parent)
        return final

    def generation_root(self, revision: str) -> Path:
        return self.dir / "generations" / revision

    def generations(self) -> list[str]:
        try:
            return sorted(p.name for p in (self.dir / "generations").iterdir() if not p.name.endswith(".building"))
        except FileNotFoundError:
            return []

    # -- collection -----------------------------------------------------------------------------

    def collect(self, keep: set[str] | None = None) -> int:
        """Drop generation trees not in `keep` (None: keep all), then every blob nothing links to
        any more (its link count is 1: the store's own). Returns the bytes freed. Takes the store's
        lock: a sync links what it adopts before it lets go."""
        with self.locked():
            return self._collect(keep)

    def _collect(self, keep: set[str] | None) -> int:
        if keep is not None:
            for revision in self.generations():
                if revision not in keep:
                    shutil.rmtree(self.generation_root(revision), ignore_errors=True)
        freed = 0
        for blob in (self.dir / "blobs").glob("sha256/*/*"):
            with contextlib.suppress(OSError):
                st = blob.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    blob.unlink()
                    freed += st.st_size
        return freed

    # -- bookkeeping ----------------------------------------------------------------------------

    def synced(self) -> dict[str, Synced]:
        try:
            raw = json.loads((self.dir / "synced.json").read_text("utf-8"))
            return {k: Synced(v["sha256"], v["spec"]) for k, v in raw.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def record(self, entries: Mapping[str, Synced]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        current = self.synced()
        current.update(entries)
        data = {k: {"sha256": v.sha256, "spec": v.spec} for k, v in sorted(current.items())}
        tmp = self.dir / "synced.json.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
        os.replace(tmp, self.dir / "synced.json")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One sync at a time per store (the daemon and a hand-run `assets sync`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _link_into(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        a, b = target.lstat(), blob.lstat()
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return
    except OSError:
        pass
    tmp = target.with_name(f".{target.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.link(blob, tmp)
    os.replace(tmp, target)

