"""Netboot lints: each one triggered by the mistake it exists for, at the arg's line."""

from __future__ import annotations

import pytest

from reconciler.core.model import Severity
from reconciler.core.validate import validate
from tests import repo_builder

PROFILE = """\
name: Install
boot:
  kernel: /assets/vmlinuz
  initrd: [/assets/initrd]
  args:
{args}
cloud_init: autoinstall
"""


def profile(*args: str, cloud_init: bool = True) -> str:
    text = PROFILE.format(args="\n".join(f"    - {a!r}" for a in args))
    return text if cloud_init else text.replace("cloud_init: autoinstall\n", "")


GOOD = ("autoinstall", "ip=dhcp", "ds=nocloud;s={{ cloud_init_url }};dsmode=net")


def codes_at(edits: dict[str, str | None]) -> dict[str, tuple[int, Severity]]:
    issues = validate(repo_builder.snapshot(edits)).issues
    return {i.code: (i.line, i.severity) for i in issues if i.file != ""}


@pytest.mark.parametrize(
    ("args", "code", "line", "severity"),
    [
        (
            ("autoinstall", "ip=dhcp", "ds=nocloud;s=http://10.10.10.12/cloud-init/x"),
            "nocloud-trailing-slash",
            8,
            Severity.ERROR,
        ),
        (
            ("autoinstall", "ip=dhcp", "ds=nocloud-net;s={{ cloud_init_url }}"),
            "nocloud-seed-mode",
            8,
            Severity.WARNING,
        ),
        (
            ("autoinstall", "ip=dhcp", "ds=nocloud;s={{ cloud_init_url }}"),
            "nocloud-seed-mode",
            8,
            Severity.WARNING,
        ),
        (
            (*GOOD, "url=http://10.10.10.12/assets/ubuntu-22.04.5-live-server-amd64.iso"),
            "ubuntu-iso-cloud-config-url",
            9,
            Severity.ERROR,
        ),
        (("autoinstall", "ds=nocloud;s={{ cloud_init_url }}"), "autoinstall-without-ip-dhcp", 1, Severity.WARNING),
    ],
)
def test_arg_lints(args: tuple[str, ...], code: str, line: int, severity: Severity) -> None:
    found = codes_at({"profiles/install.yaml": profile(*args)})
    assert code in found, found
    assert found[code] == (line, severity)


@pytest.mark.parametrize(
    "seed",
    [
        "ds=nocloud;s={{ cloud_init_url }};dsmode=net",  # what every cloud-init runs
        "ds=nocloud;dsmode=net;s={{ cloud_init_url }}",
        "ds=nocloud;s=/var/lib/seed/",  # a local seed: dsmode=local is right
        "ds=nocloud;s=http://10.10.10.12/seed/%s;dsmode=net",  # cloud-init puts the file name at %s
        "ds=nocloud;s=http://10.10.10.12/seed/%s.yaml?mac={{ mac }};dsmode=net",
    ],
)
def test_seed_argument_every_cloud_init_runs_has_no_finding(seed: str) -> None:
    found = codes_at({"profiles/install.yaml": profile("autoinstall", "ip=dhcp", seed)})
    assert not {"nocloud-seed-mode", "nocloud-trailing-slash"} & set(found), found


def test_seed_mode_message_says_what_to_write() -> None:
    issues = validate(repo_builder.snapshot({"profiles/install.yaml": profile(
        "autoinstall", "ip=dhcp", "ds=nocloud;s={{ cloud_init_url }}")})).issues
    messages = [i.message for i in issues if i.code == "nocloud-seed-mode"]
    assert messages and "';dsmode=net'" in messages[0] and "23.2" in messages[0], messages


def test_ubuntu_2004_iso_does_not_need_cloud_config_url() -> None:
    found = codes_at({"profiles/install.yaml": profile(*GOOD, "url=http://x/ubuntu-20.04.6-live-server-amd64.iso")})
    assert "ubuntu-iso-cloud-config-url" not in found


def test_autoinstall_without_cloud_init_is_an_error() -> None:
    found = codes_at({"profiles/install.yaml": profile("autoinstall", "ip=dhcp", cloud_init=False)})
    assert found["autoinstall-without-cloud-init"] == (1, Severity.ERROR)


def test_user_data_must_start_with_cloud_config() -> None:
    found = codes_at({"cloud-init/autoinstall.yaml": "autoinstall:\n  version: 1\n"})
    assert found["user-data-not-cloud-config"] == (1, Severity.ERROR)


def test_autoinstall_needs_version_1() -> None:
    found = codes_at({"cloud-init/autoinstall.yaml": "#cloud-config\nautoinstall:\n  identity: {hostname: x}\n"})
    assert found["autoinstall-version"][1] is Severity.ERROR


def test_autoinstall_arg_without_autoinstall_section_warns() -> None:
    found = codes_at({"cloud-init/autoinstall.yaml": "#cloud-config\nhostname: {{ hostname }}\n"})
    assert found["autoinstall-section-missing"][1] is Severity.WARNING


def test_rendered_user_data_must_be_yaml() -> None:
    found = codes_at({"cloud-init/autoinstall.yaml": "#cloud-config\na: [\n"})
    assert "user-data-yaml" in found


def test_asset_not_listed_in_manifest() -> None:
    manifest = "assets:\n  - path: /assets/vmlinuz\n  - path: /assets/ubuntu-22.04.5-live-server-amd64.iso\n"
    issues = validate(repo_builder.snapshot({"assets.yaml": manifest})).issues
    missing = [i for i in issues if i.code == "asset-not-listed"]
    assert [i.message.split(":")[0] for i in missing] == ["/assets/initrd"]
    assert missing[0].file == "profiles/install.yaml"


def test_no_manifest_no_asset_lint() -> None:
    assert validate(repo_builder.snapshot()).issues == ()


def test_rendered_arg_with_whitespace_is_refused() -> None:
    found = codes_at(
        {
            "profiles/install.yaml": profile(*GOOD, "x={{ metadata.v }}"),
            "nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\nmetadata: {v: 'a b'}\n",
            "nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nip: 10.10.10.202\nprofile: install\nmetadata: {v: ok}\n",
        }
    )
    assert found["arg-whitespace"] == (9, Severity.ERROR)


def test_warnings_do_not_block_a_state() -> None:
    result = validate(
        repo_builder.snapshot({"profiles/install.yaml": profile("autoinstall", "ds=nocloud;s={{ cloud_init_url }}")})
    )
    assert result.warnings and not result.errors
    assert result.state is not None
