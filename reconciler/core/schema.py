"""JSON Schema validation of repository documents, with findings that point at the field.

Called by `core.validate`. The schemas (draft 2020-12) ship as package data in
`reconciler/schemas/`; editors use the same files through the `yaml-language-server` line.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from reconciler.core.model import Issue, Severity
from reconciler.core.yamldoc import Document, Path

SCHEMA_FILES = {
    "site": "site.schema.json",
    "node": "node.schema.json",
    "profile": "profile.schema.json",
    "profile-matchbox": "profile-matchbox.schema.json",
    "group": "group.schema.json",
    "assets": "assets.schema.json",
}


def schema_text(kind: str) -> str:
    """The schema of one document kind, as shipped."""
    return resources.files("reconciler.schemas").joinpath(SCHEMA_FILES[kind]).read_text("utf-8")


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


def check(doc: Document, kind: str) -> tuple[Issue, ...]:
    """Every schema violation of `doc` against the schema of `kind`, each at its field's line."""
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
                findings.append(Issue.at(loc, "schema", f"{_field(path, extra)}: unknown field{hint}", Severity.ERROR))
            continue
        loc = doc.loc(path)
        findings.append(Issue.at(loc, "schema", f"{_field(path)}: {message}", Severity.ERROR))
    return tuple(findings)


def _field(path: Path, extra: str | None = None) -> str:
    parts = [*path, extra] if extra is not None else list(path)
    if not parts:
        return "(document)"
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
