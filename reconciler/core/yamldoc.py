"""Safe YAML and JSON parsing into plain values that remember where each value was written.

Called by `core.load` for every repository file. PyYAML composes the node graph (C parser
when available); we construct plain Python values ourselves so that:
- only the standard scalar tags are accepted (`!!python/object` and friends are refused);
- alias expansion is bounded (a billion-laughs file is a finding, not a hang);
- duplicate mapping keys are findings (PyYAML silently keeps the last one);
- scalars read as YAML 1.2 does: `off`, `yes`, `no` stay text, `52:54:00:12:34:56` is no number;
- every value's JSON path can be placed at its (line, column), for messages that point at the field.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from reconciler.core.codes import issue
from reconciler.core.model import Issue, Location

_RESOLVER = yaml.resolver.Resolver()


def _resolve_now(kind: type[yaml.Node], value: str | None, implicit: tuple[bool, bool] | bool) -> str:
    return yaml.resolver.Resolver.resolve(_RESOLVER, kind, value, implicit)  # type: ignore[no-any-return,no-untyped-call]


# (2,048: what recurs, recurs in every file; each node file's own values, its MAC and address,
# only filled 16,384 entries, 3.3 MB of the worker, with texts asked once: issue 25)
_resolve_remembered = functools.lru_cache(maxsize=1 << 11)(_resolve_now)
_LONGEST_REMEMBERED = 64  # characters: keys and short values recur; a long text is kept by nobody


def _resolve(kind: type[yaml.Node], value: str | None, implicit: tuple[bool, bool] | bool) -> str:
    """PyYAML's tag resolution, remembered for short values: the composer asks once per scalar,
    and a repository's keys and most of its values recur in every file (its regular expressions
    were a fifth of parsing a node file). The bound on length bounds the memory it keeps."""
    if value is not None and len(value) > _LONGEST_REMEMBERED:
        return _resolve_now(kind, value, implicit)
    return _resolve_remembered(kind, value, implicit)  # type: ignore[arg-type]


try:
    _Base: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - libyaml missing
    _Base = yaml.SafeLoader


class Loader(_Base):  # type: ignore[valid-type,misc]
    """The safe loader (libyaml's when there is one), composing nodes only (`compose`), with tag
    resolution remembered. PyYAML's path resolvers (none are registered: asserted below) are what
    `descend_resolver` and `ascend_resolver` keep track for, so they do nothing here; builtins
    are the cheapest calls that do nothing."""

    resolve = staticmethod(_resolve)
    descend_resolver = operator.is_  # called with (parent, index)
    ascend_resolver = tuple  # called with no argument


assert not yaml.resolver.Resolver.yaml_path_resolvers, "a YAML path resolver is registered: Loader would ignore it"


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (yaml.compose with `Loader`)."""
    loader = Loader(text)
    try:
        return loader.get_single_node()  # type: ignore[no-any-return]
    finally:
        loader.dispose()


Path = tuple[str | int, ...]  # a JSON path: mapping keys and sequence indexes

MAX_NODES = 50_000  # values constructed per file, aliases expanded; real files have a few hundred
MAX_DEPTH = 64

_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
# The scalar tags allowed besides text and dates (kept as text), and what builds their values:
# SafeConstructor's own functions, called directly (construct_object's bookkeeping is for
# collections).
_CONSTRUCTORS = {
    tag: yaml.constructor.SafeConstructor.yaml_constructors[tag]
    for tag in (_INT, _FLOAT, _BOOL, "tag:yaml.org,2002:null")
}
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_SEQ = "tag:yaml.org,2002:seq"


_THINNED: Mapping[str, Any] = MappingProxyType({})  # a thinned document's value without the kept entry (`thin`)


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed file: its plain value, and what finds where a value was written.

    Positions are looked up only when a finding needs one (`loc`), by walking the node tree:
    nearly every document is valid, and indexing every value up front would cost more than
    parsing it. Nor is the tree kept: it was most of a validation's memory (100,000 node files,
    ~5 KB each); `root` composes it again from `source` the first time a position below the
    document's own start is asked for, and `start` (the root node's 0-based line and column)
    answers for the document itself.
    """

    file: str
    data: Any
    source: bytes | None = field(default=None, repr=False, compare=False)  # None: no positions
    start: tuple[int, int] = (0, 0)
    # (slots set once, not a list and a dict per document: the validation memo keeps 100,000 node
    # files' documents, and those were ~240 bytes of each, issue 25)
    _tree: yaml.Node | None = field(default=None, init=False, repr=False, compare=False)
    # its schema findings as a document of one kind (core.build), kept with it (core.docmemo.ValidateMemo)
    checked_as: str | None = field(default=None, init=False, repr=False, compare=False)
    _found: tuple[Issue, ...] = field(default=(), init=False, repr=False, compare=False)
    # what was built of it (a node file's Node), kept with it by core.docmemo.ValidateMemo (`keep_made`)
    made: object = field(default=None, init=False, repr=False, compare=False)

    def checked(self, kind: str) -> tuple[Issue, ...] | None:
        """Its schema findings as a document of `kind` (None: not checked as one)."""
        return self._found if self.checked_as == kind else None

    def keep_checked(self, kind: str, issues: tuple[Issue, ...]) -> None:
        """Keep its schema findings as a document of `kind` (`core.build`: each file is of one kind)."""
        object.__setattr__(self, "checked_as", kind)
        object.__setattr__(self, "_found", issues)

    def keep_made(self, made: object) -> None:
        """Keep what was built of it with it (`made`): the validation memo's one object a node
        file, not a tuple besides (issue 25: ~80 bytes a node file)."""
        object.__setattr__(self, "made", made)

    def thin(self, keep: str) -> None:
        """Forget its value but the top mapping's entry `keep`: `data` becomes {keep: its value},
        or an empty mapping without one. For a document what was built of it stands for (a node
        file's Node, kept with it by `core.docmemo`: 100,000 of them kept their whole values, ~30 MB
        of the worker, issue 25); positions (`loc`) still come from `source`. Never checked or
        built again: its schema findings are kept (`checked`) and its Node with it."""
        data = self.data
        kept = {keep: data[keep]} if isinstance(data, dict) and keep in data else _THINNED
        object.__setattr__(self, "data", kept)

    @property
    def root(self) -> yaml.Node | None:
        """The node tree, merge keys flattened as when the document was parsed."""
        if self.source is None:
            return None
        if self._tree is None:
            text = self.source.decode("utf-8")
            node = compose(text)
            assert node is not None  # it composed to a node when parsed
            _Builder(self.file, may_merge=_may_merge(text)).build(node, 0)  # flattens, as parsing did
            object.__setattr__(self, "_tree", node)
        return self._tree

    def loc(self, path: Path = (), *, key: bool = True) -> Location:
        """Location of the value at `path`, or of its nearest ancestor that has one.

        With `key`, a mapping entry points at its key (the line a person reads as "the field").
        """
        if self.source is None:
            return Location(self.file, 1, 1)
        if not path:
            return Location(self.file, self.start[0] + 1, self.start[1] + 1)
        node = self.root
        assert node is not None
        mark = node.start_mark
        for part in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                        child = value_node
                        mark = key_node.start_mark if key else value_node.start_mark
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
                mark = child.start_mark
            if child is None:
                break
            node = child
        return Location(self.file, mark.line + 1, mark.column + 1)


class _Refused(Exception):
    def __init__(self, code: str, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line
        self.column = column


class _Builder:
    """Plain values from a node tree. `may_merge`: whether the text can hold a merge key at all (a
    `<<`, or a tag: `!!merge` spelt out); without one, mappings are not searched for them."""

    def __init__(self, file: str, may_merge: bool = True) -> None:
        self.file = file
        self.count = 0
        self.duplicates: list[Issue] = []
        self.may_merge = may_merge
        self._scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            mark = node.start_mark
            raise _Refused(
                "yaml-too-large",
                f"more than {MAX_NODES} values after expanding aliases (an alias bomb?)",
                mark.line + 1,
                mark.column + 1,
            )
        if depth > MAX_DEPTH:
            mark = node.start_mark
            raise _Refused("yaml-too-deep", f"nested deeper than {MAX_DEPTH}", mark.line + 1, mark.column + 1)
        kind = node.__class__  # the composer makes these three classes only, never subclasses
        if kind is yaml.ScalarNode:
            return self._scalar(node)  # type: ignore[arg-type]
        if kind is yaml.SequenceNode:
            if node.tag != _SEQ:
                raise self._tag(node)
            return [self.build(item, depth + 1) for item in node.value]
        if kind is yaml.MappingNode:
            return self._mapping(node, depth)  # type: ignore[arg-type]
        raise self._tag(node)  # pragma: no cover - composer yields only the three kinds

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[str, Any]:
        if node.tag != _MAP:
            raise self._tag(node)
        if self.may_merge and any(k.tag == _MERGE for k, _ in node.value):
            self._scalars.flatten_mapping(node)  # YAML merge keys (<<)
        out: dict[str, Any] = {}
        # A plain-text value is built here, not by a call to build(): most values are, and a
        # value that could pass a bound (count or depth) still goes through build() to say so.
        child = depth + 1
        for key_node, value_node in node.value:
            if key_node.__class__ is not yaml.ScalarNode:
                km = key_node.start_mark
                raise _Refused("yaml-key", "mapping keys must be plain strings", km.line + 1, km.column + 1)
            key = sys.intern(key_node.value)  # shared by every document that has it (100,000 node files: ~45 MB)
            if key in out:
                km = key_node.start_mark
                where = Location(self.file, km.line + 1, km.column + 1)
                message = f"duplicate key {key!r}: YAML loaders keep only one of them"
                self.duplicates.append(issue("yaml-duplicate-key", where, message))
            if value_node.tag == _STR and self.count < MAX_NODES and child <= MAX_DEPTH \
                    and value_node.__class__ is yaml.ScalarNode:
                self.count += 1
                out[key] = value_node.value
            else:
                out[key] = self.build(value_node, child)
        return out

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):
            return node.value  # dates stay text: templates and schemas want strings
        constructor = _CONSTRUCTORS.get(tag)
        if constructor is None:
            raise self._tag(node)
        if ":" in node.value and tag in (_INT, _FLOAT):
            # YAML 1.1 base-60 numbers (gone in YAML 1.2): an all-digit MAC such as
            # 52:54:00:12:34:56 would otherwise load as the integer 41135052496.
            return node.value
        if tag == _BOOL and node.value.lower() not in ("true", "false"):
            # YAML 1.1 booleans yes/no/on/off (gone in YAML 1.2): `mode: off` means "off".
            return node.value
        return constructor(self._scalars, node)

    def _tag(self, node: yaml.Node) -> _Refused:
        mark = node.start_mark
        return _Refused(
            "yaml-unsafe-tag",
            f"tag {node.tag!r} is not allowed (only plain YAML: maps, lists, strings, numbers, booleans)",
            mark.line + 1,
            mark.column + 1,
        )


def _may_merge(text: str) -> bool:
    """Whether `text` can hold a merge key: a `<<`, or a tag (`!!merge` spelt out)."""
    return "<<" in text or "!" in text


def yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    """PyYAML's error as (1-based line or 0, problem in words a user reads): the offending
    character named, not escaped, and none of the parser's internals (`#x0000`, stream names)."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return line, f"{_char_name(chr(exc.character) if isinstance(exc.character, int) else exc.character)} " \
                     "is not allowed in YAML"
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 0
    problem = str(getattr(exc, "problem", None) or "not valid YAML")
    if "cannot start any token" in problem and mark is not None and 0 <= mark.index < len(text):
        char = text[mark.index]
        hint = " (indent with spaces)" if char == "\t" else ""
        problem = f"{_char_name(char)} where YAML allows none{hint}"
    return line, problem


