"""The daemon, in parts: `loop.Daemon` (the loop, triggers, backoff) and beside it the steps and
their runner (`steps`), the status book (`status`), the server supervisor (`supervisor`), the
generation loader (`loader`), the worker process that validates and renders a commit
(`worker`), the state-directory lock (`statelock`), bind errors said with their fix
(`bind_errors`), its metrics and systemd notification.

Called by `commands.run`; `from reconciler.daemon import Daemon` is the entry point.
"""

from reconciler.daemon.loader import REPORT_KEY_META, report_key
from reconciler.daemon.loop import Daemon
from reconciler.daemon.notify import sd_notify
from reconciler.daemon.outcome import Outcome, Result
from reconciler.daemon.status import Condition, StatusBook

__all__ = ["REPORT_KEY_META", "Condition", "Daemon", "Outcome", "Result", "StatusBook", "report_key", "sd_notify"]
