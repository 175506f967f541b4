"""One pass reports everything (issue 22 item 5): a profile invalid for one reason is still checked
for the rest, profiles nothing boots are linted too, and a wrong profile name says what was meant."""

from __future__ import annotations

from reconciler.core.validate import validate
from tests import repo_builder

SPARE = """\
name: Spare
boot:
  kernel: /assets/vmlinuz
  initrd: [/assets/initrd]
  args:
    - autoinstall
    - ip=dhcp
    - "ds=nocloud;s=http://10.10.10.12/seed"
    - url=http://10.10.10.12/assets/ubuntu-22.04.5-live-server-amd64.iso
cloud_init: autoinstall
"""


def found(edits: dict[str, str | None]) -> set[tuple[str, str, int]]:
    return {(i.code, i.file, i.line) for i in validate(repo_builder.snapshot(edits)).issues}


def test_a_profile_whose_id_differs_from_its_file_is_still_linted() -> None:
    issues = found({"profiles/install.yaml": SPARE.replace("name: Spare\n", "id: installer\nname: Spare\n")})
    assert ("profile-id-mismatch", "profiles/install.yaml", 1) in issues
    assert ("nocloud-trailing-slash", "profiles/install.yaml", 9) in issues
    assert ("ubuntu-iso-cloud-config-url", "profiles/install.yaml", 10) in issues


def test_a_profile_no_node_or_group_uses_is_linted() -> None:
    issues = found({"profiles/spare.yaml": SPARE})
    assert ("nocloud-trailing-slash", "profiles/spare.yaml", 8) in issues
    assert ("ubuntu-iso-cloud-config-url", "profiles/spare.yaml", 9) in issues


def test_an_unused_profile_that_needs_a_real_node_is_not_an_error() -> None:
    # Rendered for a sample node, a node's own metadata is missing: that is for the node that uses it.
    iso = "    - url=http://10.10.10.12/assets/ubuntu-22.04.5-live-server-amd64.iso\n"
    spare = SPARE.replace('"ds=nocloud;s=http://10.10.10.12/seed"', '"console={{ metadata.console }}"')
    spare = spare.replace(iso, "    - cloud-config-url=/dev/null\n")
    assert {code for code, file, _ in found({"profiles/spare.yaml": spare}) if file == "profiles/spare.yaml"} == set()


def test_ref_profile_says_what_was_meant() -> None:
    node = "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: {}\n"
    for wrong, meant in (("instal", "'install'"), ("Local", "'local'"), ("installer-2204", "'install'")):
        issues = validate(repo_builder.snapshot({"nodes/node-1.yaml": node.format(wrong)})).issues
        (ref,) = [i for i in issues if i.code == "ref-profile"]
        assert f"did you mean {meant}" in ref.message, (wrong, ref.message)
    issues = validate(repo_builder.snapshot({"nodes/node-1.yaml": node.format("zzz")})).issues
    (ref,) = [i for i in issues if i.code == "ref-profile"]
    assert "(profiles: install, local)" in ref.message
