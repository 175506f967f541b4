"""Shared test helpers: requirements that fail loudly, free ports, network namespaces."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

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


# free_port hands out ports below the kernel's ephemeral range (32768-60999 by default), from a
# block of its own per pytest-xdist worker: a port from bind(0) sat in the ephemeral range, where
# any outgoing connection of a parallel worker could take it before the daemon under test bound it.
_PORT_BLOCK, _WORKERS = 1500, 8
_port_cursor = secrets.randbelow(_PORT_BLOCK)


def _port_base() -> int:
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return max(1024, ephemeral_low - _WORKERS * _PORT_BLOCK)


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ... under pytest-xdist
    return int(worker[2:]) % _WORKERS if worker[2:].isdigit() else 0


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on `host`, from this worker's block (never handed out twice
    in a row: the cursor moves on), so parallel workers and ephemeral connections never race for it."""
    global _port_cursor
    base = _port_base() + _worker_index() * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = base + _port_cursor
        _port_cursor = (_port_cursor + 1) % _PORT_BLOCK
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_BLOCK - 1} on {host}")


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


def processes_naming(path: Path) -> list[int]:
    """PIDs of the processes whose command line names `path` (a bench's directory: its postgres,
    QEMU's serial file, nginx's and dnsmasq's configs): what a stopped program must not leave."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


@contextlib.contextmanager
def collections_inside(function: str) -> Iterator[list[int]]:
    """The generations of the cyclic collector's passes that start with a function named
    `function` on the stack, the collector made eager (threshold 1) for the block: a pass that
    code meant to pause it (core.validate.gc_paused) lets through shows up here."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        frame: FrameType | None = sys._getframe(1)
        while phase == "start" and frame is not None:
            if frame.f_code.co_name == function:
                seen.append(info["generation"])
                return
            frame = frame.f_back

    threshold = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    gc.callbacks.append(count)
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
        gc.enable()


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold `cache/.lock` (flock, released when the process dies): one builder per cache at a
    time, so pytest-xdist workers and a bench asking for the same cached image or download build
    it once (callers check the cache again once they hold it)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
