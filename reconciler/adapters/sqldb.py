"""The store interface: one SQL connection, to SQLite (the default) or PostgreSQL (`--store URL`).

Used by `adapters.store` (results: reconcile history, boot events, reports, installs, instances)
and `adapters.pgleases` (pool leases shared by several instances). Callers write SQL once, with
`?` placeholders; what differs between the engines lives here: placeholders, the writer lock
(`BEGIN IMMEDIATE` vs a transaction-scoped advisory lock), JSON field access, durability knobs,
and what a lost connection looks like (`StoreUnreachable`, raised for PostgreSQL's connection
errors: the next call connects again, so an outage ends without a restart).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import psycopg

Dialect = Literal["sqlite", "postgresql"]
# The transaction-scoped advisory lock PostgreSQL writers take where SQLite says BEGIN IMMEDIATE
# (any 64-bit constant; "netboot" in ASCII).
WRITER_LOCK = 0x6E6574626F6F74

def db_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """`more` and what a failed statement raises, for an `except` (evaluated as it catches):
    sqlite3.Error, and psycopg.Error once psycopg is imported (by a PostgreSQL store)."""
    psycopg = sys.modules.get("psycopg")
    return (*more, sqlite3.Error, psycopg.Error) if psycopg is not None else (*more, sqlite3.Error)


def _psycopg() -> ModuleType:
    """psycopg, imported by the first PostgreSQL connection: a daemon on SQLite never imports it
    (~0.1 s of CPU before its first reconcile). psycopg is a dependency, but SQLite must not need
    it to load."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        raise RuntimeError("--store postgresql:// needs psycopg: pip install 'psycopg[binary]'") from None
    return psycopg


class StoreUnreachable(ConnectionError):
    """The database server cannot be reached now (the store's `describe` names it)."""


def is_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def describe(store: str) -> str:
    """A store's name for messages: the URL (or whatever was given as one) without its password,
    in either place libpq takes it: the user info (`user:PASSWORD@`, the user possibly empty) and
    a `password=` parameter (`?password=...` in a URL, `password=...` in a DSN)."""
    before, password, after = _user_password(store)
    return _PASSWORD_PARAM.sub(r"\1***", before + ("***" if password is not None else "") + after)


def scrub(text: str, store: str) -> str:
    """`text` (a client library's message about `store`, which may quote the URL or a piece of
    it) without the store's password, as given or percent-decoded."""
    passwords = [m.group(2) for m in _PASSWORD_PARAM.finditer(store)] + [p for p in _user_password(store)[1:2] if p]
    for password in sorted({p for raw in passwords for p in (raw, urllib.parse.unquote(raw)) if p},
                           key=len, reverse=True):
        text = text.replace(password, "***")
    return text


_PASSWORD_PARAM = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s#]*)")


def _user_password(store: str) -> tuple[str, str | None, str]:
    """(text before, the password, text after) of a URL's `user:PASSWORD@`; (store, None, "")
    without one. libpq reads user info up to an `@` before the first `/`: the password is taken
    to run to the last such `@`, so a stray `@` in it is hidden too."""
    scheme, sep, rest = store.partition("://")
    user = rest.partition("/")[0].rpartition("@")[0]
    if not sep or ":" not in user:
        return store, None, ""
    start, end = len(scheme) + len(sep) + user.index(":") + 1, len(scheme) + len(sep) + len(user)
    return store[:start], store[start:end], store[end:]


class Database(Protocol):
    """What the stores need of a connection: statements with `?` placeholders, transactions."""

    dialect: Dialect
    name: str  # for messages (`describe`)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def transaction(self, *, writer: bool = False, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """One transaction; `writer`: serialised with every other writer of the store (all
        instances); `durable`: committed to stable storage before it returns."""
        ...

    def json_field(self, column: str, key: str) -> str:
        """SQL reading the top-level `key` of a JSON text column as text."""
        ...

    def close(self) -> None: ...


class SqliteDb:
    """A SQLite file (WAL, synchronous=NORMAL; FULL for a durable transaction)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "NORMAL") -> None:
        self.name = path
        self._synchronous = synchronous
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self, *, writer: bool = False, durable: bool = False) -> Iterator[None]:
        if durable:
            self.conn.execute("PRAGMA synchronous=FULL")
        try:
            self.conn.execute("BEGIN IMMEDIATE" if writer else "BEGIN")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        finally:
            if durable:
                self.conn.execute(f"PRAGMA synchronous={self._synchronous}")

    def json_field(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def close(self) -> None:
        self.conn.close()


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled). Our SQL holds no `?` in literals."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresDb:
    """A PostgreSQL database by URL (psycopg 3, autocommit outside `transaction`). A lost
    connection raises StoreUnreachable and is opened again by the next call."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout: float = 3.0) -> None:
        self._pg = _psycopg()
        self.url = url
        self.name = describe(url)
        self._timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self.connect()

    def connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        try:
            self._conn = self._pg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self._timeout)),
                                         application_name="netboot-reconcile")
        except self._pg.OperationalError as exc:
            raise StoreUnreachable(f"{self.name}: {scrub(_first_line(exc), self.url)}") from None
        except self._pg.Error as exc:  # a URL libpq cannot parse: its message may quote the password
            raise ValueError(f"{self.name}: {scrub(_first_line(exc), self.url)}") from None
        return self._conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (self._pg.OperationalError, self._pg.InterfaceError) as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                raise StoreUnreachable(f"{self.name}: {scrub(_first_line(exc), self.url)}") from exc
            raise

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._errors():
            cur = self.connect().execute(_pg_sql(sql), tuple(params))
            return cur.fetchall() if cur.description is not None else []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._errors():
            self.connect().execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._errors(), self.connect().cursor() as cur:
            cur.executemany(_pg_sql(sql), [tuple(r) for r in rows])

    @contextlib.contextmanager
    def transaction(self, *, writer: bool = False, durable: bool = False) -> Iterator[None]:
        # PostgreSQL commits are durable (synchronous_commit=on): `durable` asks nothing more.
        with self._errors(), self.connect().transaction():
            if writer:
                self.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))
            yield

    def json_field(self, column: str, key: str) -> str:
        return f"(({column})::jsonb ->> '{key}')"

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def open_db(store: str) -> SqliteDb | PostgresDb:
    """A PostgreSQL URL, or a SQLite path (":memory:" too)."""
    return PostgresDb(store) if is_url(store) else SqliteDb(store)
