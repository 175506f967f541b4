"""The webhook reporter Subiquity's events go through, posting to a daemon.

Subiquity hands its `reporting:` config to curtin's reporter (`curtin.reporter`), which is a
fork of cloud-init's reporting package: the same `reporting:` mapping (handler name ->
`{type: webhook, endpoint: ...}`), the same WebHookHandler POSTing each event as JSON (name,
description, event_type, origin, timestamp, result; curtin adds `level` and says origin
`curtin`). curtin is published neither in Debian nor on PyPI, so it cannot run here; the tests
run that lineage's code as Debian ships it: cloud-init's `cloudinit.reporting` (the installed
`cloud-init` package), configured with the served mapping exactly as Subiquity configures curtin's.

`post_events(reporting, events)` runs tests/peers/reporter_post.py under /usr/bin/python3.
Callers: tests/integration/test_autoinstall_reporter.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPORTING = Path("/usr/lib/python3/dist-packages/cloudinit/reporting/handlers.py")

# (kind, name, description, result): kind "start" or "finish"; result SUCCESS | WARN | FAIL
Event = tuple[str, str, str, str]


def post_events(reporting: Mapping[str, Any], events: list[Event]) -> str:
    """Report `events` through the webhook reporter configured with a `reporting:` mapping; its log."""
    if not REPORTING.exists():
        pytest.fail(f"{REPORTING} not found: apt-get install cloud-init (scripts/test.sh installs it)")
    proc = subprocess.run(
        ["/usr/bin/python3", str(HERE / "reporter_post.py"), "--reporting", json.dumps(reporting),
         "--events", json.dumps(events)],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": ""},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"reporter failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stderr