def _char_name(char: str) -> str:
    names = {"\t": "a tab", "\x00": "a NUL character", "@": "'@'", "`": "'`'", "%": "'%'"}
    return names.get(char, f"the character {char!r}" if char.isprintable() else f"control character U+{ord(char):04X}")


def parse_yaml(file: str, content: bytes) -> tuple[Document | None, tuple[Issue, ...]]:
    """Parse one YAML file. Returns the document (None when unusable) and the findings."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (issue("encoding", Location(file, 0, 0), f"not UTF-8: {exc.reason}"),)
    simple = _simple(file, text, content)
    if simple is not None:
        return simple, ()
    return _parse_composed(file, text, content)


def _parse_composed(file: str, text: str, content: bytes) -> tuple[Document | None, tuple[Issue, ...]]:
    """`parse_yaml` by composing the text's YAML (libyaml) and building values from its nodes."""
    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = yaml_problem(exc, text)[1] if exc.problem else exc.context or "invalid YAML"
        return None, (issue("yaml-syntax", Location(file, line, col), problem),)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc, text)
        return None, (issue("yaml-syntax", Location(file, line, 0), problem),)
    if node is None:
        return Document(file, None), ()
    builder = _Builder(file, may_merge=_may_merge(text))
    try:
        data = builder.build(node, 0)
    except _Refused as exc:
        return None, (issue(exc.code, Location(file, exc.line, exc.column), exc.message),)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        mark = node.start_mark
        return None, (issue("yaml-syntax", Location(file, mark.line + 1, mark.column + 1), str(exc)),)
    except RecursionError:
        return None, (issue("yaml-too-deep", Location(file, 0, 0), "nested too deep"),)
    doc = Document(file, data, content, (node.start_mark.line, node.start_mark.column))
    return doc, tuple(builder.duplicates)


