"""Where the JSON Schemas live (issue 22 item 7): top-level `schemas/`, the package data
`reconciler.schemas` read from them, and example-repo's `$schema` lines resolving inside the
repository itself, so a copy of it (the way users start) keeps editor validation."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from reconciler.core import schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example-repo"
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)
KIND_SCHEMA = {"nodes": "node", "profiles": "profile", "groups": "group", "netboot.yaml": "site",
               "assets.yaml": "assets"}


def test_schemas_live_at_the_top_level_and_are_what_validation_reads() -> None:
    assert not (ROOT / "reconciler" / "schemas").exists()
    for kind, name in schema.SCHEMA_FILES.items():
        assert schema.schema_text(kind) == (ROOT / "schemas" / name).read_text()


def test_example_repo_schema_lines_resolve_in_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "my-site"
    shutil.copytree(EXAMPLE, copy)
    checked = 0
    for path in sorted(copy.rglob("*.yaml")):
        rel = path.relative_to(copy)
        if rel.parts[0] not in KIND_SCHEMA:
            continue
        match = SCHEMA_LINE.search(path.read_text())
        assert match is not None, f"{rel}: no yaml-language-server $schema line"
        target = (path.parent / match.group(1)).resolve()
        assert target.is_relative_to(copy.resolve()), f"{rel}: $schema points outside the repository"
        assert target.read_text() == schema.schema_text(KIND_SCHEMA[rel.parts[0]]), rel
        checked += 1
    assert checked >= 8
