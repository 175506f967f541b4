"""The BMC credentials file (`adapters.bmccreds`): what it accepts, and that no refusal quotes
the file's text (a password may be on the line a YAML error points at)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.bmccreds import CredentialsError, load


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "creds.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_yaml_and_json_entries_load_and_never_show_the_password(tmp_path: Path) -> None:
    creds = load(_write(tmp_path, 'lab: {username: admin, password: "hunter2-x"}\n'))
    assert creds["lab"].username == "admin" and creds["lab"].password == "hunter2-x"
    assert "hunter2-x" not in repr(creds) and "hunter2-x" not in str(creds["lab"])
    assert load(_write(tmp_path, '{"lab": {"username": "u", "password": "p"}}'))["lab"].username == "u"


@pytest.mark.parametrize(("text", "expected"), [
    ('lab: {username: admin, password: "hunter2-x\n', "not valid YAML or JSON at line"),
    ("lab: {username: admin}\n", "entry 'lab': expected exactly username and password"),
    ("lab: {username: admin, password: 12}\n", "entry 'lab': expected exactly username and password"),
    ("- hunter2-x\n", "expected a mapping"),
])
def test_a_bad_file_is_refused_naming_it_without_its_text(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(CredentialsError) as err:
        load(_write(tmp_path, text))
    assert expected in str(err.value) and str(tmp_path) in str(err.value)
    assert "hunter2" not in str(err.value)


def test_a_file_others_can_read_is_refused_like_an_ssh_key(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="permissions 0640 are too open"):
        load(_write(tmp_path, "lab: {username: a, password: b}\n", mode=0o640))
