"""The one boot-event recorder every server uses (DHCP, TFTP, HTTP boot endpoints).

A server builds a `BootRecorder` over the daemon's `EventSink` and records through it: one
event (`record`: an HTTP request, a TFTP transfer) or a batch of rows (`record_rows`: a DHCP
poll round). The recorder stamps the time and keeps a failing sink away from the request path:
a sink that raises costs one log line, never a reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.core.events import EventRow, EventSink, Stage
from reconciler.core.model import BootEvent

log = logging.getLogger(__name__)


class BootRecorder:
    """Records boot events for one server (`server` names it in log lines)."""

    def __init__(self, sink: EventSink, server: str, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.server = server
        self._clock = clock

    def record(
        self,
        stage: Stage,
        revision: str,
        *,
        mac: str | None = None,
        node: str | None = None,
        client: str | None = None,
        detail: Mapping[str, Any],
        at: float | None = None,
    ) -> None:
        """One event, stamped now, or `at` (`now()` when the request came: a download recorded
        when it ends is placed where it began, as the waterfall times phases)."""
        event = BootEvent(time=self._clock() if at is None else at, stage=stage, revision=revision, mac=mac,
                          node=node, client=client, detail=detail)
        try:
            self.sink.record(event)
        except Exception:  # a broken sink must not fail a boot
            log.exception("%s: recording a boot event failed revision=%s mac=%s", self.server, revision or "-",
                          mac or "-")

    def now(self) -> float:
        """The time events are stamped with."""
        return self._clock()

    def record_rows(self, rows: Sequence[EventRow]) -> None:
        """Several events at once, already stamped (the sink does not keep `rows`)."""
        if not rows:
            return
        try:
            self.sink.record_rows(rows)
        except Exception:
            log.exception("%s: event sink failed; %d boot events lost revision=- mac=-", self.server, len(rows))
