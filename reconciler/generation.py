"""Generation: one commit rendered, immutable; and the single guarded reference to the served one.

The daemon builds a Generation per applied commit and swaps it in with `GenerationHolder.swap`.
Every server takes ONE Generation at the start of a DHCP exchange, TFTP transfer or HTTP
request (`holder.current()`) and keeps it to the end, so no request sees half-old, half-new
state. Older generations stay reachable by revision (`holder.get(sha)`) for revision-pinned
URLs until the daemon forgets them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.model import DesiredState


@dataclass(frozen=True)
class Generation:
    """A rendered commit: the validated state and its artifacts (repo-relative path -> bytes)."""

    revision: str
    state: DesiredState
    files: Mapping[str, bytes]
    root: Path | None = None  # generations/<sha>/ on disk, when written
    activated_at: float = field(default_factory=time.time)

    def file(self, path: str) -> bytes | None:
        return self.files.get(path)


class GenerationHolder:
    """The lock-guarded reference to the current Generation, plus the retained older ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Generation | None = None
        self._retained: dict[str, Generation] = {}

    def current(self) -> Generation | None:
        with self._lock:
            return self._current

    def get(self, revision: str) -> Generation | None:
        """A retained generation by full revision, or None when unknown or collected."""
        with self._lock:
            return self._retained.get(revision)

    def swap(self, generation: Generation) -> Generation | None:
        """Make `generation` current; return the previous one (still retained)."""
        with self._lock:
            previous = self._current
            self._current = generation
            self._retained[generation.revision] = generation
            return previous

    def retain_only(self, revisions: Iterable[str]) -> None:
        """Forget every retained generation not named (the current one is always kept)."""
        keep = set(revisions)
        with self._lock:
            if self._current is not None:
                keep.add(self._current.revision)
            self._retained = {rev: gen for rev, gen in self._retained.items() if rev in keep}

    def retained(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._retained)
