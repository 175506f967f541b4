"""Our Ignition checks against Ignition's own: `ignition-validate` (Debian package `ignition`).

matchbox parses the configs it serves with Ignition's config package (matchbox/http/ignition.go)
and Ignition refuses a bad config at boot; `ignition-validate` runs that same parser. For each
config below, what our validation says (error / warning / nothing) must be what Ignition says
(exit status / "warning" lines / silence), and matchbox's own example configs pass both.
Debian's Ignition is 2.14, which knows specs up to 3.3.0 (3.4.0 only as 3.4.0-experimental), so
the shared cases use 3.3.0.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.core.ignition import check_ignition
from tests.support import require_tool

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "matchbox" / "examples" / "ignition"

CASES = {
    "valid": '{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core"}]}}',
    "no version": '{"passwd": {}}',
    "unknown version": '{"ignition": {"version": "3.9.0"}}',
    "users not a list": '{"ignition": {"version": "3.3.0"}, "passwd": {"users": {"name": "core"}}}',
    "unit name not a string": '{"ignition": {"version": "3.3.0"}, "systemd": {"units": [{"name": 7}]}}',
    "mode not an integer": '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/a", "mode": "0644"}]}}',
    "unknown top-level key": '{"ignition": {"version": "3.3.0"}, "foo": 1}',
    "unknown nested key": '{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core", "sshKeys": []}]}}',
    "not json": '{"ignition": ',
}


def _ignition_says(path: Path) -> tuple[bool, bool]:
    """(Ignition refuses it, Ignition warns about it)."""
    tool = require_tool("ignition-validate", "ignition")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False, timeout=30)
    return proc.returncode != 0, "warning" in (proc.stdout + proc.stderr)


def _we_say(name: str, content: bytes) -> tuple[bool, bool]:
    found = check_ignition(f"ignition/{name}", content)
    return any(i.is_error for i in found), any(not i.is_error for i in found)


@pytest.mark.parametrize("case", sorted(CASES))
def test_our_verdict_is_ignitions(tmp_path: Path, case: str) -> None:
    path = tmp_path / "config.ign"
    path.write_text(CASES[case])
    assert _we_say("config.ign", path.read_bytes()) == _ignition_says(path)


def test_a_spec_2_config_is_refused_by_ignition_and_we_say_so(tmp_path: Path) -> None:
    """Only Flatcar's Ignition still translates spec 2: ours warns (a Flatcar site may serve it),
    naming the refusal that Ignition itself gives."""
    path = tmp_path / "config.ign"
    path.write_text('{"ignition": {"version": "2.2.0"}}')
    refused, _ = _ignition_says(path)
    found = check_ignition("ignition/config.ign", path.read_bytes())
    assert refused and [i.code for i in found] == ["ignition-spec-2"] and "refuses" in found[0].message


@pytest.mark.parametrize("name", ["fedora-coreos.ign", "flatcar-install.ign"])
def test_matchboxs_example_configs_pass_ignition_and_us(name: str) -> None:
    path = EXAMPLES / name
    assert _ignition_says(path) == (False, False)
    assert _we_say(name, path.read_bytes()) == (False, False)
