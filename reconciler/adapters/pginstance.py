"""One live instance per `--instance` name on a PostgreSQL store.

Called by `adapters.store.ResultsStore` when it opens a PostgreSQL store for a named instance.
Instances tell their own writes from others' by that name (a lease NOTIFY stamped with it is
this instance's own, and skipped): two started with the same name would silently ignore each
other's, and /status would show one row for both. The name is claimed with a session-level
advisory lock (the name hashed) on a connection of its own, held as long as the instance lives;
PostgreSQL lets it go when that connection ends (the instance stopped or died; a host cut off
without a FIN, after the keepalives give up, about 25 s: `pglock.KEEPALIVE`). A second instance
with the name is refused at start (`InstanceNameTaken`: `run` exits 2), naming where the first
connects from. The claim is checked at start only: a connection lost later (an outage) is not
taken again.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from typing import Any

import psycopg

from reconciler.adapters.pglock import KEEPALIVE, USER_TIMEOUT_MS
from reconciler.adapters.sqldb import StoreUnreachable, describe, scrub

NAME_CLASS = 0x6E62696E  # the advisory lock's first key ("nbin"); the second is the name's
APPLICATION = "netboot-reconcile instance "  # + the name: how the holder is found in pg_stat_activity
SETTLE = 3.0  # seconds a claim is retried: the lock of a process that just exited is let go


class InstanceNameTaken(ValueError):
    """Another live instance on the store has this `--instance` name."""


class InstanceClaim:
    """The claim of one name (see the module docstring); `close()` lets it go."""

    def __init__(self, url: str, name: str, *, connect_timeout: float = 3.0, settle: float = SETTLE) -> None:
        key = (NAME_CLASS, zlib.crc32(name.encode()) - 2**31)  # two int4 keys
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, int(connect_timeout)),
                application_name=(APPLICATION + name)[:63], keepalives=1, keepalives_idle=KEEPALIVE["idle"],
                keepalives_interval=KEEPALIVE["interval"], keepalives_count=KEEPALIVE["count"],
                tcp_user_timeout=USER_TIMEOUT_MS)
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreUnreachable(f"{describe(url)}: {scrub(first, url)}") from None
        try:
            for setting, value in KEEPALIVE.items():  # the server's end (settable per session)
                self._conn.execute(f"SET tcp_keepalives_{setting} = {int(value)}")
            deadline = time.monotonic() + settle
            while not self._try(key):
                if time.monotonic() >= deadline:
                    raise InstanceNameTaken(
                        f"another instance named {name!r} is connected to the store {describe(url)}"
                        f"{self._holder(name)}: give each instance its own --instance (instances tell "
                        f"their own lease changes from others' by it)")
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise

    def _try(self, key: tuple[int, int]) -> bool:
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        return bool(row and row[0])

    def _holder(self, name: str) -> str:
        """` (from ADDRESS since TIME)` for the session holding the name, where the server shows it."""
        with contextlib.suppress(psycopg.Error):
            row = self._conn.execute(
                "SELECT coalesce(host(client_addr), 'a local socket'), to_char(backend_start AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD HH24:MI:SS') FROM pg_stat_activity WHERE application_name = %s AND pid <> "
                "pg_backend_pid() ORDER BY backend_start LIMIT 1", ((APPLICATION + name)[:63],)).fetchone()
            if row:
                return f" (from {row[0]}, since {row[1]} UTC)"
        return ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
