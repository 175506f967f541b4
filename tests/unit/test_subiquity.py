"""Subiquity as it really behaves: its published autoinstall schema, misplaced keys, interactive-sections.

- Every autoinstall section we render (example-repo's, and with a user's own `reporting:` that
  ours joins) validates against Subiquity's autoinstall-schema.json (tests/peers/subiquity/,
  source named in SOURCE.md there).
- The lint's set of keys that are autoinstall-only is derived from that schema and cloud-init's
  cloud-config schema (Debian's cloud-init package): what Subiquity 24.04+ refuses at the top
  level of user-data ("Misplaced autoinstall directives", subiquity/server/server.py) are the
  autoinstall keys that cloud-init's schema does not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.core.lint.user_data import AUTOINSTALL_ONLY_KEYS
from reconciler.core.model import Severity
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from tests import repo_builder
from tests.render_support import example_state

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "peers" / "subiquity" / "autoinstall-schema.json"
CLOUD_CONFIG_SCHEMA = Path("/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json")
MAC = "52:54:00:aa:bb:01"


def autoinstall_schema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return doc


def check(section: Any) -> None:
    validator = jsonschema.validators.validator_for(autoinstall_schema())(autoinstall_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(section)]
    assert not errors, errors


def sections(files: Mapping[str, bytes]) -> dict[str, Any]:
    out = {}
    for path, body in files.items():
        if path.endswith("/user-data"):
            doc = yaml.safe_load(body)
            if isinstance(doc, dict) and "autoinstall" in doc:
                out[path] = doc["autoinstall"]
    return out


def test_every_autoinstall_section_of_example_repo_validates_against_subiquitys_schema() -> None:
    found = sections(render_generation(example_state(), report_secret=b"s" * 32))
    assert len(found) >= 3, sorted(found)
    for section in found.values():
        assert section["reporting"]["netboot"]["type"] == "webhook"
        check(section)


@pytest.mark.parametrize(
    "reporting",
    [
        "  reporting:\n    mine: {type: print}\n",
        "  reporting: {mine: {type: webhook, endpoint: 'http://elsewhere/'}}\n",
        "  reporting:\n    netboot: {type: print}\n",
    ],
)
def test_a_users_reporting_merged_with_ours_validates(reporting: str) -> None:
    user_data = repo_builder.BASE["cloud-init/autoinstall.yaml"] + reporting
    result = validate(repo_builder.snapshot({"cloud-init/autoinstall.yaml": user_data}))
    assert result.state is not None, result.issues
    found = sections(render_generation(result.state, report_secret=b"s" * 32))
    assert found
    for section in found.values():
        assert len(section["reporting"]) == 2, section["reporting"]
        check(section)


def test_the_misplaced_key_set_is_subiquitys_keys_that_cloud_init_does_not_know() -> None:
    if not CLOUD_CONFIG_SCHEMA.exists():
        pytest.fail(f"{CLOUD_CONFIG_SCHEMA} not found: apt-get install cloud-init (scripts/test.sh installs it)")
    cloud = json.loads(CLOUD_CONFIG_SCHEMA.read_text())
    parts = [cloud["$defs"][part["$ref"].split("/")[-1]] for part in cloud["allOf"]]
    cloud_keys = {k for part in parts for k in part.get("properties", {})}
    assert set(autoinstall_schema()["properties"]) - cloud_keys == AUTOINSTALL_ONLY_KEYS


def lints(user_data: str, args: tuple[str, ...] = ("autoinstall",)) -> list[tuple[str, int, Severity]]:
    edits = {"cloud-init/autoinstall.yaml": user_data}
    if "autoinstall" not in args:
        profile = repo_builder.BASE["profiles/install.yaml"].replace("    - autoinstall\n", "")
        assert profile != repo_builder.BASE["profiles/install.yaml"]
        edits["profiles/install.yaml"] = profile
    issues = validate(repo_builder.snapshot(edits)).issues
    return [(i.code, i.line, i.severity) for i in issues if i.code.startswith("autoinstall-")]


AUTOINSTALL = "#cloud-config\nautoinstall:\n  version: 1\n  identity: {hostname: h, username: u, password: p}\n"


def test_an_autoinstall_key_beside_autoinstall_is_an_error_at_its_line() -> None:
    found = lints(AUTOINSTALL + "storage:\n  layout: {name: lvm}\nlate-commands: [true]\n")
    assert found == [("autoinstall-key-misplaced", 5, Severity.ERROR), ("autoinstall-key-misplaced", 7, Severity.ERROR)]


def test_keys_cloud_config_also_knows_are_fine_at_the_top_level() -> None:
    assert lints(AUTOINSTALL + "ssh: {emit_keys_to_console: false}\npackages: [vim]\nlocale: C.UTF-8\n") == []


def test_interactive_sections_with_our_reporting_is_a_warning() -> None:
    found = lints(AUTOINSTALL + "  interactive-sections: [storage]\n")
    assert found == [("autoinstall-interactive-reporting", 5, Severity.WARNING)]
    assert lints(AUTOINSTALL + "  interactive-sections: []\n") == []
