"""HTTP asset policy without I/O: which request paths may name a file under an assets root.

Called by `servers.http_assets.AssetRoot.open` (which then resolves symlinks and opens the
file) for `/assets/<path>` and `/r/<sha>/assets/<path>`, and by the boot app for the site's
iPXE binaries under `/assets/ipxe/` (`ipxe_binary`). A refused path gives 404, as a missing
file does: nothing tells what lies outside the root.
"""

from __future__ import annotations

import re

from reconciler.core.assets import STORE_DIR
from reconciler.core.model import BootFiles

IPXE_ASSETS = "/assets/ipxe/"  # where DHCP points UEFI HTTP boot clients (core.bootfiles.boot_table)

# In the raw request target: encoded '/', '\', NUL, and encoded '%' (double encoding) are refused.
_RAW_BAD = re.compile(rb"%(2f|5c|00|25)|\\", re.IGNORECASE)


def relative_path(rel: str, raw_uri: str) -> bytes | None:
    """The root-relative path (bytes) that `rel` (the decoded path after `/assets/`, PEP 3333
    latin-1) names, or None when it may not name one: an encoded slash, backslash, NUL or
    percent in the raw URI, a non-latin-1 character, an absolute path, or an empty, `.` or
    `..` segment."""
    raw_path = raw_uri.split("?", 1)[0].encode("latin-1", "replace")
    if _RAW_BAD.search(raw_path):
        return None
    try:
        rel_bytes = rel.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if not rel_bytes or rel_bytes.startswith(b"/") or b"\\" in rel_bytes or b"\x00" in rel_bytes:
        return None
    if any(seg in (b"", b".", b"..") for seg in rel_bytes.split(b"/")):
        return None
    if rel_bytes.split(b"/", 1)[0] == STORE_DIR.encode():
        return None  # the content store itself is reached only through served paths
    return rel_bytes


_REVISION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def generation_tree(revision: str) -> bytes | None:
    """The root-relative directory of a generation's asset links (`adapters.assetstore`), for a
    revision that is a plain name (a commit sha, `dir-<digest>`); None for anything else."""
    if not _REVISION.fullmatch(revision):
        return None
    return f"{STORE_DIR}/generations/{revision}".encode()


def confined(resolved: bytes, root: bytes, allow_outside: frozenset[bytes]) -> bool:
    """Whether a resolved (symlink-free, normalised) path may be served: strictly inside
    `root`, or one of the `allow_outside` files."""
    inside = resolved != root and resolved.startswith(root.rstrip(b"/") + b"/")
    return inside or resolved in allow_outside


def ipxe_binary(path: str, files: BootFiles) -> str | None:
    """The iPXE binary `path` (`/assets/ipxe/<name>`, revision stripped) names when it is one of
    the site's boot files, else None."""
    if not path.startswith(IPXE_ASSETS):
        return None
    name = path[len(IPXE_ASSETS) :]
    return name if name and name in (files.bios, files.uefi_x64, files.uefi_arm64, files.uefi_ia32) else None
