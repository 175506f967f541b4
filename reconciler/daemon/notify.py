"""systemd's readiness protocol (Type=notify): `sd_notify(NOTIFY_SOCKET, "READY=1")`.

Called by `commands.run` once the servers listen, and at stop.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)


def sd_notify(notify_socket: str | None, message: str) -> bool:
    """Tell systemd (Type=notify) `message`, e.g. READY=1; False when not under systemd."""
    if not notify_socket:
        return False
    address = "\0" + notify_socket[1:] if notify_socket.startswith("@") else notify_socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify %s: %s", message, exc)
        return False
    return True
