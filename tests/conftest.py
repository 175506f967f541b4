"""Suite-wide hooks: the pytest-xdist scheduling of scripts/test.sh (`--dist loadgroup`), from
tests/xdist_schedule.py. Without xdist (or with another `--dist`) nothing here applies.
Session-scoped fixtures (tests/integration/conftest.py's PostgreSQL cluster) are built once per
worker, each in a temporary directory of its own.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.xdist_schedule import SuiteScheduling

    return SuiteScheduling(config, log)
