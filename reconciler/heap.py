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
"""

from __future__ import annotations

import gc

GROWTH = 2.0


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
