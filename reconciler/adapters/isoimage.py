"""Files read out of an ISO 9660 image without mounting it (pycdlib): Rock Ridge, Joliet or
plain ISO 9660 names, in that order of preference.

Called by `adapters.assetsync` for assets.yaml entries with `from` + `file`. The file is copied
to a temporary name in the store, hashed on the way, and fsynced; a symbolic link inside the
image, a directory, a name the image does not hold, or an image shorter than its volume descriptor
says (pycdlib would read its files cut short without a word) is an `AssetInvalid`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO, cast

from reconciler.adapters.assetfetch import CHUNK, AssetError, AssetInvalid


class _Hashing:
    def __init__(self, out: Any) -> None:
        self.out, self.hasher, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return int(self.out.write(data))


def extract(image: Path, inner: str, dest: Path, what: str) -> tuple[str, int]:
    """Copy `inner` (a path inside `image`) to `dest`; returns (sha256, size)."""
    import pycdlib  # here, not at import: the CLI and the daemon load this module on every start
    from pycdlib.pycdlibexception import PyCdlibException

    name = "/" + inner.strip("/")
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(image))
    except (PyCdlibException, OSError) as exc:
        raise AssetInvalid(f"{what}: {image.name} is not a readable ISO 9660 image: {exc}") from None
    try:
        declared = iso.pvd.space_size * iso.pvd.logical_block_size()
        actual = os.path.getsize(image)
        if actual < declared:  # pycdlib reads a cut-short file silently as a shorter one
            raise AssetInvalid(f"{what}: {image.name} is cut short ({actual} of the {declared} bytes its volume "
                               "descriptor declares)")
        where, record = _find(iso, name)
        if record is None:
            raise AssetInvalid(f"{what}: the image has no file {inner}")
        if "rr_path" in where and record.is_symlink():
            target = record.rock_ridge.symlink_path().decode("utf-8", "replace")
            raise AssetInvalid(f"{what}: {inner} is a symbolic link in the image (to {target}); name the file itself")
        if record.is_dir():
            raise AssetInvalid(f"{what}: {inner} is a directory in the image")
        expected = record.get_data_length()
        try:
            with open(dest, "wb") as fh:
                sink = _Hashing(fh)
                iso.get_file_from_iso_fp(cast(BinaryIO, sink), blocksize=CHUNK, **where)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            dest.unlink(missing_ok=True)
            raise AssetError(f"{what}: writing {dest}: {exc.strerror or exc}") from None
        if sink.size != expected:
            dest.unlink(missing_ok=True)
            raise AssetInvalid(f"{what}: {inner} is cut short in the image ({sink.size} of {expected} bytes)")
        return sink.hasher.hexdigest(), sink.size
    finally:
        iso.close()


def _find(iso: Any, name: str) -> tuple[dict[str, str], Any]:
    """How pycdlib names the file (as keyword arguments), and its record (None: no such file)."""
    if iso.has_rock_ridge():
        return {"rr_path": name}, _record(iso, rr_path=name)
    if iso.has_joliet():
        return {"joliet_path": name}, _record(iso, joliet_path=name)
    plain = _iso_name(iso, name)
    return {"iso_path": plain or name}, None if plain is None else _record(iso, iso_path=plain)


def _record(iso: Any, **where: str) -> Any:
    from pycdlib.pycdlibexception import PyCdlibException

    try:
        return iso.get_record(**where)
    except PyCdlibException:
        return None


def _iso_name(iso: Any, name: str) -> str | None:
    """The ISO 9660 identifier path (`/CASPER/VMLINUZ.;1`) of `name`, matched case-insensitively."""
    from pycdlib.pycdlibexception import PyCdlibException

    current = "/"
    for part in name.strip("/").split("/"):
        try:
            children = list(iso.list_children(iso_path=current))
        except PyCdlibException:
            return None
        for child in children:
            ident = child.file_identifier().decode("ascii", "replace")
            if ident.split(";", 1)[0].rstrip(".").lower() == part.lower():
                current = current.rstrip("/") + "/" + ident
                break
        else:
            return None
    return current
