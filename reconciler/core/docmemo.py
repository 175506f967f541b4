"""ValidateMemo: what a long-lived process keeps between validations, so that a file whose bytes
did not change is neither parsed nor checked against its schema again.

Passed by the daemon's long-lived worker to `core.validate.validate(snapshot, memo=...)`; read by
`core.build.parse_all`. Kept in memory as the Python objects themselves: pickled to disk, a parsed
document cost as much to load as to parse (33c7946). A document's schema findings are kept on the
Document (`Document.checked`, filled by `core.build`), so a kept document carries them along.
Also each node file's built Node (`core.build.nodes`), by the very Document it was built from: an
unchanged file gives the same Node object every commit, so the render memo's identity shortcut
(`NodeMemo.last`) applies instead of a digest of the node. One validation at a time per memo.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from reconciler.core.model import CloudInitTemplate, Issue, Node, Profile
from reconciler.core.yamldoc import Document

Parsed = tuple[Document | None, tuple[Issue, ...]]
# What one node file gives on its own (`core.build.node_of`): findings before the duplicate check,
# whether it reaches that check, the Node (None: not built) and findings after it.
BuiltNode = tuple[tuple[Issue, ...], bool, Node | None, tuple[Issue, ...]]


class BootMemo:
    """One site's boot-template renders per node (`core.bootcheck`): node name -> (the Node, its
    profile's generation, what each template render gave, in call order). A profile's generation
    changes whenever its value or its cloud-init template's does; `site` and `secrets` are what
    every kept render was made with (a change empties it)."""

    def __init__(self) -> None:
        self.site: object = None
        self.secrets: object = None
        self.profiles: dict[str, tuple[Profile, CloudInitTemplate | None, int]] = {}
        self.kept: dict[str, tuple[Node, int, list[object]]] = {}
        self.generations = 0
        self.hits = 0


class ValidateMemo:
    """Each path's last bytes and what parsing them gave."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[bytes, Parsed]] = {}
        self._nodes: dict[str, tuple[Document, BuiltNode]] = {}
        self.boot: dict[str, BootMemo] = {}  # by site name
        self.hits = 0
        self.misses = 0

    def parse(self, path: str, content: bytes, parse: Callable[[str, bytes], Parsed]) -> Parsed:
        """`parse(path, content)`, or what it gave for the same bytes at this path last time."""
        kept = self._kept.get(path)
        if kept is not None and (kept[0] is content or kept[0] == content):
            self.hits += 1
            return kept[1]
        self.misses += 1
        parsed = parse(path, content)
        self._kept[path] = (content, parsed)
        return parsed

    def node(self, path: str, doc: Document, build: Callable[[str, Document], BuiltNode]) -> BuiltNode:
        """`build(path, doc)`, or what it gave for this very Document (a kept parse) at this path."""
        kept = self._nodes.get(path)
        if kept is not None and kept[0] is doc:
            return kept[1]
        built = build(path, doc)
        self._nodes[path] = (doc, built)
        return built

    def keep_only(self, paths: Collection[str]) -> None:
        """Forget the files a snapshot no longer has (deleted, renamed)."""
        for path in [p for p in self._kept if p not in paths]:
            del self._kept[path]
        for path in [p for p in self._nodes if p not in paths]:
            del self._nodes[path]
