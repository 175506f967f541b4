"""adapters.rawtree finds exactly the entries that differ between two versions of a tree object,
over any sequence of edits (ids and names holding any byte: NUL, space, digits), and keeps its
marks at the start of entries, at most MARK_EVERY apart; what it cannot read, it says so."""

from __future__ import annotations

import itertools
import os
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters import rawtree

_ID = 20
# Names that sort and share prefixes; bytes that look like a mode, a space, a NUL.
_names = st.sampled_from([b"a", b"a.b", b"ab", b"b", b"0", b"1 2", b"n\xe9", b"z" * 30, b"nodes", b"x"])
_modes = st.sampled_from([0o100644, 0o100755, 0o040000, 0o120000, 0o160000, 0o100664])
_ids = st.sampled_from([b"\0" * _ID, b" " * _ID, b"100644 a\0" + b"\0" * 11, bytes(range(20)), b"\xff" * _ID])
_edit = st.tuples(_names, st.one_of(st.none(), st.tuples(_modes, _ids)))


def _tree(entries: dict[bytes, tuple[int, bytes]]) -> bytes:
    return b"".join(b"%o %s\0%s" % (mode, name, oid) for name, (mode, oid) in sorted(entries.items()))


def _starts(data: bytes) -> set[int]:
    starts, at = set(), 0
    while at < len(data):
        starts.add(at)
        at = data.index(b"\0", data.index(b" ", at)) + 1 + _ID
    return starts


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, st.tuples(_modes, _ids), max_size=10),
       st.lists(st.lists(_edit, max_size=4), min_size=1, max_size=8), st.integers(1, 3))
def test_the_entries_that_differ_and_only_those(first: dict[bytes, tuple[int, bytes]],
                                                 commits: list[list[tuple[bytes, tuple[int, bytes] | None]]],
                                                 every: int) -> None:
    with mock.patch.object(rawtree, "MARK_EVERY", every):
        entries = dict(first)
        raw = rawtree.indexed(_tree(entries), _ID)
        assert raw is not None
        for edits in commits:
            before = dict(entries)
            for name, entry in edits:
                if entry is None:
                    entries.pop(name, None)
                else:
                    entries[name] = entry
            data = _tree(entries)
            found = rawtree.changed(raw, data, _ID)
            assert found is not None
            names, raw = found
            assert names == {os.fsdecode(n): entries.get(n) for n in before.keys() | entries.keys()
                             if before.get(n) != entries.get(n)}
            assert raw.data == data and raw.marks[0] == 0 and raw.marks == sorted(set(raw.marks))
            starts = sorted(_starts(data))
            assert set(raw.marks) <= set(starts) | {0}
            if not starts:
                assert raw.marks == [0]
                continue
            at = [starts.index(m) for m in raw.marks] + [len(starts)]
            assert all(b - a <= every for a, b in itertools.pairwise(at))  # at most `every` entries apart


def test_what_it_cannot_read_it_says() -> None:
    good = _tree({b"a": (0o100644, b"\1" * _ID)})
    raw = rawtree.indexed(good, _ID)
    assert raw is not None
    for bad in (b"0100644 a\0" + b"\1" * _ID,  # a mode of 7 digits (libgit2 reads it: the caller does)
                b"+100644 a\0" + b"\1" * _ID, b"200000 a\0" + b"\1" * _ID, b"100644 \0" + b"\1" * _ID,
                b"100644 a\0" + b"\1" * (_ID - 1), good + good):  # cut short; a name twice
        assert rawtree.changed(raw, bad, _ID) is None
        assert bad == good + good or rawtree.indexed(bad, _ID) is None
    assert rawtree.changed(raw, good, _ID) == ({}, raw)
