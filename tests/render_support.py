"""Shared helpers for the renderer tests: the example repository at a fixed revision."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from reconciler.adapters.dirsource import read_directory
from reconciler.core.model import DesiredState
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example-repo"
GOLDEN = ROOT / "tests" / "golden" / "example-repo"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def example_snapshot(revision: str = REVISION) -> Snapshot:
    return dataclasses.replace(read_directory(EXAMPLE), revision=revision)


def valid_state(snapshot: Snapshot) -> DesiredState:
    result = validate(snapshot)
    assert result.state is not None, result.issues
    return result.state


def example_state(revision: str = REVISION) -> DesiredState:
    return valid_state(example_snapshot(revision))
