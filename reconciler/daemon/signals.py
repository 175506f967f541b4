"""The daemon's signal handlers, and the thread stacks of a stop that takes too long.

Called by `Daemon.install_signal_handlers` (daemon.loop), from the main thread. A Python signal
handler runs in the main thread between two of its bytecodes, possibly inside `Event.wait` or
`Event.clear` on the loop's wake event, holding that event's (not re-entrant) lock: a handler
that set the event there waited for the lock forever, and the daemon never stopped (seen once
in CI after SIGTERM). So the handlers take no lock: they write the signal's number to a pipe,
and the thread `netboot-signals` reads it and calls `on_signal` (which may lock and log).

Once a stop is asked for, the same thread writes every thread's stack to stderr (the log) if
the process still runs `dump_after` seconds later, and again at each further interval: an
operator sees where a slow or stuck shutdown waits. SIGQUIT (`kill -QUIT`) writes them at once
and the daemon goes on: from C (faulthandler), so also when no Python code runs to relay a
signal (a stop that never logged "received", seen under load in tests).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

log = logging.getLogger(__name__)

DUMP_AFTER = 90.0  # seconds: past every bounded wait of a normal stop (the write 30 s, the worker's memo 30 s)


class SignalRelay:
    """The pipe the handlers write to and the thread that acts on what they wrote."""

    def __init__(self, on_signal: Callable[[int], None], stops: Iterable[int], dump_after: float = DUMP_AFTER) -> None:
        self._on_signal = on_signal
        self._stops = frozenset(stops)
        self._dump_after = dump_after
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write, False)
        self._stop_asked: float | None = None

    def install(self, signals: Iterable[int]) -> None:
        """Handle `signals` (from the main thread) and start the relay thread."""
        for number in signals:
            signal.signal(number, self._handle)
        with contextlib.suppress(AttributeError, ValueError, OSError):  # no stderr to write to: no dump
            faulthandler.register(signal.SIGQUIT, file=sys.stderr, all_threads=True, chain=False)
        threading.Thread(target=self._relay, name="netboot-signals", daemon=True).start()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        # No lock, no logging here (module docstring).
        with contextlib.suppress(OSError):  # a full pipe: the relay has signals enough to act on
            os.write(self._write, bytes([number]))

    def _relay(self) -> None:
        while True:
            data = os.read(self._read, 64) if self._stop_asked is None else self._read_or_dump()
            for number in data:
                if number in self._stops and self._stop_asked is None:
                    self._stop_asked = time.monotonic()
                try:
                    self._on_signal(number)
                except Exception:
                    log.exception("handling signal %d", number)

    def _read_or_dump(self) -> bytes:
        """The next signals; meanwhile, every `dump_after` seconds, the stacks of every thread."""
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        assert self._stop_asked is not None
        while not poller.poll(max(0.0, self._stop_asked + self._dump_after - time.monotonic()) * 1000):
            waited = time.monotonic() - self._stop_asked
            log.warning("still stopping %.0f s after the signal: the stack of every thread follows", waited)
            for handler in logging.getLogger().handlers:
                handler.flush()
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            self._stop_asked += self._dump_after
        return os.read(self._read, 64)
