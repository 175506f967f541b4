"""Sockets and threads only: DHCP, TFTP and HTTP servers. Policy lives in core/ and protocol/.

Every server's `start()` calls `prefer_short_gil_turns()`: the daemon is one process whose
packet threads (DHCP, TFTP, waitress's I/O thread) mostly wait in poll() and need the GIL back
at once when a datagram lands, while other threads (the lease writer, the results writer,
waitress workers rendering a script) run Python in between. With CPython's default 5 ms switch
interval a waking packet thread can wait 5 ms for the GIL: at 20,000 DHCP packets/s that is
100 datagrams queued, answered as one burst that overflows the receive buffer of a client or
relay (measured with bench/dhcp.py: pool DORA/s at <= 0.1% loss 5,500 -> 7,000-8,000).
The cost is more GIL hand-offs: waitress alone served /ipxe at 64 connections ~5% slower
(bench/http.py, 4,375 -> 4,131 req/s, within its noise), its downloads unchanged.
"""

from __future__ import annotations

import sys

# Seconds a thread may keep the GIL while another waits for it (CPython's default: 0.005).
GIL_SWITCH_INTERVAL = 0.0005


def prefer_short_gil_turns() -> None:
    """Lower this process's GIL switch interval to GIL_SWITCH_INTERVAL (never raise it)."""
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
