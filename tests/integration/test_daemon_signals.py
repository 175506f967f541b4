"""SIGTERM stops the daemon whenever it lands, and a stop that takes long says where it waits.

The hang seen once in CI: the SIGTERM handler set the loop's wake event while the main thread,
which runs the handler, was inside that event's `wait()` or `clear()` holding its lock, and
waited for the lock forever. Here a process holds the lock exactly as `Event.clear()` does when
the signal arrives (the moment made deterministic); with the old handler it never stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.integration.daemon_support import ROOT, DaemonProcess, WorkTree

# The main thread of `Daemon.run()` between two bytecodes of `self._wake.clear()`: the event's
# lock held, and a Python call (where pending signal handlers run) made while holding it.
AT_THE_MOMENT_THAT_HUNG = """
import logging, os, signal, sys
from pathlib import Path
from reconciler.core.render import render_generation
from reconciler.daemon import Daemon
from reconciler.settings import Settings

logging.basicConfig(level=logging.INFO, stream=sys.stdout)
daemon = Daemon(Settings(repo=sys.argv[1], state_dir=Path(sys.argv[2]), watch=False), renderer=render_generation)
daemon.install_signal_handlers()
with daemon._wake._cond:
    os.kill(os.getpid(), signal.SIGTERM)
    len([])  # the handler runs here, in this thread, the lock held
stopped = daemon._wake.wait(60) and daemon.stopping
print("stopped" if stopped else "not stopped", flush=True)
"""

SLOW_STOP = """
import signal, sys, time
from reconciler.daemon.signals import SignalRelay

def shutdown_waiting_for_a_thread_that_never_ends(number):
    time.sleep(3600)

SignalRelay(lambda n: None, [signal.SIGTERM], dump_after=0.5).install([signal.SIGTERM])
print("ready", flush=True)
shutdown_waiting_for_a_thread_that_never_ends(0)
"""


# The main thread blocked in C with the signals masked: it never runs a Python signal handler, so
# only a relay that does not need one (CPython's C handler writing to the wakeup fd) stops it.
MAIN_THREAD_IN_C = """
import signal, sys, threading, time
from reconciler.daemon.signals import SignalRelay

stopped = threading.Event()
SignalRelay(lambda n: stopped.set(), [signal.SIGTERM]).install([signal.SIGTERM])
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGQUIT])
threading.Thread(target=lambda: print("stopped" if stopped.wait(60) else "not stopped", flush=True)).start()
print("ready", flush=True)
time.sleep(90)
"""


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigterm_while_the_loop_holds_its_wake_lock_stops_the_daemon(tmp_path: Path) -> None:
    proc = _python(AT_THE_MOMENT_THAT_HUNG, str(tmp_path / "repo"), str(tmp_path / "state"))
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the process never stopped after SIGTERM (deadlocked in the handler)\n{out}") from None
    assert proc.returncode == 0 and out.strip().endswith("stopped") and "not stopped" not in out, out
    assert "SIGTERM received: stopping" in out, out


def test_a_stop_that_takes_long_writes_every_threads_stack_to_the_log() -> None:
    proc = _python(SLOW_STOP)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, 15)
        lines = []
        for line in proc.stdout:  # until the first dump's main thread has been written
            lines.append(line)
            if "shutdown_waiting_for_a_thread_that_never_ends" in line:
                break
        text = "".join(lines)
        assert "still stopping" in text and "the stack of every thread follows" in text, text
        assert "shutdown_waiting_for_a_thread_that_never_ends" in text, text
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_stops_while_the_main_thread_runs_no_python_code() -> None:
    """A Python-level handler runs only in the main thread between two bytecodes; one that never
    runs one (blocked in C) still stops. Fails on the previous relay (the handler wrote the pipe)."""
    proc = _python(MAIN_THREAD_IN_C)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.stdout.readline().strip() == "stopped"
    finally:
        proc.kill()
        proc.wait()


def test_a_flood_of_sighups_then_sigterm_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    """SIGHUPs sent as fast as possible (a reload loop gone wild) while the loop polls every 50 ms.
    The old handlers set the wake event inside the handler: they piled up on its lock until the
    daemon died (RecursionError, exit -1; 3 of 3 runs)."""
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "0.05", "--no-worker"]).start()
    try:
        daemon.wait_served(tree.head())
        end = time.monotonic() + 5.0  # how long the flood lasts, not a bound on anything
        while time.monotonic() < end:
            daemon.signal(signal.SIGHUP)
            time.sleep(0.0002)
        daemon.alive()
        assert daemon.status() is not None, daemon.log()[-3000:]
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    assert "SIGTERM received: stopping" in daemon.log()


def test_sigquit_writes_every_threads_stack_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """`kill -QUIT` logs where every thread is, as one record (no other line inside it), and the
    daemon goes on. The tests' stop sends it before killing a daemon that did not stop. The first
    version dumped from faulthandler's C handler while the other threads ran: in CI the dump
    stopped halfway and the daemon never answered again."""
    tree = WorkTree(tmp_path / "repo")
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", ["--interval", "3600"]).start()
    try:
        daemon.wait_served(tree.head())
        daemon.signal(signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while " in _relay" not in daemon.log():  # the signal relay thread's stack, among all threads'
            assert time.monotonic() < deadline, daemon.log()[-3000:]
            time.sleep(0.05)
        dump = daemon.log().split("SIGQUIT received: the stack of every thread follows; going on\n", 1)[1]
        stacks = dump[:dump.index(" in _relay")]
        assert "(most recent call first)" in stacks and " in run\n" in stacks  # the loop's and servers' threads
        assert " INFO " not in stacks and " WARNING " not in stacks, stacks  # no log line inside the dump
        daemon.alive()
        assert daemon.served_revision() == tree.head()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
