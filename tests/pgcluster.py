"""A throwaway PostgreSQL cluster for tests and benches: Debian's postgresql 15 binaries, initdb
in a temporary directory (as the unprivileged `postgres` user when run as root: initdb refuses
root), listening on a unix socket in that directory only (reachable from network namespaces,
which share the file system), stopped and removed by `close()`.

Used by tests/integration/conftest.py (`pg_cluster`, `store_location`), the outage and
two-instance tests, and bench/scale_out.py (which calls `exit_on_signals()` first: Python's
default SIGTERM ends a process without running the `finally` that closes its cluster).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 5432  # names the socket file only: nothing listens on TCP


def exit_on_signals() -> None:
    """SIGTERM and SIGINT raise SystemExit(128 + signal) in the main thread, once (later ones are
    ignored while it cleans up), so a program killed by `kill` or a CI timeout runs its `finally`
    blocks and leaves no postgres running. For programs (benches), not pytest (it has its own)."""
    def stop(signum: int, _frame: object) -> None:
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, stop)


class PgUnavailable(RuntimeError):
    """PostgreSQL's binaries are missing (the message names the Debian package)."""


class PgCluster:
    """initdb + pg_ctl in a temporary directory; `url(db)` for psycopg and the daemon."""

    def __init__(self, *, fsync: bool = False, prefix: str = "nbr-pg-") -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / tool).exists():
                raise PgUnavailable(f"{PG_BIN / tool} not found: apt-get install postgresql-15 "
                                    "(scripts/test.sh installs it)")
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                   "-E", "UTF8", "--locale=C"])
        settings = [f"unix_socket_directories = '{self.root}'", "listen_addresses = ''", f"port = {PORT}",
                    "max_connections = 200", "shared_buffers = 64MB"]
        if not fsync:  # tests: a crash of the machine loses nothing they need
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        (self.data / "postgresql.auto.conf").write_text("\n".join(settings) + "\n")
        self.running = False
        self.start()

    def _run(self, argv: list[str]) -> None:
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip()
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {said}")

    def start(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.root}&port={PORT}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
