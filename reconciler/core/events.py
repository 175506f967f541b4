"""Boot events: the one `Stage` enumeration and the interface servers report them through.

`Stage` names every kind of boot event; the DHCP decider, the HTTP boot policy, the TFTP
server, the report endpoint and the outcome logic (`core.outcomes`) all use it. A Stage is a
`str` (StrEnum): stored and compared as its value ("tftp", "dhcp-ack", ...).

The sink is implemented by adapters.store (through servers.http_results); servers reach it
through `servers.recorder.BootRecorder`.

Two ways in: `record(event)` for one `BootEvent` (HTTP requests, TFTP transfers), and
`record_rows(rows)` for a batch of `EventRow`s, the event's fields as a plain tuple. A packet
path that sees thousands of events a second (DHCP) hands them over in batches as rows: no
object built per packet, no thread of its own to build them (one that did held the GIL while
the packet thread waited for it: see `servers.dhcp`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from reconciler.core.model import BootEvent


class Stage(enum.StrEnum):
    """What a boot event saw a machine do (`BootEvent.stage`)."""

    DHCP_OFFER = "dhcp-offer"
    DHCP_ACK = "dhcp-ack"  # not for lease upkeep (a renewal is not a boot)
    DHCP_NAK = "dhcp-nak"
    DHCP_DECLINE = "dhcp-decline"
    DHCP_RELEASE = "dhcp-release"
    DHCP_IGNORED = "dhcp-ignored"  # a netbooting machine no node declares, not answered (its DISCOVER)
    TFTP = "tftp"
    IPXE_BOOTSTRAP = "ipxe-bootstrap"
    IPXE_SCRIPT = "ipxe-script"
    GRUB = "grub"
    METADATA = "metadata"
    GENERIC = "generic"
    IGNITION = "ignition"
    KERNEL = "kernel"
    INITRD = "initrd"
    ASSET = "asset"
    USER_DATA = "user-data"
    META_DATA = "meta-data"
    VENDOR_DATA = "vendor-data"
    NETWORK_CONFIG = "network-config"
    UNKNOWN_MACHINE = "unknown-machine"
    REPORT = "report"
    AUTOINSTALL = "autoinstall"
    PHONE_HOME = "phone-home"


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
