"""A loose git object's bytes read without libgit2, the GIL let go while they are read, inflated
and hashed (issue 25).

Called by adapters.gitsource for the tree object of each directory a commit changed (it compares
the bytes with the last ones: adapters.rawtree). A directory of 10,000 node files is one tree
object of ~430 KB; `Odb.read` inflated and hashed it in 2.9 ms holding the GIL, which the HTTP,
TFTP and DHCP threads then waited for; here 2.0 ms, most of it in zlib and hashlib, which let
the GIL go for buffers this size.

The object is checked as libgit2 checks it: its header names the kind and length, and its hash
is the id. SHA-1 is computed plainly (hashlib), without libgit2's collision detection: that guards
objects entering a repository (git and libgit2 both run it when they write or fetch one); here
the object is already in the object store, and the check is that its bytes are the ones its name
says. Anything else (a packed object, another object store through alternates, a hash that does
not match, bytes that do not inflate) gives None: the caller reads it through libgit2, which
raises on a corrupt object.
"""

from __future__ import annotations

import hashlib
import os
import zlib

_HASHES = {20: "sha1", 32: "sha256"}  # the id's length -> the repository's object format


def read(objects: str, kind: bytes, oid: bytes) -> bytes | None:
    """The body of loose object `oid` (its id's bytes) of `kind` (b"tree", ...) under the object
    directory `objects`, checked; None when it is not there as a loose object or does not check."""
    algorithm = _HASHES.get(len(oid))
    if algorithm is None:
        return None
    name = oid.hex()
    try:
        with open(os.path.join(objects, name[:2], name[2:]), "rb") as f:
            stored = f.read()
        data = zlib.decompress(stored)
    except (OSError, zlib.error):
        return None
    header, nul, body = data.partition(b"\0")
    if not nul or header != kind + b" " + str(len(body)).encode() or hashlib.new(algorithm, data).digest() != oid:
        return None
    return body
