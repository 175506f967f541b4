"""A git tree object read as bytes: which entries of a directory a commit changed, found without
parsing the directory whole (issue 25).

Called by adapters.gitsource (its tree cache, for each directory a commit changed). A directory
of 10,000 node files is one tree object of ~430 KB: libgit2's diff of the old and new one parsed
both whole and compared them (~0.9 ms), and looking an entry up parsed the new one (~0.2 ms; 100,000
files: 5.6 and 1.9 ms). Here the new object's bytes are compared with the old one's in C, in
chunks, from both ends; only the entries around the bytes that differ are read.

A tree object is its entries one after the other, each `<octal mode> <name>\\0<id>`; an id holds any
byte, so where an entry starts is known only by reading from one known to start an entry. `Raw`
keeps, beside the bytes, where some entries start (`marks`: the first, and at most `MARK_EVERY`
entries apart). `changed` reads both versions from the last mark before the first byte that
differs, until both are past the last one at the start of the same entry, and returns the names
whose entries differ (mode or id), and the new version's `Raw`.

What it reads is what libgit2 reads, or less: a mode of 1 to 6 octal digits up to 0o177777, a name
of at least one byte, an id of the repository's length. A tree it cannot read (or one naming an
entry twice) gives None, and the caller reads the directory whole, through libgit2.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from typing import NamedTuple

MARK_EVERY = 64  # entries between two marks, at most
_CHUNK = 256  # bytes compared first from each end; doubled after each equal chunk up to _MAX_CHUNK
_MAX_CHUNK = 64 << 10

Entry = tuple[int, bytes]  # the mode as written, the id's bytes


class Raw(NamedTuple):
    """A tree object's bytes, and where some of its entries start (0 first, ascending)."""

    data: bytes
    marks: list[int]


class _Unreadable(Exception):
    """Bytes that are not an entry this module reads."""


def indexed(data: bytes, id_length: int) -> Raw | None:
    """`data` (a tree object's bytes) with its marks; None when it is not a tree this reads.
    Each entry matched where the last ended, in C (100,000 entries: 16 ms, 79 ms one by one)."""
    scanner = _entry_pattern(id_length).scanner(data)  # type: ignore[attr-defined]  # (not in typeshed)
    ends = [match.end() for match in iter(scanner.match, None)]
    if (ends[-1] if ends else 0) != len(data):
        return None
    return Raw(data, [0, *ends[MARK_EVERY - 1:len(ends) - 1:MARK_EVERY]])


def changed(old: Raw, data: bytes, id_length: int) -> tuple[dict[str, Entry | None], Raw] | None:
    """The names whose entries differ between tree object `old` and `data` (a newer version of
    the same directory), each with its new entry (None: gone), and `data`'s `Raw`; None when
    either cannot be read here. Names are decoded as pygit2 decodes them (`os.fsdecode`)."""
    before = old.data
    first = _common_prefix(before, data)
    if first == len(before) == len(data):
        return {}, Raw(data, old.marks)
    common_end = _common_suffix(before, data, min(len(before), len(data)) - first)
    shift = len(data) - len(before)
    new_end = len(data) - common_end  # from here on `data` is `before`'s bytes, moved by `shift`
    start = old.marks[bisect.bisect_right(old.marks, first) - 1]  # at or before the first difference: both's
    was: dict[bytes, Entry] = {}
    now: dict[bytes, Entry] = {}
    marks = old.marks[:bisect.bisect_right(old.marks, start)]
    if len(marks) > 1 and marks[-1] >= len(data):  # entries only removed, at the end: none starts there
        marks.pop()
    o = n = start
    count = 0
    try:
        # Read whichever side is behind until both stand at the start of the same entry past the
        # last difference: from there on the two are the same entries.
        while n < new_end or o + shift != n:
            if o + shift < n:
                o, name, mode, oid = _entry(before, o, id_length)
                if name in was:
                    raise _Unreadable
                was[name] = (mode, oid)
                continue
            if count and count % MARK_EVERY == 0:
                marks.append(n)
            n, name, mode, oid = _entry(data, n, id_length)
            count += 1
            if name in now:
                raise _Unreadable
            now[name] = (mode, oid)
        # On to the next old mark (the same entries on both sides), so that marks stay at most
        # MARK_EVERY entries apart.
        following = bisect.bisect_left(old.marks, o)
        target = old.marks[following] if following < len(old.marks) else len(before)
        while o < target:
            if count and count % MARK_EVERY == 0:
                marks.append(n)
            n = _entry(data, n, id_length)[0]
            o = n - shift
            count += 1
    except _Unreadable:
        return None
    tail = old.marks[following:]
    if tail and tail[-1] >= len(before):  # an empty tree's mark: no entry starts there
        tail.pop()
    if tail and tail[0] + shift == marks[-1]:  # entries only removed, at `start`: marked already
        del tail[0]
    marks += tail if not shift else [m + shift for m in tail]
    names = {name: now.get(name) for name in was.keys() | now.keys() if was.get(name) != now.get(name)}
    return {os.fsdecode(name): entry for name, entry in names.items()}, Raw(data, marks)


def _entry(data: bytes, at: int, id_length: int) -> tuple[int, bytes, int, bytes]:
    """The entry at `at`: where the next one starts, its name, mode and id."""
    match = _entry_pattern(id_length).match(data, at)
    if match is None:
        raise _Unreadable
    end = match.end()
    return end, match[2], int(match[1], 8), data[end - id_length:end]


@functools.cache
def _entry_pattern(id_length: int) -> re.Pattern[bytes]:
    # A mode up to 0o177777 (libgit2 refuses a larger one), a name of at least one byte, the id.
    return re.compile(rb"([0-7]{1,5}|[01][0-7]{5}) ([^\0]+)\0.{%d}" % id_length, re.DOTALL)


def _common_prefix(a: bytes, b: bytes) -> int:
    """How many bytes `a` and `b` start with alike (compared in C, a chunk at a time)."""
    limit = min(len(a), len(b))
    lo, step = 0, _CHUNK
    while lo < limit:
        hi = min(lo + step, limit)
        if a[lo:hi] != b[lo:hi]:
            break
        lo, step = hi, min(step * 2, _MAX_CHUNK)
    else:
        return limit
    while hi - lo > 1:  # the first difference is in [lo, hi)
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """How many bytes (up to `limit`) `a` and `b` end with alike."""
    la, lb = len(a), len(b)
    lo, step = 0, _CHUNK
    while lo < limit:
        hi = min(lo + step, limit)
        if a[la - hi:la - lo] != b[lb - hi:lb - lo]:
            break
        lo, step = hi, min(step * 2, _MAX_CHUNK)
    else:
        return limit
    while hi - lo > 1:  # the last difference is `lo` to `hi - 1` bytes from the end
        mid = (lo + hi) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid
    return lo
