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


def _secret_volume(tmp_path: Path, text: str, mode: int) -> Path:
    """Lay the file out as kubelet mounts a Secret: KEY -> ..data/KEY, ..data -> ..<timestamp>/."""
    stamp = tmp_path / "..2026_12_06_22_00_00.1"
    stamp.mkdir()
    (stamp / "credentials.yaml").write_text(text)
    (stamp / "credentials.yaml").chmod(mode)
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "credentials.yaml").symlink_to("..data/credentials.yaml")
    return tmp_path / "credentials.yaml"


def test_a_file_mounted_from_a_kubernetes_secret_loads(tmp_path: Path) -> None:
    # contrib/kubernetes mounts --bmc-credentials from a Secret; kubelet makes each key a symlink
    creds = load(_secret_volume(tmp_path, "lab: {username: a, password: b}\n", mode=0o400))
    assert creds["lab"].username == "a"


def test_a_symlink_to_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="permissions 0644 are too open"):
        load(_secret_volume(tmp_path, "lab: {username: a, password: b}\n", mode=0o644))
