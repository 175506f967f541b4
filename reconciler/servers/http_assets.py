"""Boot assets under `--assets-dir`: safe path resolution and conditional/ranged file responses.

Called by the boot WSGI app (`reconciler.servers.http`) for `/assets/<path>` and
`/r/<sha>/assets/<path>`. Range (206/416), ETag, Last-Modified and 304 come from werkzeug's
`Response.make_conditional`; `core.asset_paths` decides which paths may name a file; this module
resolves and opens it and hands the open file to waitress as `wsgi.file_wrapper`, so the body
(full or a range: the file is seeked to the range start and waitress sends `Content-Length`
bytes from there) is streamed by waitress's I/O thread and never holds a worker thread. The
caller learns how much of a body was sent when the transfer ends (`on_end`): waitress closes the
wrapper once the last byte went out or when the client went away, and its `remain` then is what
was not handed to the socket. Bytes the kernel holds in the socket's buffers (a few MiB on a
fast link) count as sent: a client breaking off in its last few MiB is not told apart.

Storage: a path `assets sync` or the daemon manages is a hard link into the content store under
the root (`adapters.assetstore`); a request for revision R is answered from R's tree of links
first, so `/r/<R>/assets/...` serves R's bytes for as long as R is kept.

Safety: a request never leaves the assets root. Encoded slashes, backslashes and NULs in the raw
URI, `.`/`..`/empty segments, absolute paths and symlinks resolving outside the root all give
404, as do directories (no listings) and anything that is not a regular file. The one exception
is a root made with `allow_outside`: exactly those files (Debian's `/usr/lib/ipxe/ipxe.efi` is a
symlink to `/boot/ipxe.efi`) may be reached through a symlink in the root, as over TFTP.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from waitress.buffers import ReadOnlyFileBasedBuffer
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wrappers import Response

from reconciler.core import asset_paths

BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class OpenAsset:
    file: IO[bytes]
    size: int
    mtime: float
    etag: str
    mimetype: str


class AssetRoot:
    """The assets directory, resolved once; `open()` is the only way in."""

    def __init__(self, root: os.PathLike[str] | str, allow_outside: Sequence[os.PathLike[str] | str] = ()) -> None:
        self.root = os.fsencode(os.path.realpath(root))
        self.allow_outside = frozenset(os.fsencode(os.path.realpath(p)) for p in allow_outside)

    def open(self, rel: str, raw_uri: str, revision: str | None = None) -> OpenAsset | None:
        """Open `rel` (the decoded path after `/assets/`) when it is a regular file inside the root.

        With a `revision`, the file that generation synced (`<root>/.netboot/generations/<revision>/`,
        links into the content store) comes first: a path whose content changed in a later commit
        keeps its old bytes for a machine installing from the older generation. Files the
        generation did not sync (placed by hand) come from the root itself."""
        rel_bytes = asset_paths.relative_path(rel, raw_uri)
        if rel_bytes is None:
            return None
        tree = asset_paths.generation_tree(revision) if revision else None
        if tree is not None:
            opened = self._open(os.path.join(self.root, tree, rel_bytes))
            if opened is not None:
                return opened
        return self._open(os.path.join(self.root, rel_bytes))

    def _open(self, path: bytes) -> OpenAsset | None:
        real = os.path.realpath(path)
        if not asset_paths.confined(real, self.root, self.allow_outside):
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            f = os.fdopen(fd, "rb")
        except OSError:
            os.close(fd)
            return None
        mimetype = mimetypes.guess_type(os.fsdecode(real))[0] or "application/octet-stream"
        etag = f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"
        return OpenAsset(f, st.st_size, st.st_mtime, etag, mimetype)


# Called once when a body's transfer ends: (bytes sent, bytes the response promised).
OnEnd = Callable[[int, int], None]


def asset_response(environ: dict[str, Any], asset: OpenAsset, on_end: OnEnd | None = None) -> Response:
    """A conditional, ranged response streaming `asset` through `wsgi.file_wrapper`.

    The response owns the file: it is closed by waitress after sending, or here when no body is sent.
    `on_end` is called when a body's transfer ends, complete or not (never for a response without
    a body: HEAD, 304, 416).
    """
    resp = Response(status=200, mimetype=asset.mimetype, direct_passthrough=True)
    resp.content_length = asset.size
    resp.last_modified = asset.mtime  # type: ignore[assignment]
    resp.set_etag(asset.etag)
    try:
        resp.make_conditional(_range_as_rfc9110(environ, asset.size), accept_ranges=True, complete_length=asset.size)
    except RequestedRangeNotSatisfiable:
        asset.file.close()
        body = b"requested range not satisfiable\n"
        out = Response(body, status=416, mimetype="text/plain")
        out.headers["Content-Range"] = f"bytes */{asset.size}"
        out.accept_ranges = "bytes"
        return out
    if resp.status_code not in (200, 206) or environ["REQUEST_METHOD"] == "HEAD":
        asset.file.close()
        resp.response = []
        return resp
    start = 0
    if resp.status_code == 206:
        cr = resp.content_range
        start = cr.start or 0
    asset.file.seek(start)
    length = resp.content_length or 0
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is ReadOnlyFileBasedBuffer and on_end is not None:
        resp.response = cast(Any, _WatchedBuffer(asset.file, BLOCK_SIZE, length, on_end))
    elif wrapper is not None:
        resp.response = wrapper(asset.file, BLOCK_SIZE)
    else:  # not waitress (a test harness): a plain iterator with the same bound
        resp.response = _FileIter(asset.file, length, on_end)
    return resp


class _WatchedBuffer(ReadOnlyFileBasedBuffer):
    """waitress's file wrapper, telling `on_end` when the channel closes it (the body sent, or the
    client gone) how much went out: `remain` counts down as the socket takes bytes, whether
    waitress's channel or `servers.http.StreamingChannel` (sendfile) sends them."""

    def __init__(self, file: IO[bytes], block_size: int, length: int, on_end: OnEnd) -> None:
        super().__init__(cast(Any, file), block_size)
        self._length = length
        self._on_end: OnEnd | None = on_end

    def close(self) -> None:
        on_end, self._on_end = self._on_end, None
        remain = getattr(self, "remain", self._length)  # set by prepare(), when waitress took the body
        super().close()
        if on_end is not None:
            on_end(min(self._length, max(0, self._length - remain)), self._length)


