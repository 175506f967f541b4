"""Sockets and threads only: DHCP, TFTP and HTTP servers. Policy lives in core/ and protocol/.

The server modules (dhcp, tftp, http) do not import each other (an import-linter contract);
what they share is here, in `servers.recorder` and `servers.pktinfo`. Every server's `start()`
calls `prefer_short_gil_turns()`: packet threads that wake from poll() need the GIL back at once
(why, and what it cost and gained: docs/SERVERS.md).
"""

from __future__ import annotations

import sys

# Seconds a thread may keep the GIL while another waits for it (CPython's default: 0.005).
GIL_SWITCH_INTERVAL = 0.0005


def prefer_short_gil_turns() -> None:
    """Lower this process's GIL switch interval to GIL_SWITCH_INTERVAL (never raise it)."""
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
