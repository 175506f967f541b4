"""Scheduling for background threads: bookkeeping runs after packets, not beside them.

The results store's writer turns boot events into SQLite rows. Without the GIL (inside
SQLite) it is a CPU-bound thread of its own, and on a small machine the scheduler gave it
time slices that the DHCP and TFTP threads then waited through (bench/dhcp.py: replies held
back for up to 29 ms, then sent as one burst that overflowed the client's receive buffer;
niced, pauses over 2 ms in a 3 s run at 8,500 DORA/s went from 136-151 to 94).
A background thread calls `yield_to_packet_threads()` once, on itself: a positive nice value
for that thread alone (Linux schedules threads as tasks), so a waking packet thread preempts
it. Events are still all written, a little later.
"""

from __future__ import annotations

import contextlib
import os
import threading

BACKGROUND_NICE = 10  # added to the process's nice value, for the calling thread only


def yield_to_packet_threads() -> None:
    """Lower the calling thread's scheduling priority (Linux; elsewhere a no-op)."""
    tid = threading.get_native_id()
    with contextlib.suppress(OSError, AttributeError):
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + BACKGROUND_NICE))
