"""Which instance of a site drives its rollouts, when several share a PostgreSQL store.

Built by `daemon.loop` with `--store postgresql://...` and given to the rollout runner
(`daemon.rollouts`), which calls `refresh()` from its own thread every poll and `held()` before
acting. Every instance of a site applies the same commits, so each would decide the same power
cycles: without one driver a machine is power-cycled once per instance, the second time in the
middle of the install the first started. The driver is the instance holding a session-level
advisory lock (the site's name hashed) on a connection of its own: PostgreSQL lets it go when that
connection ends (the instance stopped, died, or lost the server), and another instance takes it
at its next `refresh()`. While the server cannot be reached no instance holds it: nothing is
powered until one can record what it does.

An instance started without --bmc-credentials can run a rollout (nodes then need a manual
reboot, which it tracks) but cannot power: it runs the site's rollouts only while no instance
that can power is connected. Those hold a second lock of the site in shared mode for as long as
they live (`POWER_CLASS`); one without credentials that sees it held (an exclusive try fails)
lets the rollout lock go, or does not take it, so an instance that can power takes it.

A driver whose host died or was cut off sends no FIN: PostgreSQL would hold its session, and the
lock, until the system's TCP keepalive gives up (about 2 h 11 min by default). The session asks
the server for keepalives of its own (`KEEPALIVE`: given up after about 25 s), and the client
gives up a query unanswered for `USER_TIMEOUT_MS` (so a driver cut off stops driving first).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from typing import Any

import psycopg

log = logging.getLogger(__name__)

LOCK_CLASS = 0x6E62726F  # the advisory lock's first key ("nbro"); the second is the site's
POWER_CLASS = 0x6E62706F  # held shared by every instance of the site that can power ("nbpo")
APPLICATION = "netboot-reconcile rollouts "  # + the instance: how `holder()` names the driver
KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}  # seconds, seconds, probes (both ends)
USER_TIMEOUT_MS = 10_000  # the client's bound on data left unacknowledged (a query to a lost server)


class SiteDriver:
    """The rollout lock of one site (see the module docstring)."""

    def __init__(self, url: str, site: str, instance: str, *, may_power: bool = True,
                 connect_timeout: float = 3.0) -> None:
        self._url = url
        self._site = site
        self._instance = instance
        self._may_power = may_power  # started with --bmc-credentials
        self._key = (LOCK_CLASS, zlib.crc32(site.encode()) - 2**31)  # two int4 keys
        self._power_key = (POWER_CLASS, self._key[1])
        self._powering = False  # holds the power lock (shared)
        self._timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    def held(self) -> bool:
        """Whether this instance drove its site's rollouts at the last `refresh()`."""
        return self._held

    def refresh(self) -> bool:
        """Take the lock when free, or check that the connection holding it still lives."""
        was = self._held
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop()
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=max(1, int(self._timeout)),
                    application_name=(APPLICATION + self._instance)[:63], keepalives=1,
                    keepalives_idle=KEEPALIVE["idle"], keepalives_interval=KEEPALIVE["interval"],
                    keepalives_count=KEEPALIVE["count"], tcp_user_timeout=USER_TIMEOUT_MS)
                for name, value in KEEPALIVE.items():  # the server's end (settable per session)
                    self._conn.execute(f"SET tcp_keepalives_{name} = {int(value)}")
            if self._may_power and not self._powering:
                self._powering = self._try("pg_try_advisory_lock_shared", self._power_key)
            if not self._may_power and self._power_held_elsewhere():
                if self._held:  # an instance that can power is here: it runs them
                    self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._key)
                    self._held = False
            elif self._held:
                self._conn.execute("SELECT 1")
            else:
                self._held = self._try("pg_try_advisory_lock", self._key)
        except psycopg.Error:
            self._drop()
        if self._held and not was:
            log.info("rollouts of site %r: this instance (%s) drives them", self._site, self._instance)
        elif was and not self._held:
            log.warning("rollouts of site %r: this instance no longer drives them (%s)", self._site,
                        "an instance with --bmc-credentials does" if self._conn is not None
                        else "its connection to the store was lost")
        return self._held

    def _try(self, function: str, key: tuple[int, int]) -> bool:
        assert self._conn is not None
        row = self._conn.execute(f"SELECT {function}(%s, %s)", key).fetchone()
        return bool(row and row[0])

    def _power_held_elsewhere(self) -> bool:
        """Whether an instance that can power holds the site's power lock (an exclusive try fails)."""
        if self._try("pg_try_advisory_lock", self._power_key):
            assert self._conn is not None
            self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._power_key)
            return False
        return True

    def holder(self) -> str | None:
        """The instance driving the site's rollouts, as PostgreSQL knows it (None: none, or unknown)."""
        if self._held:
            return self._instance
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                return None
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s "
                "AND l.objid::bigint = %s AND l.objsubid = 2",
                (self._key[0], self._key[1] & 0xFFFFFFFF)).fetchone()
        except psycopg.Error:
            return None
        return str(row[0]).removeprefix(APPLICATION) if row else None

    def _drop(self) -> None:
        self._held = self._powering = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        self._drop()
