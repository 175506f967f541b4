"""A boot server's setting for transfer tests: example-repo validated and served at one revision,
with a kernel of patterned bytes under an assets directory.

Used by tests/integration/test_tftp_failed_transfer.py and test_http_aborted_download.py (a kernel
broken off over TFTP and over HTTP) and test_http_boot.py (`wait_events`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from reconciler.adapters.dirsource import read_directory
from reconciler.core.events import CollectEvents
from reconciler.core.validate import validate
from reconciler.generation import Generation, GenerationHolder
from tests.support import patterned_bytes

REPO = Path(__file__).resolve().parents[2] / "example-repo"
KERNEL = "ubuntu/2204/vmlinuz"  # example-repo's profiles boot this path: its requests are the `kernel` stage


def example_holder(sha: str) -> GenerationHolder:
    """example-repo's generation at revision `sha` (no rendered files: the servers only need the state)."""
    state = validate(read_directory(REPO)).state
    assert state is not None
    holder = GenerationHolder()
    holder.swap(Generation(sha, dataclasses.replace(state, revision=sha), {}))
    return holder


def kernel_assets(tmp_path: Path, size: int, seed: int) -> Path:
    """An assets directory holding `KERNEL`: `size` patterned bytes (`patterned_bytes(size, seed)`)."""
    assets = tmp_path / "assets"
    (assets / KERNEL).parent.mkdir(parents=True)
    (assets / KERNEL).write_bytes(patterned_bytes(size, seed))
    return assets


def wait_events(events: CollectEvents, count: int) -> None:
    """Until `events` holds `count` events: servers record a transfer when it ends, which may
    follow what the client saw by a moment."""
    deadline = time.monotonic() + 30
    while len(events.events) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(events.events) >= count, events.events
