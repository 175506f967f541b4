"""ValidateMemo: what a long-lived process keeps between validations, so that a file whose bytes
did not change is neither parsed nor checked against its schema again.

Passed by the daemon's long-lived worker to `core.validate.validate(snapshot, memo=...)`; read by
`core.build.parse_all`. Kept in memory as the Python objects themselves: pickled to disk, a parsed
document cost as much to load as to parse (33c7946). A document's schema findings are kept on the
Document (`Document.checked`, kept by `core.build`), so a kept document carries them along.
Also each node file's built Node (`core.build.nodes`), by the very Document it was built from: an
unchanged file gives the same Node object every commit, so the render memo's identity shortcut
(`NodeMemo.last`) applies instead of a digest of the node. One validation at a time per memo.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from ipaddress import IPv4Address
from typing import cast

from reconciler.core.model import CloudInitTemplate, Group, Issue, Node, Profile
from reconciler.core.yamldoc import Document

Parsed = tuple[Document | None, tuple[Issue, ...]]
# What one node file gives on its own (`core.build.node_of`): findings before the duplicate check,
# whether it reaches that check, the Node (None: not built) and findings after it.
BuiltNode = tuple[tuple[Issue, ...], bool, Node | None, tuple[Issue, ...]]
# What `ValidateMemo` keeps of a path: its last bytes, their Document and findings, what the file
# built last as a node file (a Node alone for a node with no findings; None: not built) and the
# Document it was built from.
Kept = tuple[bytes, Document | None, tuple[Issue, ...], BuiltNode | Node | None, Document | None]


class BootMemo:
    """One site's boot-template renders per node (`core.bootcheck`): node name -> (the Node, its
    profile's generation, and either what checking its renders did, a tuple (`bootcheck.Trace`),
    replayed instead of checking again while `listed` (assets.yaml's paths) is the same, or what
    each template render gave, a list in call order, or None). A profile's generation changes
    whenever its value, its document (the lines findings point at) or its cloud-init template's
    changes; `site` and `secrets` are what every kept render was made with (a change empties it).
    (One dict, not one for renders and one for traces: issue 25, ~33 bytes a node.)"""

    def __init__(self) -> None:
        self.site: object = None
        self.secrets: object = None
        self.profiles: dict[str, tuple[Profile, CloudInitTemplate | None, object, int]] = {}
        self.kept: dict[str, tuple[Node, int, tuple[tuple[object, ...], ...] | list[object] | None]] = {}
        self.listed: object = None
        self.stand_in = ""  # what renders of templates naming the revision are made at (`core.bootcheck`)
        self.generations = 0
        self.hits = 0
        self.replayed = 0
        self.index: object = None  # the last pass over the nodes (`core.bootpass`), while nothing else changed these
        self.unfinished = False  # a pass began and has not reached `finish` (core.bootcheck)


class CrossMemo:
    """`core.crossref`'s per-node findings between validations, by the Node objects they were
    made for (kept here, so their ids stay theirs): a node the validation memo hands back as the
    same object is not checked again while what its findings depend on is unchanged (`key`,
    `groups_key`); the duplicate checks run on an index of who holds each MAC, address and name."""

    def __init__(self) -> None:
        self.groups_key: list[tuple[Group, Document | None]] | None = None  # what `grouped` was made with
        # by node (ids of the nodes `grouped_listed` holds, which keeps them): non-empty only
        self.grouped: dict[int, tuple[Issue, ...]] = {}
        self.grouped_listed: tuple[Node, ...] | None = None  # the nodes `grouped` was made for, in their order
        self.reset()

    def reset(self) -> None:
        """Forget the nodes' own findings and the index (not `grouped`)."""
        self.key: object = None  # what `own` was made with: the profile names and the sites
        self.nodes: dict[int, Node] = {}
        self.own: dict[int, tuple[Issue, ...]] = {}  # non-empty only
        # field -> value -> its node, or its nodes (two or more) in the order they came (`crossref._hold`)
        self.holders: dict[str, dict[str | IPv4Address, Node | list[Node]]] = {}
        self.dups: dict[int, dict[str, Issue]] = {}  # node -> field -> its duplicate finding; non-empty only
        self.listed: tuple[Node, ...] | None = None  # the nodes `nodes` holds, in their order (None: unknown)


class BmcMemo:
    """`core.bmcinherit`'s last outcome: the nodes it was given (kept here, so ids stay theirs),
    what each resolved to, and the findings by position (non-empty only); valid while the groups
    giving `bmc:` and their documents are the same (`key`)."""

    def __init__(self) -> None:
        self.key: list[tuple[Group, Document | None]] | None = None
        self.nodes: list[Node] = []
        self.resolved: list[Node] = []
        self.found: dict[int, tuple[Issue, ...]] = {}


