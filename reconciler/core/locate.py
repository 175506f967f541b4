"""The one locator: where in the repository a finding about a value points.

Called by `core.crossref`, `core.bootcheck` and `core.build`: a finding about a field of a
node, group or profile is placed at that field's line, found in the document it came from
(the documents of one snapshot, kept for the validation pass).
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.model import Location, Profile
from reconciler.core.yamldoc import Document


class Locator:
    """Locations of the fields of a snapshot's documents."""

    def __init__(self, docs: Mapping[str, Document]) -> None:
        self._docs = docs

    def document(self, file: str) -> Document | None:
        """The document of `file` (None: none parsed): a kept one is the same object (`core.docmemo`)."""
        return self._docs.get(file)

    def field(self, source: Location, *path: str | int, key: bool = True) -> Location:
        """The line of the field at `path` in the document `source` points into (or `source`)."""
        doc = self._docs.get(source.file)
        return doc.loc(path, key=key) if doc is not None else source

    def arg(self, profile: Profile, index: int) -> Location:
        """The line of a profile's `boot.args[index]` (the value: args are list items)."""
        return self.field(profile.source, "boot", "args", index, key=False)

    def boot_path(self, profile: Profile, index: int) -> Location:
        """The line of a profile's boot path by its index in (kernel, *initrd)."""
        if index == 0:
            return self.field(profile.source, "boot", "kernel")
        return self.field(profile.source, "boot", "initrd", index - 1, key=False)