def parse_json(file: str, content: bytes) -> tuple[Document | None, tuple[Issue, ...]]:
    """Parse one JSON file (matchbox's own format). JSON is YAML 1.2, so positions come from the YAML
    composer when it accepts the text; plain json decides validity. Nested deeper than MAX_DEPTH,
    as a YAML file may not be, it is refused before json reads it (`_too_deep`)."""
    deep = _too_deep(content)
    if deep is not None:
        line, column, field = deep
        return None, (issue("json-too-deep", Location(file, line, column), f"{field}: nested deeper than {MAX_DEPTH}"),)
    try:
        data = json.loads(content)
    except (ValueError, RecursionError) as exc:
        line = getattr(exc, "lineno", 0)
        col = getattr(exc, "colno", 0)
        msg = getattr(exc, "msg", str(exc))
        return None, (issue("json-syntax", Location(file, line, col), msg),)
    doc, issues = parse_yaml(file, content)
    if doc is None:  # valid JSON that YAML rejects (tabs): keep the value, lose the positions
        return Document(file, data), ()
    return doc, issues


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def _too_deep(content: bytes) -> tuple[int, int, str] | None:
    """Where a JSON text first opens a list or mapping deeper than MAX_DEPTH: (line, column, the
    field it is under, as `a.b[0].c`), or None. json's own bound is the interpreter's recursion
    limit less the stack already in use, so near it a file read in a deeper stack (a forked
    validation child's) gave `json-syntax` where one process gave a document (found by review);
    a bound of our own gives every process the same finding. Brackets in strings do not count."""
    if content.count(b"[") + content.count(b"{") <= MAX_DEPTH:
        return None
    path: list[str | int | None] = []  # per open container: the key or index of the value being read
    key: str | None = None  # the last string read: a key when a ':' follows
    for token in _JSON_TOKEN.finditer(content):
        char = token.group()[:1]
        if char in b"[{":
            if len(path) > MAX_DEPTH:  # (the document itself at depth 0, as `_Builder` counts)
                at = token.start()
                start = content.rfind(b"\n", 0, at) + 1
                column = len(content[start:at].decode(errors="replace")) + 1  # in characters, as YAML's marks
                return content.count(b"\n", 0, at) + 1, column, _json_field(path)
            path.append(0 if char == b"[" else None)
        elif char in b"]}":
            if path:
                path.pop()
        elif char == b",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
        elif char == b":":
            if path:
                path[-1] = key
        else:
            with contextlib.suppress(ValueError):
                key = json.loads(token.group())
    return None


