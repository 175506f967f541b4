"""Shared test helpers: requirements that fail loudly, free ports, network namespaces."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Real packets captured from firmware netbooting in QEMU; shared/ sits beside the checkout.
VECTORS = ROOT.parent / "shared" / "vectors" / "netboot-clients.json"


def require_root() -> None:
    """Fail (never skip) when the test needs root: run the README test command as root."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, raw sockets): run scripts/test.sh as root")


def require_tool(name: str, package: str) -> str:
    """Return the path of `name`, or fail naming the Debian package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.fail(f"{name} not found: apt-get install {package} (scripts/test.sh installs it)")
    return path


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def udp_port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether some socket holds UDP `port` on `host` (a server bound it): binding it fails EADDRINUSE."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def patterned_bytes(size: int, seed: int = 1) -> bytes:
    """`size` bytes that differ per seed and do not repeat with a 512-byte period (a TFTP block),
    so a misplaced or repeated block shows in a byte comparison."""
    block = hashlib.sha256(str(seed).encode()).digest() * 32  # 1 KiB
    return (block * (size // len(block) + 1))[:size]


def write_bmc_credentials(path: Path, name: str, password: str, username: str = "admin") -> Path:
    """A `--bmc-credentials` file with one entry, owner-only as the daemon requires."""
    path.write_text(json.dumps({name: {"username": username, "password": password}}))
    path.chmod(0o600)
    return path
