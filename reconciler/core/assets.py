"""The asset manifest (assets.yaml) as values: its cross-field rules and the pure helpers of a sync.

Called by `core.validate` (`check_manifest`, for findings with file and line) and by the asset
sync (`adapters.assetsync`: `parse_checksums`, `dearmor`, `spec_key`, `store_rel`). No I/O.

An entry is fetched (`url` + `sha256`, or `url` + `checksums` [+ `signature` + `keyring`]),
extracted (`from` another entry, an ISO 9660 image, + `file` inside it), or placed by hand (path
only). A `url` nothing can verify is refused: a download that cannot be checked is never served.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping

from reconciler.core.codes import issue
from reconciler.core.model import Asset, Issue, Location

PREFIX = "/assets/"
STORE_DIR = ".netboot"  # under --assets-dir: the content store, partial downloads, generation trees

FieldLoc = Callable[[Asset, str], Location]


def rel(path: str) -> str:
    """The path under --assets-dir of a served `/assets/...` path."""
    return path[len(PREFIX) :] if path.startswith(PREFIX) else path.lstrip("/")


def store_rel(sha256: str) -> str:
    """Where content with this digest lives in the store, relative to the store directory."""
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


def check_manifest(assets: Iterable[Asset], repo_files: Mapping[str, bytes], loc: FieldLoc) -> list[Issue]:
    """The rules a schema cannot say: what a field needs beside it, and what `from` names."""
    entries = list(assets)
    by_path = {a.path: a for a in entries}
    out: list[Issue] = []

    def error(asset: Asset, field: str, code: str, message: str) -> None:
        out.append(issue(code, loc(asset, field), message))

    for a in entries:
        if a.url is not None and a.from_path is not None:
            error(a, "from", "asset-two-sources", f"{a.path}: has both url and from; an asset comes from one of them")
        if a.url is not None and a.sha256 is None and a.checksums is None:
            error(a, "url", "asset-unverifiable",
                  f"{a.path}: url without sha256 or checksums: nothing could verify the download")
        if a.url is None:
            for field, value in (("checksums", a.checksums), ("signature", a.signature)):
                if value is not None:
                    error(a, field, "asset-field-needs-url", f"{a.path}: {field} is only meaningful with a url")
        if a.signature is not None and a.checksums is None:
            error(a, "signature", "asset-signature-needs-checksums",
                  f"{a.path}: signature signs a checksums file; add checksums: (the SHA256SUMS URL)")
        if (a.signature is None) != (a.keyring is None):
            have, need = ("signature", "keyring") if a.signature is not None else ("keyring", "signature")
            error(a, have, "asset-signature-needs-keyring",
                  f"{a.path}: {have} without {need}: a signature is checked against the keys in a repository file")
        if a.keyring is not None and a.keyring not in repo_files:
            error(a, "keyring", "keyring-missing", f"{a.path}: keyring {a.keyring} is not in the repository")
        if (a.from_path is None) != (a.file is None):
            have, need = ("from", "file") if a.from_path is not None else ("file", "from")
            error(a, have, "asset-extract-incomplete", f"{a.path}: {have} without {need}")
        if a.from_path is not None:
            source = by_path.get(a.from_path)
            if source is None:
                close = [p for p in by_path if p.endswith(".iso")]
                hint = f" (ISO assets listed: {', '.join(close)})" if close else ""
                error(a, "from", "asset-from-unknown",
                      f"{a.path}: from {a.from_path}, which assets.yaml does not list{hint}")
            elif source.from_path is not None:
                error(a, "from", "asset-from-unknown",
                      f"{a.path}: from {a.from_path}, which is itself extracted from {source.from_path}, "
                      "not an ISO image")
        if a.file is not None and (".." in a.file.split("/") or a.file.startswith("/")):
            error(a, "file", "asset-path-escape", f"{a.path}: file {a.file!r} must be a relative path inside the ISO")
    return out


_SUMS_GNU = re.compile(r"^([0-9a-fA-F]{64}) [ *]?(.+)$")
_SUMS_BSD = re.compile(r"^SHA256 ?\((.+)\) ?= ?([0-9a-fA-F]{64})$")


def parse_checksums(text: str, name: str) -> str | None:
    """The sha256 a SHA256SUMS-style file (GNU `<hex> *name` or BSD `SHA256 (name) = <hex>`) gives
    for the file called `name` (a leading `./` or `*` ignored); None when it lists no such file."""
    for raw in text.splitlines():
        line = raw.strip()
        gnu = _SUMS_GNU.match(line)
        if gnu is not None:
            digest, listed = gnu.group(1), gnu.group(2)
        else:
            bsd = _SUMS_BSD.match(line)
            if bsd is None:
                continue
            listed, digest = bsd.group(1), bsd.group(2)
        listed = listed.lstrip("*")
        if listed.startswith("./"):
            listed = listed[2:]
        if listed == name:
            return digest.lower()
    return None


def url_file_name(url: str) -> str:
    """The last path segment of a URL: the name a checksums file lists it by."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    return posixpath.basename(path.rstrip("/"))


_ARMOR = re.compile(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.DOTALL)


def dearmor(data: bytes) -> bytes:
    """The binary OpenPGP packets of a key file, ASCII-armored or not (gpgv reads only binary keyrings).

    ValueError when an armored block does not decode."""
    blocks = _ARMOR.findall(data)
    if not blocks:
        return data
    out = b""
    for block in blocks:
        lines = block.replace(b"\r", b"").split(b"\n")[1:]  # [0]: the rest of the BEGIN line
        body: list[bytes] = []
        in_body = False
        for line in lines:
            if not in_body:
                if line.strip() == b"":
                    in_body = True  # armor headers (Version: ...) end at the first blank line
                continue
            if line.startswith(b"="):
                break  # the CRC24 checksum line
            body.append(line.strip())
        try:
            out += base64.b64decode(b"".join(body), validate=True)
        except ValueError as exc:
            raise ValueError(f"the armored key block does not decode: {exc}") from None
    return out


def spec_key(asset: Asset) -> str:
    """A digest of where an asset's bytes come from: a sync skips an entry whose path still holds
    what it synced for the same spec; any change (url, digest, keyring, ISO, file) syncs again."""
    keyring = hashlib.sha256(asset.keyring_data).hexdigest() if asset.keyring_data is not None else None
    spec = {
        "url": asset.url, "sha256": asset.sha256, "checksums": asset.checksums, "signature": asset.signature,
        "keyring": keyring, "from": asset.from_path, "file": asset.file,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def sync_order(assets: Iterable[Asset]) -> tuple[tuple[Asset, ...], tuple[Asset, ...]]:
    """The managed entries in two waves: downloads, then extractions (which read a downloaded or
    hand-placed image)."""
    entries = list(assets)
    return tuple(a for a in entries if a.fetched), tuple(a for a in entries if a.extracted and not a.fetched)
