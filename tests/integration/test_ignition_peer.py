"""Our Ignition checks against Ignition's own: `ignition-validate` (Debian package `ignition`).

matchbox parses the configs it serves with Ignition's config package (matchbox/http/ignition.go)
and Ignition refuses a bad config at boot; `ignition-validate` runs that same parser. For each
config below, what our validation says (error / warning / nothing) must be what Ignition says
(exit status / "warning" lines / silence), and matchbox's own example configs pass both.
Debian's Ignition is 2.14, which knows specs up to 3.3.0 (3.4.0 only as 3.4.0-experimental), so
the shared cases use 3.3.0.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.core.ignition import ADDED_IN, check_ignition
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


# A value for each newer field, and the fields list items need (so a config is about that key only).
_LEAF: dict[str, object] = {
    "compression": None, "httpHeaders": [], "proxy": {}, "mountOptions": [], "resize": True, "luks": [],
    "shouldExist": True, "kernelArguments": {}, "advertisement": None, "discard": True, "openOptions": [],
}
_ITEM: dict[str, dict[str, object]] = {
    "merge": {"source": "http://x/a.ign"}, "certificateAuthorities": {"source": "http://x/ca.pem"},
    "filesystems": {"device": "/dev/sda1"}, "files": {"path": "/a"}, "append": {"source": "http://x/a"},
    "disks": {"device": "/dev/sda"}, "partitions": {"number": 1}, "users": {"name": "core"},
    "groups": {"name": "core"}, "luks": {"name": "a", "device": "/dev/sda2"}, "tang": {"url": "http://x"},
}


def _config_with(path: tuple[str, ...], version: str) -> dict[str, object]:
    config: dict[str, object] = {"ignition": {"version": version}}
    here: dict[str, object] = config
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if last:
            here[key] = _LEAF[key]
        elif path[i + 1] == "*":
            item = dict(_ITEM[key])
            here[key] = [item]
            here = item
        elif key != "*":
            here = here.setdefault(key, {})  # type: ignore[assignment]
    return config


@pytest.mark.parametrize("version", ["3.0.0", "3.1.0", "3.2.0", "3.3.0"])
def test_newer_fields_are_unused_keys_where_ignition_says_so(tmp_path: Path, version: str) -> None:
    """Every entry of ADDED_IN, in a config of each spec Debian's Ignition knows: we warn about
    the key exactly when Ignition warns 'Unused key' about it."""
    tool = require_tool("ignition-validate", "ignition")
    disagree = []
    for path in ADDED_IN:
        config = _config_with(path, version)
        file = tmp_path / "config.ign"
        file.write_text(json.dumps(config))
        proc = subprocess.run([tool, str(file)], capture_output=True, text=True, check=False, timeout=30)
        ignition_unused = f"Unused key {path[-1]}" in proc.stdout + proc.stderr
        ours = {i.message.split(":", 1)[0] for i in check_ignition("ignition/c.ign", file.read_bytes())
                if i.code == "ignition-unknown-key"}
        we_unused = any(shown.endswith(path[-1]) for shown in ours)
        if ignition_unused != we_unused:
            disagree.append((".".join(path), ignition_unused, we_unused, proc.stdout + proc.stderr))
    assert disagree == []
