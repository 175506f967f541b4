"""A generation's files as a `Mapping[str, bytes]` whose revision-carrying entries are stamped on access.

Built by `render_generation`; read by everything that reads `Generation.files` (the HTTP and
TFTP servers, the dashboard, `diff`, the artifacts writer, the loader) exactly as the dict it
replaces: same keys in the same (sorted) order, same bytes. Why (issue 25): a node's iPXE
script, GRUB config and NoCloud seed carry the revision (pinned URLs, comments, the report
token), so a one-node commit at 10,000 nodes made ~20,000 new byte strings. A node the render
memo (`render.reuse`) keeps is held here as rendered at the memo's stand-in revision
(`Stamped`), the same object in every generation until the node changes; `files[path]` replaces
the stand-in by this generation's revision and the stand-in's token by the node's token at it
(a `bytes.replace` of a few hundred bytes and one HMAC, cached per node).

`changed_since(previous)` names the entries that differ as stored (a changed node's files, the
site-wide configs when a node's DHCP fields changed), not the ones whose served bytes differ
only by the revision; `patched(...)` builds the next generation from the previous and those
entries (the daemon's worker sends only them: `daemon.resident`).
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, cast

from reconciler.core import template

# An entry rendered at the stand-in revision, stamped with the generation's revision on access:
# (the bytes, the node whose report token they may hold ("" for a site-wide file), that token at
# the stand-in as written in them (b"": none)). A plain tuple, not a NamedTuple: the render memo
# file holds tens of thousands, and unpickling a NamedTuple calls Python code for each (10,000
# nodes: 1.0 s against 0.23 s to load the memo).
Stamped = tuple[bytes, str, bytes]
# In the daemon's worker, the bytes of either kind may be a `Spilled` (typed as the bytes it stands for).
Entry = bytes | Stamped


def stamped(raw: bytes, node: str, token: bytes) -> Stamped:
    return (raw, node, token)


class Source(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...


class Spilled:
    """The bytes of an entry kept in a file instead of in memory (the daemon's worker once they
    are rendered: `daemon.spill`), read back when they are needed: stamped for serving, compared
    with other bytes, pickled (as the bytes themselves: the daemon never sees one). It takes the
    place of the bytes in the entry, whatever its kind: a plain entry is the Spilled itself, a
    `Stamped` one holds it first (`spilled_in`). So an entry pickled is the entry as it was before
    it was spilled (what `unspilled` gives): a forked render child's nodes come back as the worker
    holds them, plain or stamped. Small: where it is, packed in one int."""

    __slots__ = ("parses", "source", "where")

    def __init__(self, source: Source, offset: int, size: int) -> None:
        self.source, self.where = source, offset << SIZE_BITS | size
        self.parses: bool | None = None  # a user-data's `secrets.still_yaml`, once known (core.render)

    @property
    def offset(self) -> int:
        return self.where >> SIZE_BITS

    @property
    def size(self) -> int:
        return self.where & SIZE_MASK

    def load(self) -> bytes:
        return self.source.read(self.where >> SIZE_BITS, self.where & SIZE_MASK)

    def __len__(self) -> int:
        return self.where & SIZE_MASK

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, Spilled):
            if other.source is self.source and other.where == self.where:
                return True
            other = other.load()
        if not isinstance(other, bytes):
            return NotImplemented
        return len(other) == len(self) and self.load() == other

    def __hash__(self) -> int:
        return hash(self.load())

    def __reduce__(self) -> tuple[type[bytes], tuple[bytes]]:
        return bytes, (self.load(),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} bytes at {self.offset})"


SIZE_BITS = 32
SIZE_MASK = (1 << SIZE_BITS) - 1
SPILLED_MAX = SIZE_MASK  # the largest entry a `Spilled` holds


def spilled_in(entry: Entry) -> Spilled | None:
    """The `Spilled` holding `entry`'s bytes (a plain entry itself, a stamped one's first item), or
    None (read by the render's user-data checks, `daemon.spill` and the worker's memo file)."""
    raw: object = entry[0] if type(entry) is tuple else entry
    return raw if isinstance(raw, Spilled) else None


def unspilled(entries: Mapping[str, Entry] | Iterable[tuple[str, Entry]], gap: int = 0) -> dict[str, Entry]:
    """`entries` as a dict with their spilled bytes read back: each entry as it was before it was
    spilled (`Spilled`). The entries of one source no more than `gap` bytes apart are read in one
    piece: a chunk of paths in order is mostly a run of one file, its nodes' files in the order
    they were put. Used by the worker to send its entries (`daemon.spill.Spill.resolved`) and to
    write its memo file (`daemon.worker`, a node's entries at a time)."""
    out = dict(entries)
    by_source: dict[Source, list[tuple[int, str, Entry]]] = {}
    for path, entry in out.items():
        raw: object = entry[0] if type(entry) is tuple else entry  # `spilled_in`, inlined: every entry of a send
        if isinstance(raw, Spilled):
            by_source.setdefault(raw.source, []).append((raw.where, path, entry))
    for source, found in by_source.items():
        if len(found) > 1:  # (one: a node's own entries, one in each file)
            found.sort(key=_WHERE)
        read = source.read
        count, i = len(found), 0
        while i < count:
            where = found[i][0]
            start = where >> SIZE_BITS
            end = start + (where & SIZE_MASK)
            j = i + 1
            while j < count and (where := found[j][0]) >> SIZE_BITS <= end + gap:
                end = (where >> SIZE_BITS) + (where & SIZE_MASK)
                j += 1
            data = read(start, end - start)
            while i < j:
                where, path, entry = found[i]
                at = (where >> SIZE_BITS) - start
                got = data[at:at + (where & SIZE_MASK)]
                out[path] = (got, entry[1], entry[2]) if type(entry) is tuple else got  # the Spilled's place
                i += 1
    return out


_WHERE = operator.itemgetter(0)


def stored(entry: Entry) -> bytes:
    """The bytes an entry is stored as (at the stand-in revision for a `Stamped` one)."""
    raw: object = entry[0] if type(entry) is tuple else entry
    return raw if isinstance(raw, bytes) else cast(Spilled, raw).load()


class Since(NamedTuple):
    """What a generation was patched from (`RenderedFiles.since`): that generation's entries (the
    very dict) and the paths where the two may differ (new, changed or gone); elsewhere they hold
    the same entries."""

    entries: Mapping[str, Entry]
    paths: Collection[str]


class Copy(NamedTuple):
    """A copy of one generation's entries made ahead for `RenderedFiles.patched` to fill (the
    daemon's worker makes it while its child validates: daemon.resident). Used at most once."""

    of: Mapping[str, Entry]  # the entries copied (the very dict)
    entries: dict[str, Entry]


class Changes(NamedTuple):
    """What a generation changed against an earlier one, as stored entries (`RenderedFiles.changed_since`)."""

    changed: tuple[str, ...]  # paths whose entry is new or differs
    removed: tuple[str, ...]  # paths the earlier one had and this one has not


def entry_size(entry: Entry) -> int:
    """The length of the bytes served for `entry` (the stand-in and tokens have the served ones' lengths)."""
    return len(entry[0]) if type(entry) is tuple else len(entry)


_MISSING = object()


class Older(Mapping[str, Entry]):
    """A superseded generation's stored entries held as a newer generation's dict (`base`) and,
    where the two differ, this one's (`own`; None: a path this one has not). Made by
    `RenderedFiles.rebase` (the daemon's retained generations, `GenerationHolder.share`): each
    generation kept its own dict of every path (30 MB at 100,000 nodes), now the one served
    holds it and the earlier ones their few differences. Read as the dict it replaces: the
    same entries, paths in the same (sorted) order."""

    __slots__ = ("_len", "base", "own")

    def __init__(self, base: dict[str, Entry], own: dict[str, Entry | None]) -> None:
        self.base, self.own = base, own
        count = len(base)
        for path, entry in own.items():
            if entry is None and path in base:
                count -= 1
            elif entry is not None and path not in base:
                count += 1
        self._len = count

    def __getitem__(self, path: str) -> Entry:
        entry = self.own.get(path, _MISSING)
        if entry is _MISSING:
            return self.base[path]
        if entry is None:
            raise KeyError(path)
        return entry  # type: ignore[return-value]

    def get(self, path: str, default: Any = None) -> Any:
        entry = self.own.get(path, _MISSING)
        if entry is _MISSING:
            return self.base.get(path, default)
        return default if entry is None else entry

    def __contains__(self, path: object) -> bool:
        entry = self.own.get(path, _MISSING) if isinstance(path, str) else _MISSING
        return path in self.base if entry is _MISSING else entry is not None

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        own, base = self.own, self.base
        extra = sorted(p for p, e in own.items() if e is not None and p not in base)
        kept = (p for p in base if own.get(p, _MISSING) is not None)
        return heapq.merge(kept, extra)


class RenderedFiles(Mapping[str, bytes]):
    """Path -> served bytes of one generation; `entries` holds them as stored (module docstring).
    Immutable once built: generations share entries, never the dict."""

    def __init__(self, entries: dict[str, Entry] | Older, revision: str = "", sentinel: str = "",
                 secret: bytes | None = None, since: Since | None = None) -> None:
        # A dict, or once superseded in the daemon the newer one's and the differences (`rebase`).
        self.entries: dict[str, Entry] | Older = entries
        self.revision = revision
        self.sentinel = sentinel  # "" when nothing is stamped
        self.secret = secret or None
        # The generation it was patched from (its entries) and the only paths where the two may
        # differ: `changed_since` that one looks at those alone. Not pickled; the holder drops it
        # (`forget_since`) once done, or it would keep the earlier generation's dict alive.
        self.since = since
        self._tokens: dict[str, bytes] = {}

    @classmethod
    def plain(cls, files: Mapping[str, bytes]) -> RenderedFiles:
        """Files with nothing to stamp (a render without a memo, files read back from disk)."""
        return cls(dict(files))

    def __getitem__(self, path: str) -> bytes:
        entry = self.entries[path]
        if isinstance(entry, bytes):
            return entry
        return self._stamp(entry)

    def get(self, path: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        entry = self.entries.get(path)
        if entry is None:
            return default
        if isinstance(entry, bytes):
            return entry
        return self._stamp(entry)

    def __contains__(self, path: object) -> bool:
        return path in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        stamped = sum(1 for e in self.entries.values() if type(e) is tuple)
        return f"RenderedFiles({len(self.entries)} files, {stamped} stamped, revision={self.revision!r})"

    def __getstate__(self) -> dict[str, object]:
        return {"entries": self.entries, "revision": self.revision, "sentinel": self.sentinel, "secret": self.secret}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.since = None
        self._tokens = {}

    def forget_since(self) -> None:
        """Let go of the generation this one was patched from (`since`)."""
        self.since = None

    def _stamp(self, entry: Stamped) -> bytes:
        if type(entry) is not tuple:  # a plain entry spilled: as it is (a generation without a stand-in too)
            return cast(Spilled, entry).load()
        raw, node, token = entry
        if type(raw) is not bytes:
            raw = cast(Spilled, raw).load()
        data = raw.replace(self.sentinel.encode(), self.revision.encode())
        if token:
            data = data.replace(token, self._token(node))
        return data

    def _token(self, node: str) -> bytes:
        found = self._tokens.get(node)
        if found is None:  # two threads may both compute it: the same value
            found = self._tokens[node] = template.report_token(self.secret, node, self.revision).encode()
        return found

    def raw(self, path: str) -> Entry:
        """The entry as stored (KeyError when absent): what `patched` takes."""
        return self.entries[path]

    def stamps_like(self, other: RenderedFiles) -> bool:
        """Whether equal stored entries of the two serve the same bytes up to the revision."""
        return self.sentinel == other.sentinel and self.secret == other.secret

    def changed_since(self, previous: Mapping[str, bytes] | None) -> Changes:
        """The paths whose stored entry differs from `previous`'s (new ones included) and the
        paths `previous` had that this has not. Against a RenderedFiles stamped alike an
        unchanged node costs an identity check; against anything else, served bytes are compared."""
        if previous is None:
            return Changes(tuple(self.entries), ())
        entries = self.entries
        if isinstance(previous, RenderedFiles) and self.since is not None and self.since.entries is previous.entries \
                and self.stamps_like(previous):
            return self._changed_at(previous.entries, self.since.paths)
        if isinstance(previous, RenderedFiles) and self.stamps_like(previous):
            get = previous.entries.get
            # Identity first (a kept node's entries are the same objects): one cheap pass.
            changed = tuple(p for p in [p for p, e in entries.items() if get(p) is not e] if get(p) != entries[p])
        else:
            changed = tuple(p for p in entries if self[p] != previous.get(p))
        added = sum(1 for p in changed if p not in previous)
        if len(previous) == len(entries) - added:
            return Changes(changed, ())  # every path of `previous` is still here
        return Changes(changed, tuple(sorted(previous.keys() - entries.keys())))

    def _changed_at(self, before: Mapping[str, Entry], paths: Iterable[str]) -> Changes:
        """`changed_since` of the generation whose entries are `before` when only `paths` may differ."""
        entries, missing = self.entries, object()
        changed: list[str] = []
        removed: list[str] = []
        for path in sorted(set(paths)):
            entry, was = entries.get(path, missing), before.get(path, missing)
            if entry is missing:
                if was is not missing:
                    removed.append(path)
            elif was is not entry and was != entry:
                changed.append(path)
        return Changes(tuple(changed), tuple(removed))  # in path order, as `entries` (sorted) has them

    def rebase(self, before: dict[str, Entry], after: RenderedFiles, paths: Collection[str]) -> bool:
        """Hold this generation's entries as `after`'s dict and the differences (`Older`), when they
        are `before` (the very dict), or held so over it, and `after`'s are `before` with only
        `paths` changed, put in or taken out (the daemon's worker patched them: `patched`).
        False, nothing changed: they are neither, or too many paths differ to save much."""
        base, mine = after.entries, self.entries
        if not isinstance(base, dict) or base is before:
            return False
        if mine is before:
            own: dict[str, Entry | None] = {p: before.get(p) for p in paths}
        elif isinstance(mine, Older) and mine.base is before:
            own = dict(mine.own)
            for path in paths:
                if path not in own:
                    own[path] = before.get(path)
        else:
            return False
        if len(own) > max(256, len(base) // 8):
            return False
        self.entries = Older(base, own)
        return True

    def copy_entries(self) -> Copy:
        """A copy of the entries, for a `patched` of this generation to come (`Copy`)."""
        return Copy(self.entries, dict(self.entries))

    def patched(self, revision: str, changed: Mapping[str, Entry], removed: Iterable[str] = (),
                copy: Copy | None = None) -> RenderedFiles:
        """The generation at `revision` made of this one's entries, `changed` put in and
        `removed` taken out (kept in sorted path order). `changed` holds stored entries of a
        RenderedFiles stamped like this one (`changed_since`, then `raw`). `copy`: this one's
        entries copied ahead (`copy_entries`), filled here instead of a copy made now."""
        entries = copy.entries if copy is not None and copy.of is self.entries else dict(self.entries)
        added = False
        for path, entry in changed.items():
            added = added or path not in entries
            entries[path] = entry
        for path in removed:
            entries.pop(path, None)
        if added:
            entries = {p: entries[p] for p in sorted(entries)}
        return RenderedFiles(entries, revision, self.sentinel, self.secret)

    def delta_from(self, previous: RenderedFiles | None) -> Delta:
        """What another process holding `previous` needs to build this one (`Delta.apply`):
        the changed entries only, or all of them when `previous` is None or stamped otherwise."""
        if previous is None or not self.stamps_like(previous):
            # the entries themselves, not a copy (immutable once built; `apply` copies)
            entries = self.entries if isinstance(self.entries, dict) else dict(self.entries)
            return Delta(self.revision, self.sentinel, self.secret, entries, (), full=True)
        changes = self.changed_since(previous)
        return Delta(self.revision, self.sentinel, self.secret, {p: self.entries[p] for p in changes.changed},
                     changes.removed, full=False)


class Delta(NamedTuple):
    """One generation's files as a difference from an earlier one (`RenderedFiles.delta_from`); picklable."""

    revision: str
    sentinel: str
    secret: bytes | None
    entries: dict[str, Entry]
    removed: tuple[str, ...]
    full: bool  # entries are all of them: no earlier generation needed

    def apply(self, previous: RenderedFiles | None, copy: Copy | None = None) -> RenderedFiles:
        """The generation: `previous` (the one `delta_from` was given) patched, or `entries` when
        full. `copy`: `previous`'s entries copied ahead (`RenderedFiles.copy_entries`)."""
        if self.full:
            return RenderedFiles(dict(self.entries), self.revision, self.sentinel, self.secret)
        if previous is None or previous.sentinel != self.sentinel or previous.secret != self.secret:
            raise ValueError("a partial delta applied to another generation than the one it was made from")
        return previous.patched(self.revision, self.entries, self.removed, copy)
