"""Run a command under a process that reaps orphans: `python subreaper.py [SRC:DST...] -- CMD...`.

Used by tests/e2e/libvirt_lab.py to run libvirtd. This machine's init does not reap orphans, and
libvirtd hangs on `virsh define` when the QEMU probe processes it double-forks stay zombies; with
PR_SET_CHILD_SUBREAPER they are re-parented to this process, which waits for every child.

Each SRC:DST is bind-mounted first (run it under `unshare --mount --propagation private`, so the
mounts are this process tree's only). On SIGTERM the command gets SIGTERM; once it exited, what
is still re-parented here (QEMU processes libvirtd started) is killed and reaped; then it exits
with the command's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(entry))
            except (OSError, IndexError):
                pass
    return found


def main(argv: list[str]) -> int:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"subreaper: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 2
    sep = argv.index("--")
    for pair in argv[:sep]:
        src, dst = pair.split(":", 1)
        subprocess.run(["mount", "--bind", src, dst], check=True)
    child = subprocess.Popen(argv[sep + 1:])
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    status = 0
    while True:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            return status
        if pid == child.pid:
            status = os.waitstatus_to_exitcode(raw)
            child.returncode = status
            for orphan in _children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(orphan, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