_SUFFIX = re.compile(r"\s*bytes\s*=\s*-\s*(\d+)\s*", re.IGNORECASE)


def _range_as_rfc9110(environ: dict[str, Any], size: int) -> dict[str, Any]:
    """Two cases where werkzeug answers 416 and RFC 9110 (14.1.2, 14.2) wants the bytes.

    A suffix range longer than the file selects the whole file; several ranges may be ignored
    (whole file, 200) rather than refused: this server does not send multipart/byteranges.
    """
    value = environ.get("HTTP_RANGE")
    if not value:
        return environ
    if "," in value:
        return {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
    suffix = _SUFFIX.fullmatch(value)
    if suffix is not None and size > 0 and int(suffix.group(1)) > size:
        return {**environ, "HTTP_RANGE": "bytes=0-"}
    return environ


class _FileIter:
    """The body as a WSGI iterable of at most `length` bytes, for servers without `wsgi.file_wrapper`;
    closing it closes the file and tells `on_end` how much was handed over."""

    def __init__(self, f: IO[bytes], length: int, on_end: OnEnd | None) -> None:
        self._file = f
        self._length = length
        self._sent = 0
        self._on_end = on_end

    def __iter__(self) -> Iterator[bytes]:
        while self._sent < self._length:
            chunk = self._file.read(min(BLOCK_SIZE, self._length - self._sent))
            if not chunk:
                break
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        on_end, self._on_end = self._on_end, None
        self._file.close()
        if on_end is not None:
            on_end(self._sent, self._length)
