"""Scheduling for background threads: bookkeeping runs after packets, not beside them.

The results store's writer turns boot events into SQLite rows. Without the GIL (inside
SQLite) it is a CPU-bound thread of its own, and on a small machine the scheduler gave it
time slices that the DHCP and TFTP threads then waited through (bench/dhcp.py: replies held
back for up to 29 ms, then sent as one burst that overflowed the client's receive buffer;
niced, pauses over 2 ms in a 3 s run at 8,500 DORA/s went from 136-151 to 94).
A background thread calls `yield_to_packet_threads()` once, on itself: SCHED_IDLE for that
thread alone (Linux schedules threads as tasks), so a waking packet thread preempts it at once.
A positive nice value (+10, the fallback where SCHED_IDLE is missing) was not enough: the
scheduler let the niced writer finish its slice inside SQLite first, holding every DHCP reply
back about 5 ms (pinned to one CPU at 10,000 DORA/s); with SCHED_IDLE the pauses halved and the
pinned bench went from 9,500 to 11,000 DORA/s for reservations, 5,750 to 7,250 for the pool.
Events are still all written, a little later; under sustained saturation of every CPU the
results store's bounded queue is what gives (dropped events are counted).
"""

from __future__ import annotations

import contextlib
import os
import threading

BACKGROUND_NICE = 10  # without SCHED_IDLE: added to the calling thread's nice value


def yield_to_packet_threads() -> None:
    """Lower the calling thread's scheduling priority (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError, AttributeError):
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + BACKGROUND_NICE))
