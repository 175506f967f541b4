"""curtin's own reporter (what Subiquity sends autoinstall events through), posting to a daemon.

Subiquity's ReportingController hands its `reporting:` config to curtin's
`curtin.reporter.update_configuration` and reports each step with
`curtin.reporter.events.report_start_event` / `report_finish_event`; a `type: webhook` handler
is curtin's WebHookHandler, which POSTs each event as JSON. curtin is neither a Debian 12
package nor on PyPI: its release tag CURTIN_TAG is cloned once into tests/peers/.cache/ from
GitHub, or from the clone or mirror $CURTIN_GIT names (tests/peers/sources.py), and runs under
/usr/bin/python3 (it needs PyYAML, which Debian's python3-yaml provides).

`post_events(reporting, events)` runs tests/peers/curtin_report.py in that tree.
Callers: tests/integration/test_curtin_reporter.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.peers.sources import tag_tree

HERE = Path(__file__).resolve().parent
CURTIN_GIT = "https://github.com/canonical/curtin"
CURTIN_TAG = "24.0.0"
CURTIN_COMMIT = "204562c277b096229ca20ba546149deef1d85e38"

# (kind, name, description, result): kind "start" or "finish"; result SUCCESS | WARN | FAIL
Event = tuple[str, str, str, str]


def post_events(reporting: Mapping[str, Any], events: list[Event]) -> str:
    """Report `events` through curtin's reporter configured with a `reporting:` mapping; curtin's log."""
    tree = tag_tree("curtin", CURTIN_GIT, "CURTIN_GIT", CURTIN_TAG, CURTIN_COMMIT, "curtin/reporter/handlers.py")
    proc = subprocess.run(
        ["/usr/bin/python3", str(HERE / "curtin_report.py"), "--reporting", json.dumps(reporting),
         "--events", json.dumps(events)],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(tree)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"curtin reporter failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stderr
