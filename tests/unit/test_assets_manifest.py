"""assets.yaml: the fetch/verify/extract forms, and each broken form's finding at its file and line."""

from __future__ import annotations

import base64

import pytest

from reconciler.core import assets as manifest
from reconciler.core.model import Issue
from reconciler.core.validate import validate
from tests import repo_builder

ISO = "/assets/ubuntu-22.04.5-live-server-amd64.iso"
SHA = "9bc6028870aef3f74f4e16b900008179e78b130e6b0b9a140635434a46aa98b0"
GOOD = f"""assets:
  - path: {ISO}
    url: https://releases.ubuntu.com/22.04.5/ubuntu-22.04.5-live-server-amd64.iso
    sha256: {SHA}
  - path: /assets/vmlinuz
    from: {ISO}
    file: casper/vmlinuz
  - path: /assets/initrd
    from: {ISO}
    file: casper/initrd
"""


def findings(text: str, extra: dict[str, str | None] | None = None) -> list[Issue]:
    return list(validate(repo_builder.snapshot({"assets.yaml": text, **(extra or {})})).issues)


def test_the_ubuntu_forms_are_valid_and_become_values() -> None:
    result = validate(repo_builder.snapshot({"assets.yaml": GOOD}))
    assert result.issues == ()
    assert result.state is not None and result.state.assets is not None
    iso, kernel, _ = result.state.assets
    assert (iso.url, iso.sha256, iso.fetched, iso.extracted) == (
        "https://releases.ubuntu.com/22.04.5/ubuntu-22.04.5-live-server-amd64.iso", SHA, True, False)
    assert (kernel.from_path, kernel.file, kernel.managed) == (ISO, "casper/vmlinuz", True)


def test_path_only_entries_stay_valid() -> None:
    text = f"assets:\n  - path: /assets/vmlinuz\n  - path: /assets/initrd\n    sha256: {SHA}\n  - path: {ISO}\n"
    assert findings(text) == []


def test_a_signed_checksums_entry_reads_its_keyring_from_the_repository() -> None:
    text = GOOD.replace(f"    sha256: {SHA}\n", "    checksums: https://h/SHA256SUMS\n"
                        "    signature: https://h/SHA256SUMS.gpg\n    keyring: keys/ubuntu.gpg\n")
    result = validate(repo_builder.snapshot({"assets.yaml": text, "keys/ubuntu.gpg": "KEYDATA"}))
    assert result.issues == ()
    assert result.state is not None and result.state.assets is not None
    assert result.state.assets[0].keyring_data == b"KEYDATA"


@pytest.mark.parametrize(
    ("edit", "code", "line"),
    [
        # a url nothing can verify: reported at the url's line
        (lambda t: t.replace(f"    sha256: {SHA}\n", ""), "asset-unverifiable", 3),
        # `from` naming no listed asset: at the from line
        (lambda t: t.replace(f"    from: {ISO}\n    file: casper/vmlinuz", "    from: /assets/nope.iso\n"
                             "    file: casper/vmlinuz"), "asset-from-unknown", 6),
        # `from` naming an extracted file, not an image
        (lambda t: t.replace(f"    from: {ISO}\n    file: casper/initrd", "    from: /assets/vmlinuz\n"
                             "    file: casper/initrd"), "asset-from-unknown", 9),
        # a signature with no keyring to check it against
        (lambda t: t.replace(f"    sha256: {SHA}\n", "    checksums: https://h/SUMS\n    signature: https://h/SUMS.gpg\n"),
         "asset-signature-needs-keyring", 5),
        # a keyring the repository does not hold
        (lambda t: t.replace(f"    sha256: {SHA}\n", "    checksums: https://h/SUMS\n    signature: https://h/S.gpg\n"
                             "    keyring: keys/missing.gpg\n"), "keyring-missing", 6),
        # a file escaping the image
        (lambda t: t.replace("file: casper/vmlinuz", "file: casper/../../etc/passwd"), "schema", 7),
        # both sources at once
        (lambda t: t.replace("    file: casper/initrd\n", "    file: casper/initrd\n    url: https://h/initrd\n"
                             f"    sha256: {SHA}\n"), "asset-two-sources", 9),
        # the store's own directory is not a served path
        (lambda t: t.replace("path: /assets/vmlinuz", "path: /assets/.netboot/blobs/x"), "schema", 5),
    ],
)
def test_each_broken_entry_is_reported_at_its_line(edit: object, code: str, line: int) -> None:
    text = edit(GOOD)  # type: ignore[operator]
    hits = [i for i in findings(text) if i.code == code]
    assert hits, findings(text)
    assert (hits[0].file, hits[0].line) == ("assets.yaml", line), hits


def test_an_asset_a_profile_uses_and_the_manifest_does_not_list_is_an_error() -> None:
    text = GOOD.replace("  - path: /assets/initrd\n    from: " + ISO + "\n    file: casper/initrd\n", "")
    hit = [i for i in findings(text) if i.code == "asset-not-listed"]
    assert [(i.file, i.message.split(":")[0]) for i in hit] == [("profiles/install.yaml", "/assets/initrd")]


def test_checksum_files_in_gnu_and_bsd_form() -> None:
    text = (f"{SHA} *ubuntu-22.04.5-live-server-amd64.iso\n"
            f"{'a' * 64}  ./ubuntu-22.04.5-desktop-amd64.iso\n"
            f"SHA256 (other.iso) = {'B' * 64}\n")
    assert manifest.parse_checksums(text, "ubuntu-22.04.5-live-server-amd64.iso") == SHA
    assert manifest.parse_checksums(text, "ubuntu-22.04.5-desktop-amd64.iso") == "a" * 64
    assert manifest.parse_checksums(text, "other.iso") == "b" * 64
    assert manifest.parse_checksums(text, "ubuntu") is None


def test_an_armored_key_is_dearmored_and_a_binary_one_kept() -> None:
    packets = bytes(range(200))
    b64 = base64.b64encode(packets).decode()
    armored = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n"
               + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
               + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n").encode()
    assert manifest.dearmor(armored) == packets
    assert manifest.dearmor(packets) == packets


def test_the_spec_key_changes_with_any_source_field() -> None:
    result = validate(repo_builder.snapshot({"assets.yaml": GOOD}))
    assert result.state is not None and result.state.assets is not None
    iso, kernel, initrd = result.state.assets
    keys = {manifest.spec_key(a) for a in (iso, kernel, initrd)}
    assert len(keys) == 3


def test_diff_names_a_changed_file_inside_the_iso_and_what_a_new_iso_reaches() -> None:
    from reconciler.core.plan import compare, side

    def make(text: str, revision: str) -> object:
        result = validate(repo_builder.snapshot({"assets.yaml": text}, revision=revision))
        assert result.state is not None, result.issues
        return side(revision, result.state, result.issues)

    base = make(GOOD, "a" * 40)
    moved = make(GOOD.replace("file: casper/vmlinuz", "file: casper/hwe-vmlinuz"), "b" * 40)
    (source,) = compare(base, moved).sources  # type: ignore[arg-type]
    assert (source.kind, source.note) == ("assets", "changed entries: /assets/vmlinuz")
    assert source.reaches == ("node-1", "node-2")
    new_iso = make(GOOD.replace(SHA, "f" * 64), "c" * 40)
    (source,) = compare(base, new_iso).sources  # type: ignore[arg-type]
    assert source.note == f"changed entries: /assets/initrd, {ISO}, /assets/vmlinuz"
