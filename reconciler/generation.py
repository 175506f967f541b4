"""Generation: one commit rendered, immutable; and the single guarded reference to the served one.

The daemon builds a Generation per applied commit and swaps it in with `GenerationHolder.swap`.
Every server takes ONE Generation at the start of a DHCP exchange, TFTP transfer or HTTP
request (`holder.current()`) and keeps it to the end, so no request sees half-old, half-new
state. Older generations stay reachable by revision (`holder.get(sha)`) for revision-pinned
URLs until the daemon forgets them.

A generation that is on disk but not in memory (a restart loads only `current`) is read on a
`get()` miss through the `loader` the daemon gives the holder, then cached; at most
`max_loaded` such generations are held (least recently used dropped first, read again when
asked for). A loader answers None for a revision that is unknown or was collected.

What a generation derives for serving (the HTTP boot index, the DHCP plan) are views on the
frozen value, built once per Generation (`boot_index`, `dhcp_plan`) and warmed by `swap` (the
DHCP plan from the one of the generation it replaces), so no server keeps a cache of its own and
no packet waits for one to be built.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.core.boot import BootIndex
from reconciler.core.bootfiles import signed_files
from reconciler.core.model import DesiredState, Node
from reconciler.core.render.files import RenderedFiles
from reconciler.core.secrets import secret_templates
from reconciler.protocol.dhcp_decide import DhcpPlan, plan_dhcp

log = logging.getLogger(__name__)

MAX_LOADED = 4  # generations read back from disk on demand and held at once


@dataclass(frozen=True)
class Generation:
    """A rendered commit: the validated state and its artifacts (repo-relative path -> bytes)."""

    revision: str
    state: DesiredState
    files: Mapping[str, bytes]
    root: Path | None = None  # generations/<sha>/ on disk, when written
    activated_at: float = field(default_factory=time.time)
    # The derived views, by name: filled at most once per view (a race builds it twice and
    # publishes the first; `dict.setdefault` is atomic), never changed after. Not part of the value.
    _views: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def file(self, path: str) -> bytes | None:
        return self.files.get(path)

    @property
    def boot_index(self) -> BootIndex:
        """The HTTP boot lookups (`core.boot.BootIndex`) of this generation."""
        found = self._views.get("boot_index")
        if found is None:
            found = self._views.setdefault("boot_index", BootIndex.build(self.state))
        assert isinstance(found, BootIndex)
        return found

    @property
    def dhcp_plan(self) -> DhcpPlan:
        """The DHCP lookup tables (`protocol.dhcp_decide.DhcpPlan`) of this generation."""
        found = self._views.get("dhcp_plan")
        if found is None:
            found = self._views.setdefault("dhcp_plan", plan_dhcp(self.state))
        assert isinstance(found, DhcpPlan)
        return found

    @property
    def signed_files(self) -> Mapping[str, str]:
        """The Secure Boot chain's TFTP names -> files on the server (`core.bootfiles.signed_files`)."""
        found = self._views.get("signed_files")
        if found is None:
            found = self._views.setdefault("signed_files", signed_files(self.state))
        assert isinstance(found, dict)
        return found

    def warm(self, previous: Generation | None = None, changed: Sequence[tuple[Node, Node]] | None = None) -> None:
        """Build every view now (the activating thread), not on the first request's path; the
        DHCP plan from `previous`'s where it has one (the nodes a commit did not change keep their
        reservations: `plan_dhcp`; the same value as built whole). `changed`: the nodes that differ
        from `previous`'s, (before, after) by name, every other node the same in the same order
        (the worker's change, daemon.resident): the boot index and the DHCP plan are `previous`'s
        with those nodes' entries replaced (a one-node commit at 10,000 nodes: ~10 ms -> ~0.5 ms),
        or built as without it when the change moves an entry (a MAC or address changed)."""
        if previous is not None and previous is not self:
            plan = previous._views.get("dhcp_plan")
            if isinstance(plan, DhcpPlan) and "dhcp_plan" not in self._views:
                self._views.setdefault("dhcp_plan", plan_dhcp(self.state, (plan, previous.state), changed))
            index = previous._views.get("boot_index")
            if changed is not None and isinstance(index, BootIndex) and "boot_index" not in self._views:
                patched = _patched_index(index, self.state, changed)
                if patched is not None:
                    self._views.setdefault("boot_index", patched)
        _ = self.boot_index, self.dhcp_plan


