"""Server slots: which servers the daemon runs, starting and stopping them, and what /status says.

Owned by `Daemon` (daemon.loop): `commands.run` adds the servers it built (`add`), the daemon
starts one a newly served generation needs (`need`), and stops them all at shutdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ServerSlot:
    """A supervised server and what /status says about it."""

    name: str
    server: Any = None
    state: str = "off"  # off | running | failed | stopped | not-needed
    address: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.address:
            out["address"] = self.address
        if self.error:
            out["error"] = self.error
        active = getattr(self.server, "active_transfers", None)
        if isinstance(active, int):
            out["active_transfers"] = active
        return out


class Supervisor:
    def __init__(self) -> None:
        self.slots: dict[str, ServerSlot] = {}

    def add(self, name: str, server: Any, *, needed: bool = True) -> ServerSlot:
        """Supervise `server` under `name`; start it now unless it is not needed yet (OSError: it
        could not start)."""
        slot = ServerSlot(name, server)
        self.slots[name] = slot
        if needed and server is not None:
            self.start(slot)
        elif server is None:
            slot.state = "off"
        else:
            slot.state = "not-needed"
        return slot

    def start(self, slot: ServerSlot) -> None:
        try:
            slot.server.start()
        except OSError as exc:
            slot.state, slot.error = "failed", str(exc)
            raise
        slot.state, slot.error = "running", ""
        address = getattr(slot.server, "address", None)
        if isinstance(address, tuple):
            slot.address = f"{address[0]}:{address[1]}"
        log.info("%s listening on %s", slot.name, slot.address or "?")

    def need(self, name: str, revision: str) -> None:
        """Start `name` when it was not needed so far (a commit turned DHCP on)."""
        slot = self.slots.get(name)
        if slot is not None and slot.state == "not-needed":
            try:
                self.start(slot)
            except OSError as exc:
                log.error("revision=%s %s server could not start: %s", revision, name, exc)

    def stop_all(self, timeout: float) -> None:
        """Stop the running servers, last added first (in-flight transfers get `timeout`)."""
        for slot in reversed(list(self.slots.values())):
            if slot.state == "running":
                try:
                    slot.server.stop(timeout)
                except Exception:
                    log.exception("stopping %s", slot.name)
                slot.state = "stopped"

    def view(self) -> dict[str, Any]:
        return {name: slot.as_dict() for name, slot in self.slots.items()}
