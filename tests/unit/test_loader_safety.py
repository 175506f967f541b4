"""The loader never hangs, never executes, never crashes: refusals are findings with a place."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters.dirsource import read_directory
from reconciler.core.snapshot import MAX_FILE_BYTES, Snapshot
from reconciler.core.validate import validate
from reconciler.core.yamldoc import parse_json, parse_yaml
from tests import repo_builder

BILLION_LAUGHS = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_a_finding_not_a_hang() -> None:
    result = validate(repo_builder.snapshot({"nodes/node-1.yaml": BILLION_LAUGHS.decode()}))
    codes = [(i.file, i.code) for i in result.issues]
    assert ("nodes/node-1.yaml", "yaml-too-large") in codes
    assert result.state is None


def test_small_aliases_are_fine() -> None:
    doc, issues = parse_yaml("x.yaml", b"base: &b {rack: r1}\nlabels:\n  <<: *b\n  role: db\n")
    assert issues == ()
    assert doc is not None and doc.data["labels"] == {"rack": "r1", "role": "db"}


def test_python_tags_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"mac: !!python/object/apply:os.system ['touch {marker}']\nprofile: install\n"
    result = validate(repo_builder.snapshot({"nodes/node-1.yaml": text}))
    assert any(i.code == "yaml-unsafe-tag" for i in result.issues)
    assert not marker.exists()


def test_symlinks_and_oversized_files_are_refused_by_path(tmp_path: Path) -> None:
    repo_builder.write(tmp_path)
    (tmp_path / "nodes" / "node-2.yaml").unlink()
    os.symlink("/etc/passwd", tmp_path / "nodes" / "node-2.yaml")
    (tmp_path / "cloud-init" / "huge.yaml").write_bytes(b"#cloud-config\n" + b"#" * MAX_FILE_BYTES)
    os.symlink(tmp_path / "profiles", tmp_path / "groups-link")  # outside the format: ignored
    result = validate(read_directory(tmp_path))
    refused = {(i.file, i.code) for i in result.issues}
    assert ("nodes/node-2.yaml", "symlink") in refused
    assert ("cloud-init/huge.yaml", "file-too-large") in refused
    assert result.state is None


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    repo_builder.write(tmp_path)
    real = tmp_path / "real-nodes"
    (tmp_path / "nodes").rename(real)
    os.symlink(real, tmp_path / "nodes")
    result = validate(read_directory(tmp_path))
    assert ("nodes", "symlink") in {(i.file, i.code) for i in result.issues}


def test_directory_revision_is_a_content_digest(tmp_path: Path) -> None:
    repo_builder.write(tmp_path)
    first = read_directory(tmp_path).revision
    assert read_directory(tmp_path).revision == first
    (tmp_path / "nodes" / "node-1.yaml").write_text("mac: 52:54:00:aa:bb:01\nip: 10.10.10.209\nprofile: install\n")
    assert read_directory(tmp_path).revision != first


yaml_text = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(
            [
                "mac: ",
                "profile: ",
                "ip: ",
                "- ",
                "&a ",
                "*a ",
                "!!str ",
                "!!python/name:os.system ",
                "{",
                "}",
                "[",
                "]",
                ":",
                "\n",
                "  ",
                "'",
                '"',
                "52:54:00:aa:bb:01",
                "install",
                "<<: *a",
                "? ",
                "|",
                ">",
                "#",
                "\t",
            ]
        ),
        max_size=40,
    ).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(node=yaml_text, site=yaml_text)
def test_any_yaml_gives_findings_or_a_state(node: str, site: str) -> None:
    snap = Snapshot("r", repo_builder.files({"nodes/node-1.yaml": node, "netboot.yaml": site}))
    result = validate(snap)
    assert (result.state is None) == bool(result.errors)
    for issue in result.issues:
        assert issue.file and issue.code and issue.message


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_give_findings_or_a_state(raw: bytes) -> None:
    files = repo_builder.files()
    files["nodes/node-1.yaml"] = raw
    result = validate(Snapshot("r", files))
    assert (result.state is None) == bool(result.errors)


def test_all_digit_mac_is_not_a_base_60_number() -> None:
    doc, issues = parse_yaml("n.yaml", b"mac: 52:54:00:12:34:56\nlease: 1:30\n")
    assert issues == ()
    assert doc is not None and doc.data == {"mac": "52:54:00:12:34:56", "lease": "1:30"}


def test_yaml_11_booleans_stay_words() -> None:
    doc, issues = parse_yaml("n.yaml", b"mode: off\nanswer: yes\nflag: true\nother: False\n")
    assert issues == ()
    assert doc is not None and doc.data == {"mode": "off", "answer": "yes", "flag": True, "other": False}


def test_dhcp_mode_off_unquoted_is_valid() -> None:
    site = repo_builder.BASE["netboot.yaml"].replace("mode: full", "mode: off")
    result = validate(repo_builder.snapshot({"netboot.yaml": site}))
    assert result.issues == ()
    assert result.state is not None and result.state.site.dhcp_mode == "off"


def test_json_nested_past_64_levels_is_refused_at_its_field_and_brackets_in_text_do_not_count() -> None:
    deep = b"[" * 65 + b"]" * 65
    doc, issues = parse_json("groups/g.json", b'{"id": "g",\n "selector": {"x": ["[[[[", {"y": ' + deep + b"}]}}")
    assert doc is None
    assert [(i.code, i.line, i.column, i.message) for i in issues] == [
        ("json-too-deep", 2, 96, "selector.x[1].y: nested deeper than 64")]  # the 66th list or mapping opened
    text = b'{"id": "g", "name": "' + b"[" * 100 + b'", "metadata": ' + b"[" * 63 + b"]" * 63 + b"}"
    doc, issues = parse_json("groups/g.json", text)  # 64 levels: as deep as YAML allows
    assert issues == () and doc is not None and doc.data["name"] == "[" * 100