class ValidateMemo:
    """Each path's last bytes and what parsing them gave."""

    def __init__(self) -> None:
        # by path (`Kept`): one tuple a file, not four (issue 25: ~200 bytes a node file), and in
        # the common case the Document alone (`_packed`)
        self._kept: dict[str, Kept | Document] = {}
        self.boot: dict[str, BootMemo] = {}  # by site name
        self.crossref = CrossMemo()
        self.bmc = BmcMemo()
        # `core.build.parse_all`'s last outcome: the files, their documents, each file's findings
        # (non-empty only); and the paths whose documents it parsed anew (None: it parsed all)
        self.last_parse: tuple[Mapping[str, bytes], dict[str, Document], dict[str, tuple[Issue, ...]]] | None = None
        # Set by a caller that knows what the next snapshot changed (the daemon's worker, from the
        # daemon's delta: daemon.snapdelta), for the next `parse_all` only: the files of the
        # snapshot before, those of the next one, and the only paths where the two may differ, in
        # the next one's order (removed paths after). The caller also promises that neither
        # mapping changes afterwards: `parse_all` then keeps the files without a copy.
        self.since: tuple[Mapping[str, bytes], Mapping[str, bytes], tuple[str, ...]] | None = None
        self.changed: list[str] | None = None
        self.paths = 0  # counts the snapshots whose paths `parse_all` found new (not those of the last)
        # what `core.validate` made of the paths alone while `paths` was this count: (count, value)
        self.of_paths: tuple[int, object] | None = None
        self.templates: tuple[int, tuple[str, ...]] | None = None  # the same: the templates' paths
        # `core.build.nodes`' last outcome: its nodes, each one's place among them by name (only
        # the names of one node file: a count of each name's files besides was ~33 bytes a node),
        # and each node file's findings (non-empty only)
        self.last_nodes: tuple[list[Node], dict[str, int], dict[str, tuple[Issue, ...]]] | None = None
        # `core.validate`'s last node tuples: in build order and sorted by name; and the count of
        # the sorted nodes by (site, profile) (None while it is being updated)
        self.by_name: tuple[tuple[Node, ...], tuple[Node, ...]] | None = None
        self.at_site: tuple[tuple[Node, ...], dict[tuple[str, str], int]] | None = None
        self.hits = 0
        self.misses = 0

    def parse(self, path: str, content: bytes, parse: Callable[[str, bytes], Parsed]) -> Parsed:
        """`parse(path, content)`, or what it gave for the same bytes at this path last time."""
        kept = self._kept.get(path)
        if kept is not None:
            entry = _unpacked(kept)
            if entry[0] is content or entry[0] == content:
                self.hits += 1
                return entry[1], entry[2]
        self.misses += 1
        parsed = parse(path, content)
        self._kept[path] = (content, *parsed, None, None) if kept is None else (content, *parsed, *_unpacked(kept)[3:])
        return parsed

    def node(self, path: str, doc: Document, build: Callable[[str, Document], BuiltNode]) -> BuiltNode:
        """`build(path, doc)`, or what it gave for this very Document (a kept parse) at this path."""
        kept = self._kept.get(path)
        entry = _unpacked(kept) if kept is not None else None
        if entry is not None and entry[4] is doc and entry[3] is not None:
            return _built(entry[3])
        built = build(path, doc)
        if entry is not None:  # (a file never parsed here is built each time)
            node = built[2]
            made = node if node is not None and built == ((), True, node, ()) else built
            self._kept[path] = _packed((*entry[:3], made, doc))
            if node is not None and entry[1] is doc:
                doc.thin("bmc")  # all the validation reads of it again (core.bmcinherit); the Node holds the rest
        return built

    def built(self, path: str) -> BuiltNode | None:
        """What the node file at `path` gave last (None: not built)."""
        kept = self._kept.get(path)
        made = _unpacked(kept)[3] if kept is not None else None
        return _built(made) if made is not None else None

    def keep_only(self, paths: Collection[str]) -> None:
        """Forget the files a snapshot no longer has (deleted, renamed); given none (the daemon's
        check found the memo's outcome wrong), forget everything, what was made of them too."""
        for path in [p for p in self._kept if p not in paths]:
            del self._kept[path]
        if not paths:
            self.boot, self.crossref, self.bmc = {}, CrossMemo(), BmcMemo()
            self.last_parse, self.changed, self.last_nodes = None, None, None
            self.by_name = self.at_site = None


def _unpacked(kept: Kept | Document) -> Kept:
    """A path's entry in `ValidateMemo._kept` as the tuple it stands for (`_packed`)."""
    if type(kept) is Document:
        return cast(bytes, kept.source), kept, (), cast(Node, kept.made), kept
    return cast(Kept, kept)


def _packed(entry: Kept) -> Kept | Document:
    """What `ValidateMemo._kept` holds for `entry`: in the common case (a file whose bytes are its
    Document's source, parsed and built as a node with no findings) the Document alone, its Node
    kept on it (`Document.keep_made`); else the tuple."""
    content, doc, issues, made, built_from = entry
    if doc is not None and built_from is doc and not issues and type(made) is Node and doc.source is content:
        doc.keep_made(made)
        return doc
    return entry


def _built(kept: BuiltNode | Node) -> BuiltNode:
    """A node file's BuiltNode from what `ValidateMemo` keeps of it: a Node alone stands for a
    node built with no findings."""
    return kept if type(kept) is tuple else ((), True, cast(Node, kept), ())
