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
        loc = doc.loc(path)
        findings.append(issue("schema", loc, f"{_field(path)}: {message}"))
    return tuple(findings)


def _field(path: Path, extra: str | None = None) -> str:
    parts = [*path, extra] if extra is not None else list(path)
    if not parts:
        return "(document)"
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
