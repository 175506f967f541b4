"""Durability of directory entries: `fsync_dir` makes a rename or link inside a directory survive a crash.

Called by `adapters.artifacts` (generation swaps, the state dir) and `adapters.assetstore`
(blobs and the served links into them).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync(2) the directory `path`, so that the names created or renamed in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
