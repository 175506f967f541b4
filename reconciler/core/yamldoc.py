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

import json
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.core.codes import issue
from reconciler.core.model import Issue, Location

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

Path = tuple[str | int, ...]  # a JSON path: mapping keys and sequence indexes

MAX_NODES = 50_000  # values constructed per file, aliases expanded; real files have a few hundred
MAX_DEPTH = 64

_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_SEQ = "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class Document:
    """One parsed file: its plain value, plus the YAML node tree to find where a value was written.

    Positions are looked up only when a finding needs one (`loc`), by walking the node tree:
    nearly every document is valid, and indexing every value up front would cost more than
    parsing it.
    """

    file: str
    data: Any
    root: yaml.Node | None = None

    def loc(self, path: Path = (), *, key: bool = True) -> Location:
        """Location of the value at `path`, or of its nearest ancestor that has one.

        With `key`, a mapping entry points at its key (the line a person reads as "the field").
        """
        node = self.root
        if node is None:
            return Location(self.file, 1, 1)
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
    def __init__(self, file: str) -> None:
        self.file = file
        self.count = 0
        self.duplicates: list[Issue] = []
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
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise self._tag(node)
            return [self.build(item, depth + 1) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self._tag(node)
            if any(k.tag == _MERGE for k, _ in node.value):
                self._scalars.flatten_mapping(node)  # YAML merge keys (<<)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    km = key_node.start_mark
                    raise _Refused("yaml-key", "mapping keys must be plain strings", km.line + 1, km.column + 1)
                key = str(key_node.value)
                if key in out:
                    km = key_node.start_mark
                    where = Location(self.file, km.line + 1, km.column + 1)
                    message = f"duplicate key {key!r}: YAML loaders keep only one of them"
                    self.duplicates.append(issue("yaml-duplicate-key", where, message))
                out[key] = self.build(value_node, depth + 1)
            return out
        raise self._tag(node)  # pragma: no cover - composer yields only the three kinds

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise self._tag(node)
        if node.tag in (_STR, "tag:yaml.org,2002:timestamp"):
            return str(node.value)  # dates stay text: templates and schemas want strings
        if ":" in node.value and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            # YAML 1.1 base-60 numbers (gone in YAML 1.2): an all-digit MAC such as
            # 52:54:00:12:34:56 would otherwise load as the integer 41135052496.
            return str(node.value)
        if node.tag == "tag:yaml.org,2002:bool" and node.value.lower() not in ("true", "false"):
            # YAML 1.1 booleans yes/no/on/off (gone in YAML 1.2): `mode: off` means "off".
            return str(node.value)
        return self._scalars.construct_object(node, deep=True)

    def _tag(self, node: yaml.Node) -> _Refused:
        mark = node.start_mark
        return _Refused(
            "yaml-unsafe-tag",
            f"tag {node.tag!r} is not allowed (only plain YAML: maps, lists, strings, numbers, booleans)",
            mark.line + 1,
            mark.column + 1,
        )


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
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
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
    builder = _Builder(file)
    try:
        data = builder.build(node, 0)
    except _Refused as exc:
        return None, (issue(exc.code, Location(file, exc.line, exc.column), exc.message),)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        mark = node.start_mark
        return None, (issue("yaml-syntax", Location(file, mark.line + 1, mark.column + 1), str(exc)),)
    except RecursionError:
        return None, (issue("yaml-too-deep", Location(file, 0, 0), "nested too deep"),)
    doc = Document(file, data, node)
    return doc, tuple(builder.duplicates)


def parse_json(file: str, content: bytes) -> tuple[Document | None, tuple[Issue, ...]]:
    """Parse one JSON file (matchbox's own format). JSON is YAML 1.2, so positions come from the YAML
    composer when it accepts the text; plain json decides validity."""
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
