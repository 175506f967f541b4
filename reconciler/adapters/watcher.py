"""Change notification for local sources (watchdog/inotify), debounced into one trigger.

Called by the daemon for a local repository (it watches the `.git` directory: a commit there
is what it follows) or a plain directory (development: reload on save). One `git commit`
makes about a hundred events under `.git` (objects, index, logs, refs); the watcher calls
`on_change` once, `debounce` seconds after the last event of a burst (and at most
`max_delay` after the first, so a busy tree still reconciles).

A ref moving (`refs/...`, `packed-refs`, `HEAD`, reftable's `tables.list` renamed into place)
calls `on_change` at once: git writes a commit's objects before it moves the ref, so the new
revision is complete to read, and waiting for the rest of the burst (its reflog) buys nothing.
It is called on the thread that saw the event (watchdog's), not handed to the debounce thread: one
thread switch fewer between the ref moving and the reconcile. Events after it start another
debounce; the reconcile they trigger finds the revision applied.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

# Paths under .git whose changes never move a branch (keeps the burst short).
_IGNORED_PARTS = ("/objects/", "/logs/", "index.lock")
_REF_FILES = ("HEAD", "packed-refs", "reftable/tables.list")
_CHANGES: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        path = os.fsdecode(event.src_path)
        if not self._watcher.git_dir:
            self._watcher.poke()
            return
        if any(part in self._watcher.inside(path) for part in _IGNORED_PARTS):
            return
        if event.event_type != "moved" and (path.endswith(".lock") or event.is_directory):
            return  # a lock file moves nothing until it is renamed; a directory's mtime follows its entries
        self._watcher.poke(urgent=self._watcher.moves_ref(event))


class Watcher:
    """Watches one directory tree and calls `on_change()` once per burst of events."""

    def __init__(
        self,
        root: Path,
        on_change: Callable[[], None],
        *,
        debounce: float = 0.05,
        max_delay: float = 1.0,
        git_dir: bool = False,
    ) -> None:
        self.root = Path(root)
        self.git_dir = git_dir
        self._on_change = on_change
        self._debounce = debounce
        self._max_delay = max_delay
        self._observer: Any = None
        self._lock = threading.Lock()
        self._first = 0.0
        self._last = 0.0
        self._pending = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        observer = Observer()
        # Only changes: without a filter inotify also reports every open and close, and the
        # daemon's own reads of a commit (a loose object each) kept watchdog's thread busy
        # contending for the GIL with snapshot and validation (both 2-3x slower on this path).
        observer.schedule(_Handler(self), str(self.root), recursive=True, event_filter=_CHANGES)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread.start()
        log.info("watching %s for changes", self.root)

    def inside(self, path: str) -> str:
        """`path` from the watched root, as "/<relative>": what lies above the root (a repository
        under /srv/logs/site) must not match the parts of .git that are ignored."""
        try:
            return "/" + Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return path

    def moves_ref(self, event: FileSystemEvent) -> bool:
        """Whether `event` puts a ref file in place (git renames `<ref>.lock` over it)."""
        if event.event_type != "moved" or event.is_directory:
            return False
        dest = os.fsdecode(event.dest_path)
        if dest.endswith(".lock"):
            return False
        try:
            rel = Path(dest).relative_to(self.root).as_posix()
        except ValueError:
            return False
        return rel.startswith("refs/") or rel in _REF_FILES

    def poke(self, urgent: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if urgent:  # this burst is called now, here: the debounce thread has nothing pending
                self._pending = False
            else:
                if not self._pending:
                    self._pending = True
                    self._first = now
                self._last = now
        if urgent:
            self._fire()
            return
        self._wake.set()

    def _fire(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("change callback failed")

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stopping.is_set():
                with self._lock:
                    if not self._pending:
                        break
                    now = time.monotonic()
                    due = min(self._last + self._debounce, self._first + self._max_delay)
                    if now >= due:
                        self._pending = False
                        fire = True
                    else:
                        fire = False
                if fire:
                    self._fire()
                    break
                self._wake.wait(max(0.0, due - now))
                self._wake.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(2.0)
        self._thread.join(2.0)
