"""Report events through cloud-init's reporting as Subiquity does through curtin's; run by reporter_peer.py.

    python3 reporter_post.py --reporting JSON --events '[["start", "subiquity/Install/install", "...", ""], ...]'

Hands the served autoinstall `reporting:` mapping to `update_configuration`, then calls
`report_start_event` / `report_finish_event` for each event, as
subiquity/server/controllers/reporting.py does with curtin's identical API, and flushes the
webhook queue. The WebHookHandler logs (does not raise) a failed POST, so the log goes to stderr
for the test.
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

    from cloudinit import reporting  # type: ignore[import-not-found, unused-ignore]
    from cloudinit.reporting import events  # type: ignore[import-not-found, unused-ignore]

    reporting.update_configuration(json.loads(args.reporting))
    for kind, name, description, result in json.loads(args.events):
        if kind == "start":
            events.report_start_event(name, description)
        else:
            events.report_finish_event(name, description, getattr(events.status, result))
    reporting.flush_events()
    return 0


if __name__ == "__main__":
    sys.exit(main())
