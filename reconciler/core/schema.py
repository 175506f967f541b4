"""JSON Schema validation of repository documents, with findings that point at the field.

Called by `core.validate`. The schemas (draft 2020-12) live in the top-level `schemas/` and
ship as the package data `reconciler.schemas` (setup.py); editors use the same files through
the `yaml-language-server` line.

Two validators per schema: a compiled one (fastjsonschema, ~70x faster) accepts the valid
documents, which are nearly all of them; only a document it rejects is walked again by
jsonschema, which reports every error with its path. The schemas use only keywords both
implement alike (tests/unit/test_schema.py checks that they agree).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import fastjsonschema
import jsonschema
from referencing import Registry, Resource

from reconciler.core.codes import issue
from reconciler.core.model import Issue
from reconciler.core.yamldoc import Document, Path

SCHEMA_FILES = {
    "site": "site.schema.json",
    "node": "node.schema.json",
    "profile": "profile.schema.json",
    "profile-matchbox": "profile-matchbox.schema.json",
    "group": "group.schema.json",
    "assets": "assets.schema.json",
    "secrets": "secrets.schema.json",
}


def schemas_dir() -> Traversable:
    """Where the schemas are: the installed `reconciler.schemas`, or, in a source checkout run in
    place without installing it, `schemas/` beside the package."""
    try:
        return resources.files("reconciler.schemas")
    except ModuleNotFoundError:
        return resources.files("reconciler").joinpath("..", "schemas")


def schema_text(kind: str) -> str:
    """The schema of one document kind, as shipped."""
    return schemas_dir().joinpath(SCHEMA_FILES[kind]).read_text("utf-8")


@functools.cache
def _validators() -> dict[str, jsonschema.Draft202012Validator]:
    schemas = {kind: json.loads(schema_text(kind)) for kind in SCHEMA_FILES}
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return {
        kind: jsonschema.Draft202012Validator(schema, registry=registry, format_checker=checker)
        for kind, schema in schemas.items()
    }


def _inline_refs(node: Any, root: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> Any:
    """The schema with every `$ref` replaced by what it points at (ours are not recursive)."""
    if isinstance(node, list):
        return [_inline_refs(item, root, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target_id, _, pointer = node["$ref"].partition("#")
        target = root if not target_id else next(s for s in schemas.values() if s["$id"] == target_id)
        resolved: Any = target
        for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
            resolved = resolved[part]
        return _inline_refs(resolved, target, schemas)
    return {key: _inline_refs(value, root, schemas) for key, value in node.items() if key != "$defs"}


@functools.cache
def _fast_validators() -> dict[str, Any]:
    schemas = {kind: json.loads(schema_text(kind)) for kind in SCHEMA_FILES}
    out = {}
    for kind, schema in schemas.items():
        inlined = _inline_refs(schema, schema, schemas)
        inlined["$schema"] = "http://json-schema.org/draft-07/schema#"
        out[kind] = fastjsonschema.compile(inlined)
    return out


def is_valid(data: Any, kind: str) -> bool:
    """The fast path: whether `data` satisfies the schema of `kind`."""
    try:
        _fast_validators()[kind](data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def check(doc: Document, kind: str, unknown_code: str = "schema") -> tuple[Issue, ...]:
    """Every schema violation of `doc` against the schema of `kind`, each at its field's line.

    `unknown_code`: the code of an unknown field (matchbox's JSON files: a warning, as matchbox's
    JSON decoding ignores fields it does not know)."""
    if is_valid(doc.data, kind):
        return ()
    validator = _validators()[kind]
    findings: list[Issue] = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: [str(p) for p in e.absolute_path]):
        path: Path = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            extras = sorted(k for k in error.instance if k not in allowed)
            for extra in extras:
                loc = doc.loc((*path, extra))
                hint = f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""
                findings.append(issue(unknown_code, loc, f"{_field(path, extra)}: unknown field{hint}"))
            continue
        if error.validator == "pattern" and isinstance(error.instance, str):
            message = _pattern_message(error.instance, str(error.validator_value), error.schema.get("description"))
        elif error.validator == "type":
            message = f"expected {_type_words(error.validator_value)}, found {describe_value(error.instance)}"
        loc = doc.loc(path)
        findings.append(issue("schema", loc, f"{_field(path)}: {message}"))
    return tuple(findings)


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "text", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "nothing"}


def _type_words(types: Any) -> str:
    return " or ".join(_TYPE_WORDS.get(t, t) for t in ([types] if isinstance(types, str) else types))


def describe_value(value: Any) -> str:
    """A value's kind in words (never a Python type name such as NoneType)."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else "a value"


# What each pattern of schemas/ means, for messages (a raw regular expression helps nobody).
_ID = "letters, digits, '.', '_' and '-', starting with a letter or digit"
PATTERN_WORDS = {
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$": _ID + ", at most 128 characters",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$": _ID + ", at most 63 characters",
    "^[A-Za-z_][A-Za-z0-9_.-]{0,62}$": "a letter or '_', then letters, digits, '_', '.' or '-', at most 63 characters",
    "^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}$|^[0-9A-Fa-f]{12}$":
        "a MAC address such as 52:54:00:12:34:56, 52-54-00-12-34-56, 5254.0012.3456 or 525400123456",
    "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$":
        "a lowercase DNS label: a-z, 0-9 and '-', not starting or ending with '-', at most 63 characters",
    "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$":
        "a DNS label: letters, digits and '-', not starting or ending with '-', at most 63 characters",
    "^[0-9a-f]{64}$": "a SHA-256 digest: 64 lowercase hex digits",
    "^https?://[^\\s]+$": "an http:// or https:// URL without white space",
    "^[A-Za-z0-9_.:@-]{1,15}$": "an interface name: up to 15 letters, digits and '_.:@-'",
    "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$": "a network with its prefix length, such as 10.10.10.0/24",
    "^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$":
        "a DNS name: labels of letters, digits and '-' joined by '.'",
}


def _pattern_message(value: str, pattern: str, description: str | None) -> str:
    """Why `value` does not fit `pattern`, in words: the schema's description, our table, or, for
    a pattern that only forbids characters, the first forbidden one."""
    if description:
        return f"{value!r} is not valid here ({description.rstrip('.')})"
    words = PATTERN_WORDS.get(pattern)
    if words is None and pattern.startswith("^[^") and pattern.endswith(("]*$", "]+$")):
        forbidden = re.search("[" + pattern[3:-3] + "]", value)
        if forbidden is not None:
            char = forbidden.group()
            shown = f"{char!r}" if char.isprintable() else f"a control character (U+{ord(char):04X})"
            return f"{value!r} holds {shown}, which is not allowed here"
    if words is None and "/assets/" in pattern:
        words = "a path under /assets/ of letters, digits and '._+-' (no '..', no empty segment)"
    if words is None and "keys/" in pattern:
        words = "a file in keys/ ending in .gpg or .asc"
    return f"{value!r} is not valid here: expected {words or 'another form'}"


def _field(path: Path, extra: str | None = None) -> str:
    parts = [*path, extra] if extra is not None else list(path)
    if not parts:
        return "(document)"
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
