"""How scripts/test.sh's pytest-xdist run (`-n 2 --dist loadgroup`) hands tests to workers.

A work unit goes to one worker, its tests one after another:
- `machine`: every QEMU e2e test (tests/e2e/), the bench smokes and the benches stopped by a
  signal (boot_storm boots QEMU guests, scale_out runs PostgreSQL, daemons and kea): tests that
  use the whole machine never overlap each other, and the e2e labs (module fixtures: daemon,
  namespace, guests) are built once;
- each other integration module: its module-scoped fixtures (a daemon, a lab, signing keys) are
  built once, as in a serial run;
- each unit test on its own: they are short, so single tests balance the workers' ends.
Units with more tests start first (xdist's loadscope order), so the long `machine` unit starts at once.
xdist's own loadgroup reads `xdist_group` marks by rewriting `item._nodeid`, which pytest 9's node
ids ignore, so the grouping is decided here from node ids, in the controller (it collects nothing).
Caller: tests/conftest.py (`pytest_xdist_make_scheduler`).
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

MACHINE = ("tests/e2e/", "tests/integration/test_bench_smoke.py", "tests/integration/test_bench_signals.py")


def work_unit(nodeid: str) -> str:
    """The work unit of a test, by node id (`path::name[params]`)."""
    if nodeid.startswith(MACHINE):
        return "machine"
    if nodeid.startswith("tests/unit/"):
        return nodeid
    return nodeid.split("::", 1)[0]


class SuiteScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no type hints
    """xdist's loadscope scheduling with `work_unit` as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)
