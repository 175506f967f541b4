"""tests/e2e's failure evidence (issue 29 point 4): whatever assertion fails in an e2e test, its
report shows each guest's serial console and the daemon's log. Run here with pytest's own
pytester on a stand-in `Site` (no QEMU): the hook and `Site.evidence` are what the e2e tests use.
"""

from __future__ import annotations

import pytest

pytest_plugins = ("pytester",)

FAILING = '''
from pathlib import Path

import pytest

from tests.e2e.site import Site


class Vm:
    name, firmware, log = "vm-9", "uefi-secure", Path("vm-9.serial.log")

    def serial(self) -> str:
        return "BdsDxe: loading Boot0001\\nerror: bad shim signature.\\n"


class Daemon:
    log = Path("daemon.log")

    def log_text(self) -> str:
        return "tftp ok client=10.10.10.9 file=shimx64.efi revision=abc mac=52:54:00:00:00:09\\n"


@pytest.fixture
def lab_site() -> Site:
    return Site(None, None, Daemon(), [], {}, vms={"vm-9": Vm()})  # type: ignore[arg-type]


def test_a_plain_assertion_far_from_the_boot(lab_site: Site) -> None:
    assert 1 + 1 == 3
'''


def test_a_failing_e2e_assertion_shows_consoles_and_daemon_log(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_failing=FAILING)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*e2e evidence (lab_site): serial consoles and daemon log*",
        "vm-9 (uefi-secure) serial console vm-9.serial.log, last lines:",
        "error: bad shim signature.",
        "daemon log daemon.log, last lines:",
        "tftp ok client=10.10.10.9 file=shimx64.efi*",
    ])
