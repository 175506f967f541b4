"""Rendering a node again only when what it is rendered from changed (issue 25).

Called by `render_generation` when given a `NodeMemo` (the daemon keeps one between commits,
`daemon.resident`); everything else renders every node. Every node's files carry the revision
(URLs pinned to `/r/<sha>/`, the script comments, the report token), so a node whose inputs did
not change still gets new bytes each commit; what is saved is rendering them.

How: a node is rendered once with a stand-in for the revision (`sentinel`, random, of the
revision's length and alphabet, so no committed text can hold it) and its report token at that
stand-in; later commits take those bytes and replace the stand-in by the revision and the token
by the node's token at the revision. That is exact only when the revision reaches the output as
the whole string, which our own code does (pin, comments, cloud_init_url, the webhook URL) and a
template does when it writes `{{ revision }}`, `{{ cloud_init_url }}` or `{{ report_token }}`
as they are. A node is rendered afresh (and not kept) when one of its templates uses them in any
other way (`revision[:7]`, a filter, a test); a key over the node, its profile, its cloud-init
and generic templates, the site, the report secret and secrets.yaml's values decides whether a
kept rendering still applies (a user-data holding a secret's value is kept like the generation
keeps it on disk: the memo file is mode 0600 in the state directory).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import pickle
import re
import secrets as _random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import jinja2
import jinja2.nodes

from reconciler.core import template
from reconciler.core.model import CloudInitTemplate, Node, Profile
from reconciler.core.render.chunks import Chunks
from reconciler.core.render.files import Entry, stamped
from reconciler.core.secrets import SecretValues

REVISION_VARIABLES = frozenset({"revision", "cloud_init_url", "report_token"})
_HEX = re.compile(r"[0-9a-f]+")
_PARSER = jinja2.Environment(autoescape=False)  # noqa: S701 (parses only, never renders)
# Blocks whose output a template can take and transform: a revision written inside one is not
# verbatim. A `{% block %}` is (`self.name()` renders it again as a value), and so is a recursive
# loop's body (`loop(items)`).
_CAPTURING = (jinja2.nodes.FilterBlock, jinja2.nodes.AssignBlock, jinja2.nodes.CallBlock, jinja2.nodes.Macro,
              jinja2.nodes.EvalContextModifier, jinja2.nodes.Block)

NodeFiles = dict[str, bytes]


@dataclass
class NodeMemo:
    """Node name -> (key, its files rendered at `sentinel`). A cache, not a value: the renderer
    replaces what it reads. `sentinel` is fixed for the memo's life (it is in the kept bytes)."""

    sentinel: str = ""
    entries: dict[str, Kept] = field(default_factory=dict)
    hits: int = 0  # of the last render: nodes taken from the memo, and rendered
    misses: int = 0
    code: str = ""  # the code that made it (daemon.worker): a memo of other code is not used
    chunks: Chunks = field(default_factory=dict)  # nodes' parts of the DHCP configs (`render.chunks`)
    # Node name -> the Node object and shared digests its key was last made from (not kept on disk).
    last: dict[str, tuple[Node, bytes]] = field(default_factory=dict)
    # The last generation rendered with this memo, for the next commit to patch (`render.patch`; not kept on disk).
    previous: object = None
    # What `render_served` found of the last generation's user-data (`render._still_yaml`): its
    # entries (the dict), the private paths, the ones broken by a secret (not kept on disk).
    yaml_checked: tuple[object, frozenset[str], frozenset[str]] | None = None
    # `render_served`'s private paths of the last state: its nodes, what the paths depend on
    # besides them, each path's count of nodes, the paths (not kept on disk)
    private_of: tuple[tuple[Node, ...], object, Counter[str], frozenset[str]] | None = None

    def __getstate__(self) -> dict[str, object]:
        entries = {name: self.keyed(name) for name in self.storable()}
        return {**self.__dict__, "entries": entries, "last": {}, "previous": None, "yaml_checked": None,
                "private_of": None}

    def storable(self) -> list[str]:
        """The nodes whose entries can be kept on disk: those with a key or what makes one (`keyed`)."""
        return [name for name, kept in self.entries.items() if kept.key is not None or name in self.last]

    def keyed(self, name: str) -> Kept:
        """The node's entry with its key (a `storable` one). The keys a render left to be made
        (`Kept.key` None) are made when the memo is written, from what `last` holds: a first render
        of every node does not spend its time on them; made once, kept for the next write."""
        kept = self.entries[name]
        if kept.key is None:
            kept = self.entries[name] = kept._replace(key=node_key(*self.last[name]))
        return kept

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    def sentinel_for(self, revision: str) -> str | None:
        """The stand-in for `revision` (made on first use), or None when the revision cannot have one."""
        if not _HEX.fullmatch(revision):
            return None  # the stand-in must be spelt like the revision, or quoting could differ
        if len(self.sentinel) != len(revision):
            self.sentinel = _stand_in(len(revision))
            self.entries.clear()
            self.previous = None
        return self.sentinel


_IN_USE: contextvars.ContextVar[NodeMemo | None] = contextvars.ContextVar("node_memo", default=None)


@contextlib.contextmanager
def using(memo: NodeMemo | None) -> Iterator[None]:
    """Renders in this block (`render_generation` given no memo of its own) use `memo`: how the
    daemon hands its memo to a renderer it only knows as `state -> files` (daemon.worker)."""
    token = _IN_USE.set(memo)
    try:
        yield
    finally:
        _IN_USE.reset(token)


def in_use() -> NodeMemo | None:
    return _IN_USE.get()


Spiller = Callable[[dict[str, Entry]], None]
_SPILL: contextvars.ContextVar[Spiller | None] = contextvars.ContextVar("node_spill", default=None)