def _patched_index(index: BootIndex, state: DesiredState, changed: Sequence[tuple[Node, Node]]) -> BootIndex | None:
    """`BootIndex.build(state)` from the index of the state before it, which differs from `state`
    only by the `changed` nodes; None when that cannot be told this way: the profiles, groups or
    cloud-init templates differ, or a node's MAC or address changed (its entries move in the
    dicts' order), or an entry is not the node before's (two nodes with one MAC or address)."""
    old = index.state
    if state.profiles != old.profiles or state.groups != old.groups or state.cloud_init != old.cloud_init:
        return None
    by_mac, by_ip = dict(index.by_mac), dict(index.by_ip)
    came: set[str] = set()  # private paths to add, and to take out (a node's path is its own: its MAC's)
    went: set[str] = set()
    uses = secret_templates(state)
    for before, after in changed:
        ip = str(after.ip) if after.ip is not None else None
        if before.mac != after.mac or before.ip != after.ip or by_mac.get(after.mac) is not before \
                or (ip is not None and by_ip.get(ip) is not before):
            return None
        by_mac[after.mac] = after
        if ip is not None:
            by_ip[ip] = after
        path = f"cloud-init/{after.mac}/user-data"
        profile = state.profiles.get(after.profile)
        if profile is not None and profile.cloud_init in uses:
            came.add(path)
        else:
            went.add(path)
    # (the set of every private path copied only when one comes or goes: ~66,000 at 100,000 nodes)
    came -= index.private
    went &= index.private
    return replace(index, state=state, by_mac=by_mac, by_ip=by_ip,
                   private=frozenset((index.private - went) | came) if came or went else index.private)


Loader = Callable[[str], Generation | None]


class GenerationHolder:
    """The lock-guarded reference to the current Generation, plus the retained older ones."""

    def __init__(self, loader: Loader | None = None, *, max_loaded: int = MAX_LOADED) -> None:
        self._lock = threading.Lock()
        self._current: Generation | None = None
        self._retained: dict[str, Generation] = {}  # activated by this process
        self._loaded: OrderedDict[str, Generation] = OrderedDict()  # read back by the loader, LRU
        self._loader = loader
        self._max_loaded = max(max_loaded, 1)
        self._load_lock = threading.Lock()  # one load at a time: a rack asking for one revision reads it once
        self._epoch = 0  # bumped by retain_only: a load that overlaps a collection is not cached

    def set_loader(self, loader: Loader | None) -> None:
        with self._lock:
            self._loader = loader

    def current(self) -> Generation | None:
        with self._lock:
            return self._current

    def get(self, revision: str) -> Generation | None:
        """A retained generation by full revision (read back through the loader when only on
        disk), or None when unknown or collected."""
        found = self._cached(revision)
        if found is not None or self._loader is None:
            return found
        with self._load_lock:
            found = self._cached(revision)
            if found is not None:
                return found
            with self._lock:
                loader, epoch = self._loader, self._epoch
            if loader is None:
                return None
            try:
                loaded = loader(revision)
            except Exception:  # a broken generation on disk must not break the request path
                log.exception("revision=%s could not be loaded", revision)
                return None
            if loaded is None:
                return None
            loaded.warm()
            with self._lock:
                if revision in self._retained:
                    return self._retained[revision]
                if epoch == self._epoch:
                    self._loaded[revision] = loaded
                    while len(self._loaded) > self._max_loaded:
                        self._loaded.popitem(last=False)
            return loaded

    def _cached(self, revision: str) -> Generation | None:
        with self._lock:
            found = self._retained.get(revision)
            if found is None:
                found = self._loaded.get(revision)
                if found is not None:
                    self._loaded.move_to_end(revision)
            return found

    def swap(self, generation: Generation, changed: Sequence[tuple[Node, Node]] | None = None) -> Generation | None:
        """Make `generation` current (its views built first, from the current one's, `Generation.warm`;
        `changed`: its nodes that differ from the current one's); return the previous one (still retained)."""
        generation.warm(self.current(), changed)
        with self._lock:
            previous = self._current
            self._current = generation
            self._retained[generation.revision] = generation
            self._loaded.pop(generation.revision, None)
            return previous

    def share(self, older: Mapping[str, bytes], newer: Mapping[str, bytes], paths: Collection[str]) -> int:
        """Every retained generation holding `older`'s stored entries (the very dict), or held
        over it, holds them over `newer`'s instead (`RenderedFiles.rebase`), `newer`'s being
        `older`'s but at `paths` (the worker patched them so: daemon.steps tells, once `newer` is
        written). Issue 25: each retained generation kept a dict of every path (30 MB at 100,000
        nodes, up to `keep_generations` of them); the served bytes stay the same. How many
        were changed."""
        if not isinstance(older, RenderedFiles) or not isinstance(newer, RenderedFiles) \
                or not isinstance(older.entries, dict) or not older.stamps_like(newer):
            return 0
        before = older.entries
        with self._lock:
            held = [g.files for g in self._retained.values()]
        return sum(1 for files in held if isinstance(files, RenderedFiles) and files is not newer
                   and files.rebase(before, newer, paths))

    def retain_only(self, revisions: Iterable[str]) -> None:
        """Forget every retained generation not named (the current one is always kept)."""
        keep = set(revisions)
        with self._lock:
            if self._current is not None:
                keep.add(self._current.revision)
            self._retained = {rev: gen for rev, gen in self._retained.items() if rev in keep}
            for rev in [rev for rev in self._loaded if rev not in keep]:
                del self._loaded[rev]
            self._epoch += 1

    def retained(self) -> tuple[str, ...]:
        """Revisions held in memory: activated ones, then those read back from disk."""
        with self._lock:
            return (*self._retained, *(rev for rev in self._loaded if rev not in self._retained))
