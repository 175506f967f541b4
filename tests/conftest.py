"""Scheduling of the whole suite under pytest-xdist (scripts/test.sh runs `-n 2 --dist loadgroup`).

xdist groups (a group's tests run on one worker, one after another; other tests spread freely):
- `machine`: the tests that use the whole machine, the QEMU e2e tests (marker `e2e`) and the bench
  smokes (tests/integration/test_bench_smoke.py: boot_storm boots QEMU guests, scale_out runs
  PostgreSQL, daemons and kea), so they never overlap each other;
- a module's own group when one of its tests uses a module- or class-scoped fixture (a daemon, a
  lab, signing keys): spread over workers, each worker would build that fixture again.
Session-scoped fixtures (tests/integration/conftest.py's PostgreSQL cluster) are built once per
worker, each in its own temporary directory. Without xdist the marks do nothing.
"""

from __future__ import annotations

import pytest

MACHINE_MODULES = ("tests/integration/test_bench_smoke.py",)
SHARED_SCOPES = {"module", "class", "package"}


def _uses_shared_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest.Function's resolved fixtures
    if info is None:
        return False
    return any(defs and defs[-1].scope in SHARED_SCOPES for defs in info.name2fixturedefs.values())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") is not None or item.nodeid.startswith(MACHINE_MODULES):
            item.add_marker(pytest.mark.xdist_group("machine"))
        elif _uses_shared_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
