"""The daemon, in parts: `loop.Daemon` (the loop, triggers, backoff) and beside it the steps and
their runner (`steps`), the status book (`status`), the server supervisor (`supervisor`), the
generation loader (`loader`), the worker process that validates and renders a commit
(`worker`), the state-directory lock (`statelock`), bind errors said with their fix
(`bind_errors`), its metrics and systemd notification.

Called by `commands.run`; `from reconciler.daemon import Daemon` is the entry point. The names
below are imported when first asked for, not with the package: the worker's forkserver preloads
`daemon.worker` and every worker runs `daemon.resident`, and importing the package for them must
not import the loop, the servers and the database drivers (~30 MB in each of those processes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.daemon.loader import REPORT_KEY_META, report_key
    from reconciler.daemon.loop import Daemon
    from reconciler.daemon.notify import sd_notify
    from reconciler.daemon.outcome import Outcome, Result
    from reconciler.daemon.status import Condition, StatusBook

__all__ = ["REPORT_KEY_META", "Condition", "Daemon", "Outcome", "Result", "StatusBook", "report_key", "sd_notify"]

_MODULE_OF = {"REPORT_KEY_META": "loader", "report_key": "loader", "Daemon": "loop", "sd_notify": "notify",
              "Outcome": "outcome", "Result": "outcome", "Condition": "status", "StatusBook": "status"}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
