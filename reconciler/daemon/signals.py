"""The daemon's signal handlers, and the thread stacks of a stop that takes too long.

Called by `Daemon.install_signal_handlers` (daemon.loop), from the main thread. No Python code
runs for a signal: CPython's own C handler writes its number to a pipe (`signal.set_wakeup_fd`)
from whichever thread the kernel interrupted, and the thread `netboot-signals` reads it and calls
`on_signal` (which may lock and log). Two hangs this avoids: a Python handler runs in the main
thread between two bytecodes, possibly inside `Event.wait` on the loop's wake event holding its
lock (a handler that set the event waited for the lock forever, seen once in CI after SIGTERM);
and a main thread that runs no bytecode for long (blocked in C) never runs a Python handler at all.

Once a stop is asked for, the same thread logs every thread's stack if the process still runs
`dump_after` seconds later, and again at each further interval: an operator sees where a slow or
stuck shutdown waits. SIGQUIT (`kill -QUIT`) logs them at once and the daemon goes on. The
stacks are taken holding the GIL (faulthandler from a C signal handler reads other threads'
frames while they run: it cut a dump short in CI and the daemon never answered again) and logged
as one record, so no other thread's log line lands inside them.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import select
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

log = logging.getLogger(__name__)

DUMP_AFTER = 90.0  # seconds: past every bounded wait of a normal stop (the write 30 s, the worker's memo 30 s)


class SignalRelay:
    """The pipe CPython writes signal numbers to, and the thread that acts on what it wrote."""

    def __init__(self, on_signal: Callable[[int], None], stops: Iterable[int], dump_after: float = DUMP_AFTER) -> None:
        self._on_signal = on_signal
        self._stops = frozenset(stops)
        self._dump_after = dump_after
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write, False)
        self._stop_asked: float | None = None

    def install(self, signals: Iterable[int]) -> None:
        """Relay `signals` and SIGQUIT (from the main thread) and start the relay thread. The
        process's one wakeup fd becomes this relay's pipe: nothing else here sets one."""
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)  # a full pipe: signals enough to act on
        for number in {*signals, signal.SIGQUIT}:
            signal.signal(number, _nothing)
        threading.Thread(target=self._relay, name="netboot-signals", daemon=True).start()

    def _relay(self) -> None:
        while True:
            data = os.read(self._read, 64) if self._stop_asked is None else self._read_or_dump()
            for number in data:
                if number == signal.SIGQUIT:
                    log.warning("SIGQUIT received: the stack of every thread follows; going on\n%s", thread_stacks())
                    continue
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
            log.warning("still stopping %.0f s after the signal: the stack of every thread follows\n%s",
                        waited, thread_stacks())
            self._stop_asked += self._dump_after
        return os.read(self._read, 64)


def thread_stacks() -> str:
    """Every thread's stack, most recent call first (faulthandler's text), taken holding the GIL."""
    with tempfile.TemporaryFile() as out:
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.seek(0)
        return out.read().decode("utf-8", "replace")


def _nothing(number: int, frame: FrameType | None) -> None:
    """The Python-level handler: the signal was already relayed by its C handler (module docstring)."""
