"""Fixtures shared by the integration tests: a throwaway PostgreSQL cluster for the whole session
(started once, stopped at the end), and `store_location`, which runs a store test on both
engines (a SQLite file, a fresh PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgcluster import PgCluster, PgUnavailable


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = PgCluster()
    except PgUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a results store lives: a SQLite file, or an empty PostgreSQL database (its URL)."""
    if request.param == "sqlite":
        return str(tmp_path / "results.sqlite3")
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()
