"""One daemon per state directory: an exclusive flock(2) on `<state-dir>/lock`, held for life.

Taken by `Daemon.open` before anything in the state directory is touched, released by
`Daemon.shutdown` or by the kernel when the process dies (kill -9 leaves no stale lock). The
file holds the owner's PID, so a second daemon can say which process holds the directory
(`commands.run` exits 2 with that line). Two daemons on one state directory would write the same
generations, swap `current` under each other and both claim port 67.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class StateDirLocked(Exception):
    """Another process holds the state directory."""


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None
        self._writable = False

    def acquire(self) -> None:
        """Take the lock or raise StateDirLocked naming the holder's PID. On a read-only state
        directory the lock file is locked as it is (or, missing, the directory itself) and
        names no PID."""
        writable = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            writable = False
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirLocked(f"{self.path.parent} is in use by another netboot-reconcile (pid {holder}, "
                                 f"holding {self.path}): one daemon per --state-dir") from None
        except BaseException:
            os.close(fd)
            raise
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._writable = fd, writable

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock
