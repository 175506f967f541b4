"""Keeps CPython's cyclic garbage collector off the served state.

The daemon calls `settle()` after each generation it activates. A generation of 10,000
nodes is hundreds of thousands of long-lived objects; in the collector's oldest generation
every full pass walks all of them while holding the GIL, and the DHCP, TFTP and HTTP threads
stop for as long (measured with bench/dhcp.py: 25 ms pauses, replies queued up and sent as one
burst, which overflowed the client's receive buffer). `settle()` collects once, then freezes
what is alive (gc.freeze): later passes skip it. The next `settle()` unfreezes first, so the
generation a commit replaced, cycles and all, is collected then.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect everything once, then exempt the survivors (the new served state) from later passes."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
