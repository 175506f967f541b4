"""HTTP(S) downloads of boot assets: streamed, hashed while streaming, resumed with Range.

Called by `adapters.assetsync`. A download goes to `<store>/.netboot/partial/<sha256>` (never a
served name), is hashed as it arrives, fsynced, and handed back only when its digest is the one
expected; a mismatch deletes it. An interrupted download (a timeout, a closed connection) keeps
its partial file, and the next attempt hashes what is there and asks for the rest with `Range`.
Every failure is an `AssetError` whose message says what happened in words a user can act on.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

CHUNK = 1 << 20
SMALL_LIMIT = 1 << 20  # checksums files and signatures
MAX_REDIRECTS = 10

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


class AssetError(Exception):
    """One asset could not be fetched, verified or extracted; the message says why. Worth trying
    again later (a timeout, a 404, a full disk) unless it is an `AssetInvalid`."""


class AssetInvalid(AssetError):
    """The bytes are not what the manifest says (digest, signature, a file the ISO lacks): trying
    again gets the same answer until assets.yaml or the upstream changes."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS
    max_repeats = 2


_OPENER = urllib.request.build_opener(_Redirects())


def _open(url: str, timeout: float, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    if not url.startswith(("http://", "https://")):  # the schema allows ftp:// too; urllib's is not streamed well
        raise AssetError(f"{url}: only http:// and https:// URLs are fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "netboot-reconcile", **(headers or {})})  # noqa: S310
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise AssetError(f"{url}: redirect loop or too many redirects (HTTP {exc.code})") from None
        if exc.code == 416:
            raise
        raise AssetError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise AssetError(f"{url}: {_why(exc.reason)}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise AssetError(f"{url}: {_why(exc)}") from None
    return response  # type: ignore[no-any-return]


def _why(reason: object) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out (no answer within the timeout)"
    return str(reason)


def fetch_small(url: str, timeout: float) -> bytes:
    """A small file (a checksums list, a signature), whole, or AssetError."""
    with _open(url, timeout) as response:
        try:
            data = response.read(SMALL_LIMIT + 1)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise AssetError(f"{url}: {_why(exc)}") from None
    if len(data) > SMALL_LIMIT:
        raise AssetError(f"{url}: larger than {SMALL_LIMIT} bytes; not a checksums file or signature")
    return data


def download(
    url: str,
    partial: Path,
    sha256: str,
    timeout: float,
    progress: Progress | None = None,
    size: int | None = None,
) -> int:
    """Download `url` into `partial` until it holds the bytes whose digest is `sha256`; returns the
    size. AssetError otherwise (a mismatch deletes the partial file, an interruption keeps it)."""
    hasher = hashlib.sha256()
    have = 0
    if partial.exists():
        with open(partial, "rb") as fh:
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
                have += len(chunk)
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, timeout, headers)
    except urllib.error.HTTPError:  # 416: what we hold is not a prefix of this file (or is all of it)
        if hasher.hexdigest() == sha256:
            return have
        partial.unlink(missing_ok=True)
        return download(url, partial, sha256, timeout, progress, size)
    with response:
        if have and response.status != 206:
            hasher, have = hashlib.sha256(), 0  # the server ignored Range: start over
            mode = "wb"
        else:
            mode = "ab" if have else "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        if size is not None and total is not None and total != size:
            raise AssetInvalid(f"{url}: the server says {total} bytes, assets.yaml says size {size}")
        if total is not None:
            _check_space(partial.parent, total - have, url)
        got = have
        try:
            with open(partial, mode) as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except http.client.IncompleteRead as exc:
                        _write(out, exc.partial, partial, url)
                        hasher.update(exc.partial)
                        raise AssetError(
                            f"{url}: truncated: the connection closed after {got + len(exc.partial)} "
                            f"of {total} bytes (kept; the next sync resumes)") from None
                    except (TimeoutError, OSError, http.client.HTTPException) as exc:
                        raise AssetError(
                            f"{url}: {_why(exc)} after {got} bytes (kept; the next sync resumes)") from None
                    if not chunk:
                        break
                    _write(out, chunk, partial, url)
                    hasher.update(chunk)
                    got += len(chunk)
                    if progress is not None:
                        progress(got, total)
                out.flush()
                os.fsync(out.fileno())
        except AssetError:
            raise
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise AssetError(f"{url}: writing {partial}: {exc.strerror or exc}") from None
    if total is not None and got != total:
        raise AssetError(f"{url}: truncated: got {got} of {total} bytes (kept; the next sync resumes)")
    digest = hasher.hexdigest()
    if digest != sha256:
        partial.unlink(missing_ok=True)
        raise AssetInvalid(f"{url}: sha256 mismatch: got {digest}, expected {sha256} ({got} bytes; deleted)")
    return got


def _write(out: IO[bytes], data: bytes, partial: Path, url: str) -> None:
    try:
        out.write(data)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            out.close()
            partial.unlink(missing_ok=True)
            raise AssetError(
                f"{url}: the disk is full (writing {partial.parent}); the partial download is deleted") from None
        raise


def _check_space(directory: Path, need: int, url: str) -> None:
    free = shutil.disk_usage(directory).free
    if need > free:
        raise AssetError(f"{url}: needs {need} bytes, {directory} has {free} free")
