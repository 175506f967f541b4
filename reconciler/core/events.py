"""The one interface through which servers report boot events (implemented by adapters.store).

Two ways in: `record(event)` for one `BootEvent` (HTTP requests, TFTP transfers), and
`record_rows(rows)` for a batch of `EventRow`s, the event's fields as a plain tuple. A packet
path that sees thousands of events a second (DHCP) hands them over in batches as rows: no
object built per packet, no thread of its own to build them (one that did held the GIL while
the packet thread waited for it: see `servers.dhcp`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from reconciler.core.model import BootEvent

# BootEvent's fields in order: (time, stage, revision, mac, node, client, detail).
EventRow = tuple[float, str, str, str | None, str | None, str | None, Mapping[str, Any]]


def row_of(event: BootEvent) -> EventRow:
    """`event` as an EventRow."""
    return (event.time, event.stage, event.revision, event.mac, event.node, event.client, event.detail)


def event_of(row: EventRow) -> BootEvent:
    """The BootEvent an EventRow holds."""
    return BootEvent(*row)


class EventSink(Protocol):
    """Takes boot events without blocking the request path (implementations batch writes)."""

    def record(self, event: BootEvent) -> None: ...

    def record_rows(self, rows: Sequence[EventRow]) -> None:
        """Take several events at once, in order; the sink must not keep `rows` itself."""
        ...


class DiscardEvents:
    """An EventSink that keeps nothing: for one-shot commands and tests that do not look."""

    def record(self, event: BootEvent) -> None:
        return None

    def record_rows(self, rows: Sequence[EventRow]) -> None:
        return None


class CollectEvents:
    """An EventSink that keeps events in memory, in order."""

    def __init__(self) -> None:
        self.events: list[BootEvent] = []

    def record(self, event: BootEvent) -> None:
        self.events.append(event)

    def record_rows(self, rows: Sequence[EventRow]) -> None:
        self.events.extend(event_of(row) for row in rows)
