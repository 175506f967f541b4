"""TFTP serving policy without I/O: a request, a generation's files and the root policy ->
what to serve, or the `TftpError` to answer with.

Called by `reconciler.servers.tftp` for every request datagram (`admit`, then `resolve`, then,
after it has opened the file, `served_size`), the way fbtftp separates its handler hook from
the server; the server only moves bytes. Nothing here opens a file: `resolve` is given the
function that resolves symlinks (`os.path.realpath` in the server, a model of a file tree in
tests), so a path leaving the root through `..` or a symlink is refused by the same code that
the tests drive with thousands of generated names.

Besides the root, `resolve` serves the Secure Boot chain's signed binaries by their fixed TFTP
names (`core.bootfiles.signed_files`) and, when the server has an assets root, the boot assets
as `assets/<path>` and `r/<sha>/assets/<path>` (the generation's synced file first, as over
HTTP): Debian's signed GRUB has no HTTP and fetches kernel and initrd this way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from reconciler.core.asset_paths import generation_tree
from reconciler.core.assets import STORE_DIR
from reconciler.protocol.tftp import (
    ERR_ACCESS,
    ERR_NOT_FOUND,
    ERR_UNDEFINED,
    ReadRequest,
    TftpError,
    WriteRequest,
    path_is_within,
    request_path,
)

GENERATION_PREFIX = "tftp/"  # a generation's files served over TFTP: tftp/<path>
_PINNED_ASSET = re.compile(r"r/([^/]+)/assets/(.+)")


@dataclass(frozen=True)
class RootPolicy:
    """The TFTP root (resolved: no symlinks in it) and the resolved files outside it that may
    still be reached through a symlink in the root (Debian's /usr/lib/ipxe links into /boot)."""

    root: str
    allow_outside: frozenset[str] = frozenset()
    # --assets-dir (resolved), served as `assets/<path>` and `r/<sha>/assets/<path>` for GRUB
    # under Secure Boot, which has no HTTP; None: no assets over TFTP.
    assets: str | None = None


@dataclass(frozen=True)
class Admission:
    """How many transfers the server runs at once, in all and per client address."""

    max_transfers: int = 512
    max_per_client: int = 8


@dataclass(frozen=True)
class FromGeneration:
    """Serve these bytes, rendered into the generation. `size`: None for netascii (the
    translated size is not known before sending; tsize is then left out)."""

    data: bytes
    size: int | None


@dataclass(frozen=True)
class FromAssets:
    """Open the first of `paths` that opens (the generation's synced file, then the one placed
    in --assets-dir), each resolved and inside the assets root."""

    paths: tuple[str, ...]
    netascii: bool


@dataclass(frozen=True)
class FromRoot:
    """Open `path` (resolved, and inside the root or allowed) and serve it if it is a regular file."""

    path: str
    netascii: bool


def admit(request: ReadRequest | WriteRequest, in_flight: int, from_client: int, limits: Admission) -> ReadRequest:
    """The read request to serve, or TftpError: writes are refused, and a full server or a
    client with `max_per_client` transfers in flight is told to try again."""
    if isinstance(request, WriteRequest):
        raise TftpError(ERR_ACCESS, "writes are not allowed")
    if in_flight >= limits.max_transfers:
        raise TftpError(ERR_UNDEFINED, "server busy, try again")
    if from_client >= limits.max_per_client:
        raise TftpError(ERR_UNDEFINED, "too many transfers from this client")
    return request


def resolve(
    request: ReadRequest,
    files: Mapping[str, bytes] | None,
    policy: RootPolicy,
    realpath: Callable[[str], str],
    signed: Mapping[str, str] | None = None,
) -> FromGeneration | FromRoot | FromAssets:
    """Where `request`'s file comes from: the generation's `tftp/<path>` first, then the Secure
    Boot chain's binaries (`signed`: TFTP name -> file, `core.bootfiles.signed_files`), then the
    boot assets (`assets/...`, `r/<sha>/assets/...`), else the root.

    Refused (TftpError 2, access violation) when the name could escape (`request_path`) or
    when it resolves outside the root to anything but an allowed file; whether such a file
    exists is never told."""
    relative = request_path(request.filename)
    netascii = request.mode == "netascii"
    if files is not None:
        data = files.get(GENERATION_PREFIX + relative)
        if data is not None:
            return FromGeneration(data, None if netascii else len(data))
    if signed and relative in signed:
        return FromRoot(realpath(signed[relative]), netascii)
    if policy.assets is not None:
        found = _asset_paths(relative, policy.assets, realpath)
        if found is not None:
            return FromAssets(found, netascii)
    resolved = realpath(policy.root.rstrip("/") + "/" + relative)
    if not (path_is_within(resolved, policy.root) or resolved in policy.allow_outside):
        raise TftpError(ERR_ACCESS, "access violation")
    return FromRoot(resolved, netascii)


def asset_url_path(filename: str) -> str | None:
    """The `/assets/<path>` an asset request names (`assets/...` or `r/<sha>/assets/...`, as
    `servers.tftp` records it: a kernel or initrd stage like over HTTP), else None."""
    try:
        relative = request_path(filename)
    except TftpError:
        return None
    pinned = _PINNED_ASSET.fullmatch(relative)
    if pinned is not None:
        return "/assets/" + pinned.group(2)
    return "/" + relative if relative.startswith("assets/") else None


def _asset_paths(relative: str, assets: str, realpath: Callable[[str], str]) -> tuple[str, ...] | None:
    """Candidate files for an asset request (as `servers.http_assets.AssetRoot.open` looks for
    them over HTTP), None when `relative` does not name an asset."""
    pinned = _PINNED_ASSET.fullmatch(relative)
    if pinned is not None:
        tree, rel = generation_tree(pinned.group(1)), pinned.group(2)
    elif relative.startswith("assets/"):
        tree, rel = None, relative[len("assets/") :]
    else:
        return None
    if rel.split("/", 1)[0] == STORE_DIR:
        raise TftpError(ERR_ACCESS, "access violation")
    base = assets.rstrip("/")
    wanted = ([f"{base}/{tree.decode()}/{rel}"] if tree is not None else []) + [f"{base}/{rel}"]
    paths = tuple(realpath(p) for p in wanted)
    if not all(path_is_within(p, assets) and p != assets for p in paths):
        raise TftpError(ERR_ACCESS, "access violation")
    return paths


def open_failed(error: OSError) -> TftpError:
    """The answer to a file that resolved but could not be opened."""
    if isinstance(error, FileNotFoundError):
        return TftpError(ERR_NOT_FOUND, "file not found")
    return TftpError(ERR_ACCESS, "access violation")


def served_size(source: FromRoot | FromAssets, regular: bool, size: int) -> int | None:
    """The size to announce for an opened file (None: netascii), or TftpError 1 when it is not
    a regular file (a directory, a device, a FIFO: nothing to send)."""
    if not regular:
        raise TftpError(ERR_NOT_FOUND, "file not found")
    return None if source.netascii else size
