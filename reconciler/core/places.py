"""The places where one node tuple holds other objects than the one before it, found once per pair.

Called by crossref (`_moved`), the boot check's replay (core.bootpass), the render's patch
(core.render) and the daemon's worker (daemon.resident `_changed_nodes`): each keeps the last
commit's node sequence and compares it place by place with this commit's (issue 25: a one-node
commit must cost about one node). They are handed the same tuples (validation's node list and
its sorted one, which becomes `DesiredState.nodes`), so the pass over every place is made once
per pair instead of once per caller (5 passes at 10,000 nodes: ~2.5 ms of a ~10 ms commit).
Only tuples are remembered (they cannot change under the answer), and only the last few pairs
(the two lists of a validation), held strongly: the previous commit's tuple lives one commit more.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

_KEPT = 2  # pairs remembered: validation's build-order nodes, and its sorted ones


class _Memory:
    # (before, after, places) of the last pairs, newest first; replaced whole, never changed
    last: tuple[tuple[Any, Any, tuple[int, ...]], ...] = ()


_memory = _Memory()


def moved(before: Sequence[Any], after: Sequence[Any]) -> tuple[int, ...]:
    """The places i where `after[i] is not before[i]`, in order (the two of one length: the
    caller checks). Remembered for tuples, by identity."""
    last = _memory.last  # read once: another thread may replace it meanwhile
    for was, now, places in last:
        if was is before and now is after:
            return places
    found = tuple(itertools.compress(itertools.count(), map(operator.is_not, before, after)))
    note(before, after, found)
    return found


def note(before: Sequence[Any], after: Sequence[Any], places: tuple[int, ...]) -> None:
    """Remember that `after` holds other objects than `before` at `places` (in order) and the same
    ones elsewhere, as made by the caller (validation's sort, patched: core.validate): the next
    `moved` of the pair needs no pass. Tuples only."""
    if type(before) is tuple and type(after) is tuple:
        _memory.last = ((before, after, places), *_memory.last[:_KEPT - 1])
