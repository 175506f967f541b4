"""The boot-report secret of the instances sharing a PostgreSQL store: one secret for all of them.

Called by `commands.run` at start with `--store postgresql://...`. Report tokens are
HMAC(secret, node, revision), rendered into each machine's seed by the instance that rendered
it, and checked by whichever instance the report reaches: with a secret per state directory, a
machine that installed from one instance and reported to another (the address it reports to
moved, as keepalived's does when an instance dies) was refused, so its install was never
recorded. The first instance to start puts its secret in the store; every other takes that one
(its generations rendered with another are rendered again at start: `daemon.loader`'s
report-key check).
"""

from __future__ import annotations

from reconciler.adapters.sqldb import PostgresDb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret TEXT NOT NULL
)
"""


def shared(url: str, mine: bytes) -> bytes:
    """The store's report secret; `mine` becomes it when the store has none yet.
    StoreUnreachable (an OSError) when the server cannot be reached."""
    db = PostgresDb(url)
    try:
        with db.transaction(writer=True):  # instances starting together: one creates and one inserts
            db.execute(_SCHEMA)
            db.execute("INSERT INTO report_secret (id, secret) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                       (mine.decode(),))
            rows = db.rows("SELECT secret FROM report_secret WHERE id = 1")
    finally:
        db.close()
    return str(rows[0][0]).encode()
