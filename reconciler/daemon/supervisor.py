"""Server slots: start, retry with backoff, stop, and what each server's socket says.

Owned by `Daemon` (daemon.loop); `commands.run` adds the servers it built (`add`). A server that
fails to start is retried by the supervisor's thread with exponential backoff
(`RETRY_INITIAL`..`RETRY_MAX` seconds), and at once on every activated generation (`kick`: a
commit may have fixed `dhcp.interface`). Only HTTP's start is fatal (`add(..., fatal=True)`):
without it nothing can say what is wrong.

What a slot shows is the server's own `health()` (servers/health.py), read when asked, never a
remembered intent: `running` (bound as needed, thread alive), `down` (needed but not serving:
the message names the server, its address or interface and the OS error with what to change,
daemon/bind_errors.py), `not-needed` (DHCP in mode `off` or before any generation), `off`
(turned off on the command line), `stopped`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.daemon.bind_errors import explain
from reconciler.servers.health import Health

log = logging.getLogger(__name__)

RETRY_INITIAL = 1.0
RETRY_MAX = 60.0


@dataclass
class ServerSlot:
    """A supervised server; the fields are the supervisor's, guarded by its lock."""

    name: str
    server: Any = None
    started: bool = False
    stopped: bool = False
    start_error: OSError | None = None  # the last failed start, until one succeeds
    failures: int = 0
    retry_at: float = 0.0  # monotonic

    def health(self) -> Health:
        health: Health = self.server.health()
        if not self.started and health.error is None:
            health = replace(health, serving=False, error=self.start_error)
        return health

    def state(self) -> tuple[str, Health | None]:
        if self.server is None:
            return "off", None
        if self.stopped:
            return "stopped", None
        health = self.health()
        if not health.needed:
            return "not-needed", health
        return ("running" if health.serving else "down"), health

    def problem(self, health: Health) -> str:
        """Why a needed server does not serve, said with what to change."""
        if health.error is not None:
            return explain(self.name, health.address, health.interface, health.error)
        where = f"{self.name} on {health.address}" + (f" interface {health.interface}" if health.interface else "")
        return f"{where}: not serving" + ("" if self.started else " (not started)")

    def as_dict(self) -> dict[str, Any]:
        state, health = self.state()
        out: dict[str, Any] = {"state": state}
        if health is not None and health.address:
            out["address"] = health.address
        if health is not None and health.interface:
            out["interface"] = health.interface
        if state == "down" and health is not None:
            out["error"] = self.problem(health)
        active = getattr(self.server, "active_transfers", None) if state == "running" else None
        if isinstance(active, int):
            out["active_transfers"] = active
        return out


class Supervisor:
    def __init__(self) -> None:
        self.slots: dict[str, ServerSlot] = {}
        self._lock = threading.Lock()  # one start or stop at a time; slot fields
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, server: Any, *, fatal: bool = False) -> ServerSlot:
        """Supervise `server` (None: turned off) under `name` and start it. A failed start is
        retried with backoff; with `fatal`, it raises the OSError instead."""
        slot = ServerSlot(name, server)
        with self._lock:  # registered and started at once: the retry loop must not start it first
            self.slots[name] = slot
            if server is not None:
                self._start(slot, raise_errors=fatal)
        return slot

    def _start(self, slot: ServerSlot, *, raise_errors: bool = False) -> bool:
        try:
            slot.server.start()
        except OSError as exc:
            slot.start_error, slot.failures = exc, slot.failures + 1
            if raise_errors:
                raise OSError(exc.errno, slot.problem(slot.health())) from exc
            delay = min(RETRY_INITIAL * 2.0 ** (slot.failures - 1), RETRY_MAX)
            slot.retry_at = time.monotonic() + delay
            log.error("%s (retrying in %.0fs)", slot.problem(slot.health()), delay)
            self._ensure_thread()
            return False
        slot.started, slot.start_error, slot.failures = True, None, 0  # the server logs where it listens
        return True

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(target=self._retry_loop, name="supervisor", daemon=True)
            self._thread.start()

    def _retry_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            waiting = []
            with self._lock:
                for slot in self.slots.values():
                    if slot.server is None or slot.started or slot.stopped:
                        continue
                    if slot.retry_at <= now:
                        self._start(slot)
                    if not slot.started:
                        waiting.append(slot.retry_at)
            if not waiting:
                with self._lock:
                    self._thread = None
                return
            self._wake.wait(max(0.05, min(waiting) - time.monotonic()))
            self._wake.clear()

    def kick(self) -> None:
        """Retry every server that failed to start, now (a new generation was activated)."""
        with self._lock:
            for slot in self.slots.values():
                if slot.server is not None and not slot.started and not slot.stopped:
                    slot.retry_at = 0.0
                    self._ensure_thread()
        self._wake.set()

    def stop_all(self, timeout: float) -> None:
        """Stop the started servers, last added first (in-flight transfers get `timeout`)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            for slot in reversed(list(self.slots.values())):
                if slot.started and not slot.stopped:
                    try:
                        slot.server.stop(timeout)
                    except Exception:
                        log.exception("stopping %s", slot.name)
                slot.stopped = True

    # -- what the sockets say ------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        return {name: slot.as_dict() for name, slot in self.slots.items()}

    def down(self) -> list[str]:
        """Why each needed server is not serving (empty: every needed server serves)."""
        out = []
        for slot in self.slots.values():
            state, health = slot.state()
            if state == "down" and health is not None:
                out.append(slot.problem(health))
        return out


class ServerUpCollector(Collector):
    """`netboot_server_up{server=...}` 1/0 for each server the served generation needs, read at scrape."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("netboot_server_up",
                                   "1 while a needed server is bound and answering, 0 while it is not",
                                   labels=["server"])
        for name, slot in self.supervisor.slots.items():
            state, _ = slot.state()
            if state in ("running", "down"):
                family.add_metric([name], 1.0 if state == "running" else 0.0)
        yield family
