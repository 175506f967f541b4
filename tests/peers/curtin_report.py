"""Report events through curtin's reporter as Subiquity does; run by tests/peers/curtin_peer.py, not imported.

    python3 curtin_report.py --reporting JSON --events '[["start", "subiquity/Install/install", "...", ""], ...]'

Hands the served autoinstall `reporting:` mapping to curtin.reporter.update_configuration,
then calls curtin.reporter.events.report_start_event /
report_finish_event for each event, as subiquity/server/controllers/reporting.py does. curtin's
WebHookHandler logs (does not raise) a failed POST, so the log goes to stderr for the test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reporting", required=True)
    parser.add_argument("--events", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    from curtin.reporter import events, update_configuration  # type: ignore[import-not-found, unused-ignore]

    update_configuration(json.loads(args.reporting))
    for kind, name, description, result in json.loads(args.events):
        if kind == "start":
            events.report_start_event(name, description, level="INFO")
        else:
            events.report_finish_event(name, description, getattr(events.status, result), level="INFO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
