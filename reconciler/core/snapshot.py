"""Snapshot: the repository files of one revision, as bytes, plus what the reader refused.

A snapshot is what the loader reads; it is produced by `adapters.dirsource` (a plain
directory or work tree) or `adapters.gitsource` (a commit's tree, no checkout). This module
says which paths belong to the repository format (CONTRACT §1) and the limits every reader
enforces, so both readers refuse the same things.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from reconciler.core.codes import issue
from reconciler.core.model import Issue, Location

MAX_FILE_BYTES = 1024 * 1024

SITE_FILE = "netboot.yaml"
ASSETS_FILE = "assets.yaml"
SECRETS_FILE = "secrets.yaml"

_KIND_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("node", re.compile(r"^nodes/[^/]+\.ya?ml$")),
    ("profile", re.compile(r"^profiles/[^/]+\.(ya?ml|json)$")),
    ("group", re.compile(r"^groups/[^/]+\.(ya?ml|json)$")),
    ("cloud-init", re.compile(r"^cloud-init/[^/]+\.ya?ml$")),
    ("keyring", re.compile(r"^keys/[^/]+\.(gpg|asc)$")),  # OpenPGP keys that sign asset checksums
    # matchbox's template directories: any file name (matchbox reads `ignition/<ignition_id>`).
    ("ignition", re.compile(r"^ignition/[^/.][^/]*$")),
    ("generic", re.compile(r"^generic/[^/.][^/]*$")),
)


def kind_of(path: str) -> str | None:
    """The document kind of a repo-relative path, or None when the format does not read it.
    Not remembered: a cache of every path's was ~120 bytes a node file in each process (issue 25);
    a validation asks once per path, and a one-node commit's only for the changed files."""
    if path == SITE_FILE:
        return "site"
    if path == ASSETS_FILE:
        return "assets"
    if path == SECRETS_FILE:
        return "secrets"
    for kind, pattern in _KIND_PATTERNS:
        if pattern.match(path):
            return kind
    return None


_CANDIDATE_DIRS = ("nodes", "profiles", "groups", "cloud-init", "keys", "ignition", "generic")


def is_candidate_dir(path: str) -> bool:
    """Whether a directory may hold files the format reads (readers prune everything else)."""
    return path == "" or path in _CANDIDATE_DIRS


_EXTENSIONS = {"nodes": ".yaml or .yml", "profiles": ".yaml, .yml or .json", "groups": ".yaml, .yml or .json",
               "cloud-init": ".yaml or .yml", "keys": ".gpg or .asc", "ignition": "any name",
               "generic": "any name"}


def not_read(path: str, is_dir: bool) -> Issue | None:
    """A warning for a path the format does not read but that looks meant to be read (`node/`,
    `nodes/rack1/`, `nodes/a.json`, `netboot.yml`); None for anything else (README.md, .github/).

    Readers call it for what they skip: without it, a node in the wrong place is silently not
    declared, and its machine gets no reservation and no boot."""
    parent, name = posixpath.split(path)
    if parent in _CANDIDATE_DIRS:
        if is_dir:
            return _unread(path + "/", f"only files directly in {parent}/ are read, not subdirectories")
        if re.search(r"\.(ya?ml|json)$", name, re.IGNORECASE):
            return _unread(path, f"files in {parent}/ are read when they end in {_EXTENSIONS[parent]}")
        return None
    if parent:
        return None
    known = list(_CANDIDATE_DIRS) if is_dir else [SITE_FILE, ASSETS_FILE, SECRETS_FILE]
    close = difflib.get_close_matches(name.lower().replace("_", "-"), known, n=1, cutoff=0.75)
    if not close:
        return None
    return _unread(path + ("/" if is_dir else ""), f"did you mean {close[0]}{'/' if is_dir else ''}?")


def _unread(path: str, why: str) -> Issue:
    return issue("not-read", Location(path.rstrip("/")), f"{path} is not read: {why}")


def escaped(path: str) -> str | None:
    """None for a UTF-8 path; else (a name whose bytes are not UTF-8: readers get names decoded as
    `os.fsdecode` decodes them, those bytes as surrogate escapes) the path as findings show it,
    those bytes written as `\\xff`. Readers never put such a path in a snapshot: a UTF-8 file
    holds it nowhere, and a finding naming it must print."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return os.fsencode(path).decode(errors="backslashreplace")
    return None


def refused(path: str, code: str, message: str) -> Issue:
    return issue(code, Location(path), message)


def refuse_symlink(path: str) -> Issue:
    return refused(path, "symlink", "symbolic links are refused: commit the file itself")


def refuse_special(path: str, mode: int) -> Issue:
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return refused(path, "special-file", f"{path} is {kind}: only regular files are read")


def refuse_submodule(path: str) -> Issue:
    return refused(path, "submodule", "submodules are refused: the repository must hold its files")


def refuse_name_encoding(shown: str) -> Issue:
    """A path the format would read whose name is not UTF-8 (`shown`: as `escaped` gives it)."""
    return refused(shown, "file-name-encoding", f"{shown}: the name is not UTF-8 (such bytes shown as \\xNN): "
                   "file names must be UTF-8")


def bad_name(path: str, is_dir: bool) -> Issue | None:
    """What a reader says of `path` whose name is not UTF-8 (`escaped` is not None), which it
    puts in no snapshot: a refusal (an error) where the format would read it as a file, the
    `not_read` warning where that warns, else nothing; the path shown as `escaped` gives it."""
    shown = escaped(path) or path
    if not is_dir and kind_of(path) is not None:
        return refuse_name_encoding(shown)
    return not_read(shown, is_dir)


def refuse_size(path: str, size: int) -> Issue:
    return refused(path, "file-too-large", f"{size} bytes is over the {MAX_FILE_BYTES} byte limit")


class Changes(NamedTuple):
    """What a reader knows of a snapshot against the one it read before (`Snapshot.changes`)."""

    base: str  # the revision of that snapshot
    paths: tuple[str, ...]  # the only paths whose bytes may differ; the paths and their order are base's


@dataclass(frozen=True)
class Snapshot:
    """One revision's repository files (only the paths `kind_of` accepts)."""

    revision: str
    files: Mapping[str, bytes]
    refused: tuple[Issue, ...] = ()
    unread: tuple[Issue, ...] = ()  # warnings for paths that look meant to be read (`not_read`)
    origin: str = ""  # a human-readable source: a path or URL and ref
    extra: Mapping[str, str] = field(default_factory=dict)
    # Set by a reader that knows it (`with_changes`: adapters.gitsource), for daemon.snapdelta's
    # `between`, which then looks at those paths alone. Not a part of the value (a snapshot read
    # from scratch is equal), and not carried by `dataclasses.replace` (another snapshot's files).
    changes: Changes | None = field(default=None, init=False, compare=False, repr=False)

    def with_changes(self, changes: Changes) -> Snapshot:
        """This snapshot, saying what changed since `changes.base` (set once, by its reader)."""
        object.__setattr__(self, "changes", changes)
        return self
