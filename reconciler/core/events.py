"""The one interface through which servers report boot events (implemented by adapters.store)."""

from __future__ import annotations

from typing import Protocol

from reconciler.core.model import BootEvent


class EventSink(Protocol):
    """Takes boot events without blocking the request path (implementations batch writes)."""

    def record(self, event: BootEvent) -> None: ...


class DiscardEvents:
    """An EventSink that keeps nothing: for one-shot commands and tests that do not look."""

    def record(self, event: BootEvent) -> None:
        return None


class CollectEvents:
    """An EventSink that keeps events in memory, in order."""

    def __init__(self) -> None:
        self.events: list[BootEvent] = []

    def record(self, event: BootEvent) -> None:
        self.events.append(event)