@contextlib.contextmanager
def spilling(spiller: Spiller | None) -> Iterator[None]:
    """Renders in this block hand each node's entries, once rendered or adopted (the full loop,
    or rendered again by a patch: `render.patch`), to `spiller`, which may replace bytes in them
    by `files.Spilled` ones (the daemon's worker: its memo's bytes in a file, daemon.spill). The
    dict is the memo's own (`Kept.entries`)."""
    token = _SPILL.set(spiller)
    try:
        yield
    finally:
        _SPILL.reset(token)


def spiller() -> Spiller | None:
    """The enclosing `spilling` block's spiller (for a thread of this render: contexts are per thread)."""
    return _SPILL.get()


def spill(own: object) -> None:
    """`own` (a node's entries) to the enclosing `spilling` block's spiller, if any."""
    spiller = _SPILL.get()
    if spiller is not None and type(own) is dict:
        spiller(own)


def _stand_in(length: int) -> str:
    return _random.token_hex((length + 1) // 2)[:length]


@functools.lru_cache(maxsize=4096)
def verbatim_only(text: str) -> bool:
    """Whether a template uses the revision variables only as whole `{{ name }}` outputs (or not
    at all): then its output at one revision is its output at another with the one string
    replaced by the other."""
    if not template.is_template(text):
        return True
    if not any(name in text for name in REVISION_VARIABLES):
        return True
    try:
        tree = _PARSER.parse(text)
    except jinja2.TemplateSyntaxError:
        return False
    return _verbatim(tree, capturing=False, in_output=False)


def _verbatim(node: jinja2.nodes.Node, capturing: bool, in_output: bool) -> bool:
    if isinstance(node, jinja2.nodes.Name) and node.name in REVISION_VARIABLES:
        return node.ctx == "load" and in_output and not capturing
    capturing = capturing or isinstance(node, _CAPTURING) or (isinstance(node, jinja2.nodes.For) and node.recursive)
    if isinstance(node, jinja2.nodes.Output):
        for child in node.nodes:
            direct = isinstance(child, jinja2.nodes.Name)
            if not _verbatim(child, capturing, in_output=direct):
                return False
        return True
    return all(_verbatim(child, capturing, in_output=False) for child in node.iter_child_nodes())


def reusable(profile: Profile, tpl: CloudInitTemplate | None) -> bool:
    """Whether a node of `profile` may be rendered at a stand-in revision and kept."""
    texts = [profile.boot.kernel, *profile.boot.initrd, *profile.boot.args]
    if tpl is not None:
        texts.append(tpl.text)
    return all(verbatim_only(t) for t in texts)


def secrets_key(values: SecretValues) -> bytes:
    """A digest of the values `{{ secrets.NAME }}` renders to (their repr never shows them)."""
    h = hashlib.sha256(b"revealed" if values.revealed else b"placeholders")
    for mapping in (values.values, values.stable):
        for name, value in sorted(mapping.items()):
            h.update(b"\0" + name.encode() + b"\0" + value.encode())
        h.update(b"\1")
    return h.digest()


def part_key(part: object) -> bytes:
    """A digest of a profile, template, the site or the report secret: once per commit, shared by nodes."""
    return hashlib.sha256(repr(part).encode()).digest()


def node_key(node: Node, shared: bytes) -> bytes:
    """Everything a node's files are rendered from, but the revision: the node and `shared`
    (the `part_key`s of its profile, templates, the site and the report secret). Equal pickles
    (or reprs) are equal values; equal values pickled differently only miss."""
    return hashlib.sha256(shared + pickle.dumps(node, protocol=pickle.HIGHEST_PROTOCOL)).digest()


class Kept(NamedTuple):
    key: bytes | None  # None: not made yet; `NodeMemo.last` holds the node and digests it is made from
    entries: dict[str, Entry]  # rendered at the stand-in revision; `Stamped` where it or its token is in them
    size: int  # of the bytes they serve


def render_node_reusing(
    memo: NodeMemo,
    shared: bytes,
    node: Node,
    sentinel: str,
    report_secret: bytes | None,
    render_at: Callable[[str], NodeFiles],
) -> Kept:
    """The node's entries (`render.files`): the kept ones, or `render_at(sentinel)` kept. The
    same objects every commit until the node changes; a `RenderedFiles` stamps them on access.
    `shared`: the digests `node_key` takes besides the node. The very Node object of the last
    commit (a validator that keeps unchanged nodes) with the same `shared` is not pickled again."""
    kept = memo.entries.get(node.name)
    last = memo.last.get(node.name)
    key = None  # a node rendered for the first time: its key is made when asked for (`NodeMemo.__getstate__`)
    if kept is not None:
        if last is not None and last[0] is node and last[1] == shared:
            memo.hits += 1
            return kept
        if kept.key is None:
            if last is None:  # cannot be: `last` is dropped only with the entry, or made into its key
                kept = kept._replace(key=b"")
            else:
                kept = memo.entries[node.name] = kept._replace(key=node_key(*last))
        key = node_key(node, shared)
        if kept.key == key:
            memo.hits += 1
            memo.last[node.name] = (node, shared)
            return kept
    memo.misses += 1
    files = render_at(sentinel)
    token = _token(report_secret, node.name, sentinel)
    mark = sentinel.encode()
    entries: dict[str, Entry] = {}
    for path, data in files.items():
        with_token = bool(token) and token in data
        entries[path] = stamped(data, node.name, token if with_token else b"") if with_token or mark in data else data
    kept = memo.entries[node.name] = Kept(key, entries, sum(map(len, files.values())))
    memo.last[node.name] = (node, shared)  # only once `kept` is what they render to
    return kept


def _token(secret: bytes | None, name: str, revision: str) -> bytes:
    return template.report_token(secret, name, revision).encode()
