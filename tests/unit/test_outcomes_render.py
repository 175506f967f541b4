"""What the renderer puts in a node's cloud-init for boot reports: its token and the autoinstall webhook."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest
import yaml

from reconciler.core import template
from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from reconciler.core.render.nocloud import with_reporting
from reconciler.core.validate import validate
from tests.repo_builder import snapshot

SECRET = b"s" * 32
MAC = "52:54:00:aa:bb:01"
OURS = {"type": "webhook", "endpoint": "http://s/report/autoinstall/m"}


def state(revision: str, edits: Mapping[str, str | None] | None = None) -> DesiredState:
    result = validate(dataclasses.replace(snapshot(edits), revision=revision))
    assert result.state is not None, result.issues
    return result.state


def test_autoinstall_user_data_gets_the_webhook_with_the_nodes_token() -> None:
    files = render_generation(state("a" * 40), report_secret=SECRET)
    doc = yaml.safe_load(files[f"cloud-init/{MAC}/user-data"])
    token = template.report_token(SECRET, "node-1", "a" * 40)
    assert len(token) == 32
    assert doc["autoinstall"]["reporting"] == {
        "netboot": {"type": "webhook", "endpoint": f"http://10.10.10.12/report/autoinstall/{MAC}?token={token}"}
    }
    assert doc["autoinstall"]["version"] == 1  # the author's keys are still there
    # without a secret (the `render` command), the webhook still points home, without a token
    plain = yaml.safe_load(render_generation(state("a" * 40))[f"cloud-init/{MAC}/user-data"])
    assert plain["autoinstall"]["reporting"]["netboot"]["endpoint"] == f"http://10.10.10.12/report/autoinstall/{MAC}"


def test_the_token_follows_the_revision_but_the_instance_id_does_not() -> None:
    one = render_generation(state("a" * 40), report_secret=SECRET)
    two = render_generation(state("b" * 40), report_secret=SECRET)
    assert one[f"cloud-init/{MAC}/user-data"] != two[f"cloud-init/{MAC}/user-data"]
    assert one[f"cloud-init/{MAC}/meta-data"] == two[f"cloud-init/{MAC}/meta-data"]
    assert template.report_token(SECRET, "node-1", "a" * 40) != template.report_token(SECRET, "node-2", "a" * 40)
    assert template.report_token(None, "node-1", "a" * 40) == ""


def test_a_template_naming_report_token_renders_it() -> None:
    edits = {"cloud-init/autoinstall.yaml": (
        "#cloud-config\nautoinstall:\n  version: 1\n  identity: {hostname: x, username: u, password: p}\n"
        "  reporting:\n    mine: {type: webhook, endpoint: '{{ report_url }}?token={{ report_token }}'}\n"
    )}
    files = render_generation(state("c" * 40, edits), report_secret=SECRET)
    doc = yaml.safe_load(files[f"cloud-init/{MAC}/user-data"])
    token = template.report_token(SECRET, "node-1", "c" * 40)
    assert doc["autoinstall"]["reporting"] == {
        "mine": {"type": "webhook", "endpoint": f"http://10.10.10.12/report/{MAC}?token={token}"},
        "netboot": {"type": "webhook", "endpoint": f"http://10.10.10.12/report/autoinstall/{MAC}?token={token}"},
    }


@pytest.mark.parametrize(
    ("reporting", "expected"),
    [
        ("    reporting: {x: {type: print}}\n", {"x": {"type": "print"}, "netboot": OURS}),
        ("    reporting: {}\n", {"netboot": OURS}),
        ("    reporting:  # theirs\n      x:\n        type: print\n", {"x": {"type": "print"}, "netboot": OURS}),
        ("    reporting:\n", {"netboot": OURS}),  # an empty mapping (null) of theirs
        ("    reporting:\n      netboot: {type: print}\n", {"netboot": {"type": "print"}, "netboot-reconcile": OURS}),
    ],
)
def test_a_users_own_reporting_keeps_ours_beside_theirs(reporting: str, expected: dict[str, object]) -> None:
    """Subiquity sends every event to every handler under `reporting`: theirs and ours both get them."""
    own = "#cloud-config\nautoinstall:\n    version: 1\n" + reporting + "    late-commands: [true]\nruncmd: [true]\n"
    doc = yaml.safe_load(with_reporting(own, OURS["endpoint"]))
    assert doc["autoinstall"]["reporting"] == expected
    assert doc["autoinstall"]["late-commands"] == [True] and doc["runcmd"] == [True]
    assert with_reporting(own, OURS["endpoint"]).startswith(own.split("    reporting")[0])


def test_with_reporting_leaves_other_user_data_alone() -> None:
    endpoint = "http://s/report/autoinstall/m"
    assert with_reporting("#cloud-config\nhostname: x\n", endpoint) == "#cloud-config\nhostname: x\n"
    flow = "#cloud-config\nautoinstall: {version: 1}\n"
    assert with_reporting(flow, endpoint) == flow
    four = "#cloud-config\nautoinstall:  # the installer\n    # a comment\n    version: 1\nruncmd: [true]\n"
    doc = yaml.safe_load(with_reporting(four, endpoint))
    assert doc["autoinstall"] == {"version": 1, "reporting": {"netboot": {"type": "webhook", "endpoint": endpoint}}}
    assert doc["runcmd"] == [True]
