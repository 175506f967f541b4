"""Files read out of real ISO 9660 images (xorriso) without mounting: Rock Ridge, Joliet-only and
plain ISO 9660 names; a missing file, a directory and a truncated image are errors with nothing left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.assetfetch import AssetInvalid
from reconciler.adapters.isoimage import extract
from tests.asset_lab import sha256_of
from tests.support import patterned_bytes, require_tool

KERNEL = patterned_bytes(70_000, seed=5)


def iso(tmp: Path, flags: list[str]) -> Path:
    src = tmp / "src"
    (src / "casper").mkdir(parents=True)
    (src / "casper" / "vmlinuz").write_bytes(KERNEL)
    out = tmp / "image.iso"
    subprocess.run([require_tool("xorriso", "xorriso"), "-as", "mkisofs", *flags, "-o", str(out), str(src)],
                   check=True, capture_output=True)
    return out


@pytest.mark.parametrize("flags", [["-r", "-J"], ["-J"], []], ids=["rock-ridge", "joliet", "iso9660"])
def test_a_file_is_read_by_its_name_in_every_flavour(tmp_path: Path, flags: list[str]) -> None:
    image = iso(tmp_path, flags)
    out = tmp_path / "out"
    sha, size = extract(image, "casper/vmlinuz", out, "/assets/vmlinuz")
    assert out.read_bytes() == KERNEL and (sha, size) == (sha256_of(out), len(KERNEL))


@pytest.mark.parametrize(("inner", "message"), [("casper/nope", "the image has no file casper/nope"),
                                                 ("casper", "casper is a directory in the image")])
def test_what_the_image_does_not_hold_as_a_file(tmp_path: Path, inner: str, message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(AssetInvalid, match=message):
        extract(iso(tmp_path, ["-r", "-J"]), inner, out, "/assets/x")
    assert not out.exists()


def test_a_truncated_image_is_an_error(tmp_path: Path) -> None:
    image = iso(tmp_path, ["-r", "-J"])
    data = image.read_bytes()
    start = data.find(KERNEL[:64])
    assert start > 0
    image.write_bytes(data[: start + 1000])  # the kernel's tail is gone
    out = tmp_path / "out"
    with pytest.raises(AssetInvalid, match=r"image\.iso is cut short"):
        extract(image, "casper/vmlinuz", out, "/assets/x")
    assert not out.exists()
