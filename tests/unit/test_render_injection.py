"""No injection: a value that would break out of its place in a rendered file is refused at
validation (boot scripts, reserved names) or written so the reading tool sees data (JSON, env
files, GRUB words)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from reconciler.core.model import Issue
from reconciler.core.render import render_generation
from reconciler.core.render.grub import quote
from reconciler.core.validate import validate
from tests.render_support import example_snapshot, valid_state


def _with(edits: dict[str, bytes | None]) -> tuple[Issue, ...]:
    snap = example_snapshot()
    files = dict(snap.files)
    files.pop("assets.yaml")
    for path, data in edits.items():
        if data is None:
            files.pop(path, None)
        else:
            files[path] = data
    return validate(dataclasses.replace(snap, files=files)).errors


PROFILE = "boot:\n  kernel: {kernel}\n  initrd: [{initrd}]\n  args: [{args}]\n"


def _profile(kernel: str = "/assets/k", initrd: str = "/assets/i", args: str = "quiet") -> bytes:
    return PROFILE.format(kernel=kernel, initrd=initrd, args=args).encode()


@pytest.mark.parametrize(
    "args",
    [
        "'||'",
        "'&&'",
        "';'",
        "'#comment'",
        "'console=\"ttyS0\"'",
        '"it\'s"',
        "'a\\b'",
        "'{{ metadata.sep }}'",
    ],
)
def test_argument_that_breaks_out_of_a_boot_script_is_refused(args: str) -> None:
    node = b"mac: 52:54:00:aa:bb:20\nip: 10.10.10.220\nprofile: local-disk\nmetadata: {sep: '||'}\n"
    errors = _with({"profiles/local-disk.yaml": _profile(args=args), "nodes/legacy-1.yaml": node})
    unsafe = [e for e in errors if e.code == "boot-value-unsafe"]
    assert len(unsafe) == 1
    assert unsafe[0].file == "profiles/local-disk.yaml" and unsafe[0].line == 4
    # The example's default group boots the same profile; with no `sep` in its metadata the
    # template cannot render for it: that is its own finding, nothing else is.
    assert {e.code for e in errors} <= {"boot-value-unsafe", "template-undefined"}


@pytest.mark.parametrize(
    ("kernel", "initrd"),
    [("'/assets/k ; x'", "/assets/i"), ("/assets/k", "'/assets/i #x'"), ("'/assets/\"k'", "/assets/i")],
)
def test_kernel_or_initrd_that_breaks_out_is_refused(kernel: str, initrd: str) -> None:
    errors = _with({"profiles/local-disk.yaml": _profile(kernel=kernel, initrd=initrd)})
    assert "boot-value-unsafe" in [e.code for e in errors]


@pytest.mark.parametrize(
    ("kernel", "initrd", "line"), [("'/assets/k ; x'", "/assets/i", 2), ("/assets/k", "'/assets/i #x'", 3)]
)
def test_unsafe_kernel_or_initrd_is_reported_at_its_own_line(kernel: str, initrd: str, line: int) -> None:
    # Line 1 is `boot:`, 2 `kernel:`, 3 `initrd:`: the finding points at the value's line, as every
    # other finding about a boot path does (not at the profile's first line).
    errors = _with({"profiles/local-disk.yaml": _profile(kernel=kernel, initrd=initrd)})
    assert [(e.file, e.line) for e in errors if e.code == "boot-value-unsafe"] == [("profiles/local-disk.yaml", line)]


def test_matchbox_initrd_name_form_is_accepted() -> None:
    assert _with({"profiles/local-disk.yaml": _profile(initrd="'--name main /assets/i'")}) == ()


def test_reserved_names_are_refused() -> None:
    node = b"mac: 52:54:00:aa:bb:30\nprofile: local-disk\n"
    codes = {e.code: e.file for e in _with({"nodes/group-x.yaml": node})}
    assert codes == {"reserved-name": "nodes/group-x.yaml"}
    codes = {e.code: e.file for e in _with({"profiles/node.x.yaml": _profile()})}
    assert codes == {"reserved-id": "profiles/node.x.yaml"}
    codes = {e.code: e.file for e in _with({"groups/node.x.yaml": b"profile: local-disk\n"})}
    assert codes == {"reserved-id": "groups/node.x.yaml"}


def test_free_form_metadata_stays_data_in_json_and_env_files() -> None:
    snap = example_snapshot()
    files = dict(snap.files)
    files["nodes/legacy-1.yaml"] = (
        b"mac: 52:54:00:aa:bb:20\nip: 10.10.10.220\nprofile: local-disk\n"
        b'metadata:\n  note: "line one\\nEVIL=1 \\"quoted\\" ; {brace}"\n  when: 2024-01-02\n'
        b'  nested: {"k=v": x, 7: seven}\n'
    )
    out = render_generation(valid_state(dataclasses.replace(snap, files=files)))
    group = json.loads(out["groups/node.legacy-1.json"])
    assert group["metadata"]["note"] == 'line one\nEVIL=1 "quoted" ; {brace}'
    assert group["metadata"]["when"] == "2024-01-02"
    env = out["metadata/legacy-1.env"].decode().splitlines()
    assert not any(line.startswith("EVIL=") for line in env)
    assert 'NOTE="line one\\nEVIL=1 \\"quoted\\" ; {brace}"' in env
    assert "NESTED_K_V=x" in env and "NESTED_7=seven" in env


@pytest.mark.parametrize("word", ["plain", "ds=nocloud;s=http://x/", "it's", "${x} {y} #z", "a'b'c"])
def test_grub_quote_keeps_the_word_literal(word: str) -> None:
    quoted = quote(word)
    # GRUB single quotes: nothing is special inside; a quote is closed, escaped, reopened.
    assert quoted.startswith("'") and quoted.endswith("'")
    assert quoted[1:-1].replace("'\\''", "").count("'") == 0
    assert quoted[1:-1].replace("'\\''", "'") == word


@pytest.mark.parametrize(
    ("kernel", "initrd", "line"), [("vmlinuz", "/assets/i", 2), ("/assets/k", "'--name main ./initrd'", 3)]
)
def test_a_relative_kernel_or_initrd_path_is_refused(kernel: str, initrd: str, line: int) -> None:
    errors = _with({"profiles/local-disk.yaml": _profile(kernel=kernel, initrd=initrd)})
    assert [(e.code, e.line) for e in errors if e.code == "boot-path-relative"] == [("boot-path-relative", line)]


def test_absolute_and_url_boot_paths_are_accepted() -> None:
    profile = _profile(kernel="http://mirror.example/vmlinuz", initrd="tftp://10.10.10.12/initrd")
    assert _with({"profiles/local-disk.yaml": profile}) == ()