def _json_field(path: list[str | int | None]) -> str:
    """The field a value at `path` is under, up to its last key: `a.b[0].c` (`(document)` for none)."""
    keyed = max((i for i, part in enumerate(path) if isinstance(part, str)), default=-1)
    out = ""
    for part in path[:keyed + 1]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(document)"


# -- the common file, read without composing its YAML -------------------------------------------
# A node file is a handful of `key: value` lines (100,000 of them in a large repository, where
# libyaml's composing each into nodes was a tenth of validating it). `_simple` reads the
# files made only of the forms below and gives the Document parsing them would; anything else
# (quotes, comments after a value, block sequences, a key written twice, a tab, a character
# outside these, deeper nesting...) is left to the parser. Values are resolved as the parser
# resolves plain scalars (`_resolve`, `_Builder._scalar`), so `yes`, `1:30` or `0x1F` read alike.
_KEY_RE = r"[A-Za-z_][A-Za-z0-9_-]{0,99}"  # (YAML bounds an implicit key to 1,024 characters)
_CHARS = "A-Za-z0-9_./@+=~-"  # no ':', ',', brackets, '#', quotes, white space
_FIRST = "A-Za-z0-9_/"  # no indicator starts it
_FLOW_SCALAR = rf"[{_FIRST}][{_CHARS}]*(?: [{_FIRST}][{_CHARS}]*)*"
# in block context a ':' may be inside a word (`52:54:00:aa:bb:01`), never at its end
_BLOCK_SCALAR = rf"[{_FIRST}][{_CHARS}]*(?::[{_CHARS}]+)*(?: [{_CHARS}]+(?::[{_CHARS}]+)*)*"
_ENTRY = re.compile(rf"( *)({_KEY_RE}):(?: (?:({_BLOCK_SCALAR})|\{{(.*)\}}|\[(.*)\]))?")
_FLOW_ITEM = re.compile(_FLOW_SCALAR)
_FLOW_PAIR = re.compile(rf"({_KEY_RE}): ({_FLOW_SCALAR})")
_MAX_SIMPLE_LINES = 200


