"""Keeps CPython's cyclic garbage collector off the served state.

The daemon calls `settle()` after each generation it activates or loads. A generation of
10,000 nodes is hundreds of thousands of long-lived objects; a full collection walks all of
them in one C call that holds the GIL, and the DHCP, TFTP and HTTP threads stop for as long
(bench/dhcp.py: 25 ms pauses, replies sent as one burst that overflowed the client's buffer).
`settle()` freezes what is alive (gc.freeze): later passes skip it.

It does not collect in full each time: with every generation unfrozen that walk was the one
100-400 ms stall each commit showed in bench/reconcile_serving.py (78-156 ms for two 10,000-node
generations on an idle CPU, more when the CPU is shared). A replaced generation needs no
collector: it holds no reference cycles and goes when its last reference does
(tests/unit/test_heap.py). What the collector is for, cycles that became garbage after surviving
the young passes, is frozen with the rest; a full pass (unfreeze, collect, freeze) runs only when
the frozen heap has grown to `GROWTH` times its size after the previous one, so such garbage
never exceeds the live heap and the walk is paid once per doubling, not once per commit.

`freeze_young()`: the daemon pauses the collector for a whole reconcile (core.validate
`gc_paused`) and calls it once the reconcile is concluded: what a big one left young is frozen
rather than walked by the passes that would follow.
"""

from __future__ import annotations

import gc

GROWTH = 2.0
# Young objects (net, while the collector was paused) past which `freeze_young` freezes them
# rather than let them be walked (a first commit at 100,000 nodes: millions; a one-node commit: few).
FREEZE_YOUNG = 200_000


class FrozenHeap:
    """The policy over the process's one collector (the daemon holds one, `settle` below)."""

    def __init__(self, growth: float = GROWTH) -> None:
        self.growth = growth
        self.after_full = 0  # frozen objects right after the last full pass (0: none yet)

    def settle(self) -> bool:
        """Freeze what is alive now (the newly served state) after a young pass; collect in full
        first only when the frozen heap has grown `growth` times since the last full pass (or
        there was none). True when it collected in full."""
        gc.collect(1)  # the young generations only: what a reconcile left behind, cheap
        gc.freeze()
        if self.after_full and gc.get_freeze_count() < self.growth * self.after_full:
            return False
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.after_full = max(gc.get_freeze_count(), 1)
        return True


settle = FrozenHeap().settle


def freeze_young(threshold: int = FREEZE_YOUNG) -> bool:
    """Freeze the young objects as they are, without a walk, when there are over `threshold`
    (True when it did). The daemon calls it once a reconcile is concluded, before the collector it
    paused resumes: a first commit leaves millions of objects young, and the passes that followed
    (one of them, then `settle`'s of them again) held the GIL for 1.2 s at 100,000 nodes right
    after /status named the commit, /status's own answer waiting. `settle` collects the frozen
    heap in full as it does anyway: the first time, and once it has doubled."""
    if gc.get_count()[0] <= threshold:
        return False
    gc.freeze()
    return True
