"""A `--store` URL's password never reaches a message: the real `netboot-reconcile` as a subprocess.

libpq takes the password in the URL's user info (`user:PASSWORD@`, the user possibly empty) or
as a `password=` query parameter, and its own messages quote a URL (or a piece of it) it cannot
parse. Each of these, given to `run --store` and `results --store`, fails with exit 2 and a
message naming the store, and the password is in neither stdout nor stderr. Nothing listens on
the ports and sockets used (port 1 on loopback, a socket directory that does not exist).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.sqldb import describe, scrub
from tests import repo_builder

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Pw"

URLS = [
    f"postgresql://netboot:{SECRET}@127.0.0.1:1/results",  # user info
    f"postgresql://:{SECRET}@127.0.0.1:1/results",  # user info, no user
    f"postgresql://127.0.0.1:1/results?user=netboot&password={SECRET}",  # query parameter
    f"postgresql:///results?host=/nonexistent-nbr-socket-dir&PASSWORD={SECRET}",  # unix socket, any case
    f"postgresql://netboot:{SECRET}@[::1/results",  # libpq quotes the whole URL it cannot parse
    f"postgresql://netboot:{SECRET}%zz@127.0.0.1:1/results",  # libpq quotes the bad token
    f"postgresq://netboot:{SECRET}@127.0.0.1:1/results",  # not a postgresql:// URL at all
]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


@pytest.mark.parametrize("url", URLS)
def test_run_with_an_unusable_store_url_never_prints_its_password(tmp_path: Path, url: str) -> None:
    site = repo_builder.write(tmp_path / "site")
    proc = cli("run", "--repo", site, "--state-dir", tmp_path / "state", "--no-dhcp", "--no-tftp",
               "--http-listen", "127.0.0.1:0", "--store", url)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert SECRET not in said, said
    assert "***" in said, said  # the store is named, without its password


@pytest.mark.parametrize("url", URLS)
def test_results_with_an_unusable_store_url_never_prints_its_password(url: str) -> None:
    proc = cli("results", "--store", url)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert SECRET not in said, said
    assert "***" in said and "Traceback" not in said, said


def test_describe_keeps_everything_but_the_password() -> None:
    assert describe("postgresql://netboot:pw@db.example:5433/results?sslmode=require") == \
        "postgresql://netboot:***@db.example:5433/results?sslmode=require"
    assert describe("postgresql://db.example/results?user=netboot&password=pw&sslmode=require") == \
        "postgresql://db.example/results?user=netboot&password=***&sslmode=require"
    assert describe("postgresql://postgres@/results?host=/run/postgresql&port=5432") == \
        "postgresql://postgres@/results?host=/run/postgresql&port=5432"
    assert scrub('invalid percent-encoded token: "p%zz"', "postgresql://u:p%zz@h/db") == \
        'invalid percent-encoded token: "***"'