# Keys whose text values name another document, the same for many files (each node file names its
# profile): interned, one string for all (the validation memo keeps every document, issue 25).
_NAMES_SHARED = frozenset({"profile", "site", "cloud_init"})


def _simple(file: str, text: str, content: bytes) -> Document | None:
    """The Document of a file in the simple forms (see above), or None: parse it."""
    if "\t" in text or "\r" in text or text.count("\n") > _MAX_SIMPLE_LINES:
        return None
    root: dict[str, Any] = {}
    start: int | None = None
    inner: dict[str, Any] | None = None  # the mapping under the last `key:` with no value
    indent = ""
    try:
        for number, line in enumerate(text.split("\n")):
            if not line.isprintable():  # a character YAML refuses, or one that ends a line there (U+0085,
                return None             # U+2028, U+2029): in a comment too, the parser decides
            match = _ENTRY.fullmatch(line)
            if match is None:
                if not line or line.lstrip(" ").startswith("#"):
                    continue  # an empty line, a comment
                return None
            spaces, key, plain, flow_map, flow_seq = match.groups()
            key = sys.intern(key)  # as `_Builder` does
            if spaces:
                if inner is None or (indent and spaces != indent):
                    return None
                indent, target = spaces, inner
            else:
                if inner is not None and not indent:
                    return None  # `key:` with nothing under it: a null, left to the parser
                inner, indent, target = None, "", root
                if start is None:
                    start = number
            if key in target:
                return None
            if plain is not None:
                if key in _NAMES_SHARED:
                    target[key] = sys.intern(plain) if plain[0] not in _RESOLVED_FIRST else _plain(plain)
                else:
                    target[key] = plain if plain[0] not in _RESOLVED_FIRST else _plain(plain)
            elif flow_map is not None:
                value: dict[str, Any] = {}
                for part in flow_map.split(", ") if flow_map else ():
                    pair = _FLOW_PAIR.fullmatch(part)
                    if pair is None:
                        return None
                    name, item = pair.groups()
                    name = sys.intern(name)
                    if name in value:
                        return None
                    # interned: a flow mapping's or sequence's texts are what node files repeat (labels,
                    # SSH keys): one string for all (the validation memo keeps every document)
                    value[name] = sys.intern(item) if item[0] not in _RESOLVED_FIRST else _plain(item)
                target[key] = value
            elif flow_seq is not None:
                items = []
                for part in flow_seq.split(", ") if flow_seq else ():
                    if _FLOW_ITEM.fullmatch(part) is None:
                        return None
                    items.append(sys.intern(part) if part[0] not in _RESOLVED_FIRST else _plain(part))
                target[key] = items
            elif spaces:
                return None  # nesting deeper than one level
            else:
                inner = target[key] = {}
    except Exception:  # whatever the shortcut cannot do, the parser does
        return None
    if start is None or (inner is not None and not indent):
        return None
    return Document(file, root, content, (start, 0) if start else (0, 0))  # (one tuple for all at the top)


# The first characters of a plain scalar some implicit tag may resolve (PyYAML's resolvers are
# looked up by it): any other is text. With a resolver for every character, every value is resolved.
_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers
_RESOLVED_FIRST = frozenset(k for k in _IMPLICIT if k) if None not in _IMPLICIT else frozenset(map(chr, range(128)))


def _plain(value: str) -> Any:
    """A plain scalar's value as `_Builder` makes it from the node the composer gives."""
    return _SCALARS._scalar(yaml.ScalarNode(_resolve(yaml.ScalarNode, value, (True, False)), value))


_SCALARS = _Builder("")  # its `_scalar` keeps no state
