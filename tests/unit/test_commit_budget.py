"""A commit's CPU budget for its templates grows with its nodes (core.template.commit_budget): a
fixed bound made every commit of a large enough site invalid once validation and rendering took
longer than it (100,000 nodes took ~50 s of the fixed 60 here). The budget's sizes are set to 0
or to plenty below, so the outcome does not depend on this machine's speed."""

from __future__ import annotations

import pytest

from reconciler.core import template
from reconciler.core.errors import InvalidRevision
from reconciler.core.render import render_generation
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from tests.repo_builder import files as base_files

SLOW = "#cloud-config\nhostname: {{ hostname }}\n# {% for i in range(2000) %}{% endfor %}\n"


def _snapshot() -> Snapshot:
    files = base_files()
    files["cloud-init/autoinstall.yaml"] = SLOW.encode()
    return Snapshot("a" * 40, files)


def test_validation_gets_the_per_node_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template, "COMMIT_CPU_SECONDS", 0.0)
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 0.0)
    refused = validate(_snapshot())
    assert refused.state is None and any("used up its CPU time" in i.message for i in refused.errors), \
        refused.errors
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 60.0)
    assert validate(_snapshot()).state is not None


def test_rendering_gets_the_per_node_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    state = validate(_snapshot()).state
    assert state is not None
    monkeypatch.setattr(template, "COMMIT_CPU_SECONDS", 0.0)
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 0.0)
    with pytest.raises(InvalidRevision):
        render_generation(state)
    monkeypatch.setattr(template, "NODE_CPU_SECONDS", 60.0)
    assert render_generation(state)["boot.ipxe"]
