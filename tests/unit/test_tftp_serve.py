"""protocol.tftp_serve: which file a TFTP request gets, or the error, as values (no sockets, no files).

Symlinks are modelled by a small resolver over a dict (link -> target), so a generated name is
checked against the same confinement the server applies with os.path.realpath.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.protocol import tftp as proto
from reconciler.protocol.tftp_serve import (
    Admission,
    FromGeneration,
    FromRoot,
    RootPolicy,
    admit,
    open_failed,
    resolve,
    served_size,
)

ROOT = "/srv/tftp"
POLICY = RootPolicy(ROOT, frozenset({"/boot/ipxe.efi"}))
LINKS = {
    "/srv/tftp/etc": "/etc",  # a directory outside the root
    "/srv/tftp/passwd": "/etc/passwd",
    "/srv/tftp/up": "..",  # relative, leaves the root
    "/srv/tftp/ipxe.efi": "/boot/ipxe.efi",  # Debian's symlink into /boot: allowed
    "/srv/tftp/ipxe.lkrn": "/boot/ipxe.lkrn",  # not in this policy's allowed list
    "/srv/tftp/efi": "sub/efi",  # stays inside
    "/srv/tftp/loop": "loop",
}


def fake_realpath(links: Mapping[str, str]) -> Callable[[str], str]:
    """os.path.realpath over a tree whose only symlinks are `links` (absolute link path -> target)."""

    def realpath(path: str) -> str:
        parts = [p for p in path.split("/") if p]
        resolved = "/"
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                resolved = posixpath.dirname(resolved)
                continue
            candidate = posixpath.join(resolved, part)
            target = links.get(candidate)
            if target is None or hops > 40:
                resolved = candidate
                continue
            hops += 1
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                resolved = "/"
        return resolved

    return realpath


REALPATH = fake_realpath(LINKS)


def rrq(name: str, mode: str = "octet") -> proto.ReadRequest:
    return proto.ReadRequest(name, mode, ())


def test_the_generations_file_wins_over_the_root() -> None:
    files = {"tftp/ipxe.efi": b"rendered"}
    assert resolve(rrq("/ipxe.efi"), files, POLICY, REALPATH) == FromGeneration(b"rendered", 8)
    assert resolve(rrq("ipxe.efi", "netascii"), files, POLICY, REALPATH) == FromGeneration(b"rendered", None)
    # Not in the generation: the root, through Debian's allowed symlink.
    assert resolve(rrq("ipxe.efi"), {}, POLICY, REALPATH) == FromRoot("/boot/ipxe.efi", False)
    assert resolve(rrq("ipxe.efi"), None, POLICY, REALPATH) == FromRoot("/boot/ipxe.efi", False)


@pytest.mark.parametrize("name", ["passwd", "etc/passwd", "etc/shadow", "up/etc/passwd", "ipxe.lkrn", "up"])
def test_a_symlink_out_of_the_root_is_refused_whether_or_not_its_target_exists(name: str) -> None:
    with pytest.raises(proto.TftpError) as refused:
        resolve(rrq(name), {}, POLICY, REALPATH)
    assert (refused.value.code, refused.value.message) == (proto.ERR_ACCESS, "access violation")


@pytest.mark.parametrize(("name", "code"), [("../etc/passwd", proto.ERR_ACCESS), ("a\\b", proto.ERR_ACCESS),
                                            ("a\x01", proto.ERR_ACCESS), ("/", proto.ERR_NOT_FOUND),
                                            ("", proto.ERR_NOT_FOUND)])
def test_a_name_that_could_escape_is_refused_before_any_lookup(name: str, code: int) -> None:
    def no_lookup(path: str) -> str:
        raise AssertionError(f"looked up {path}")

    with pytest.raises(proto.TftpError) as refused:
        resolve(rrq(name), {}, POLICY, no_lookup)
    assert refused.value.code == code


def test_a_symlink_inside_the_root_is_followed() -> None:
    assert resolve(rrq("//efi/./grubx64.efi"), {}, POLICY, REALPATH) == FromRoot("/srv/tftp/sub/efi/grubx64.efi",
                                                                                   False)


NAMES = st.lists(
    st.sampled_from(["", ".", "..", "etc", "passwd", "up", "ipxe.efi", "ipxe.lkrn", "efi", "loop", "sub", "x\\y",
                     "a\x00", "ü", "boot"]),
    max_size=6,
).map("/".join)


@settings(max_examples=500, deadline=None)
@given(NAMES, st.sampled_from(["octet", "netascii"]), st.booleans())
def test_whatever_the_name_the_answer_is_a_file_inside_the_root_an_allowed_one_or_an_error(
    name: str, mode: str, in_generation: bool
) -> None:
    files = {"tftp/" + name.strip("/"): b"x"} if in_generation else {}
    try:
        found = resolve(rrq(name, mode), files, POLICY, REALPATH)
    except proto.TftpError as error:
        assert error.code in (proto.ERR_ACCESS, proto.ERR_NOT_FOUND)
        return
    if isinstance(found, FromGeneration):
        assert found.data == b"x" and found.size == (None if mode == "netascii" else 1)
        return
    assert isinstance(found, FromRoot)  # POLICY has no assets root
    assert found.path.startswith(ROOT + "/") or found.path in POLICY.allow_outside
    assert found.netascii == (mode == "netascii")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_characters="\\\x7f"), max_size=40))
def test_a_plain_name_is_served_from_below_the_root(name: str) -> None:
    # No symlinks: any name without '..' lands below the root, normalised; one with '..' is refused.
    parts = [p for p in name.split("/") if p not in ("", ".")]
    try:
        found = resolve(rrq(name), {}, POLICY, posixpath.normpath)
    except proto.TftpError as error:
        assert ".." in parts or not parts
        assert error.code == (proto.ERR_ACCESS if ".." in parts else proto.ERR_NOT_FOUND)
        return
    assert found == FromRoot(ROOT + "/" + "/".join(parts), False)


def test_admission_refuses_writes_then_a_full_server_then_a_busy_client() -> None:
    limits = Admission(max_transfers=2, max_per_client=1)
    write = proto.WriteRequest("f", "octet", ())
    cases: list[tuple[proto.ReadRequest | proto.WriteRequest, int, int, int, str]] = [
        (write, 0, 0, proto.ERR_ACCESS, "writes are not allowed"),
        (write, 5, 5, proto.ERR_ACCESS, "writes are not allowed"),
        (rrq("f"), 2, 0, proto.ERR_UNDEFINED, "server busy, try again"),
        (rrq("f"), 1, 1, proto.ERR_UNDEFINED, "too many transfers from this client"),
    ]
    for request, in_flight, from_client, code, message in cases:
        with pytest.raises(proto.TftpError) as refused:
            admit(request, in_flight, from_client, limits)
        assert (refused.value.code, refused.value.message) == (code, message)
    read = rrq("f")
    assert admit(read, 1, 0, limits) is read


def test_what_an_opened_file_announces() -> None:
    octet, netascii = FromRoot("/srv/tftp/f", False), FromRoot("/srv/tftp/f", True)
    assert served_size(octet, True, 1234) == 1234
    assert served_size(netascii, True, 1234) is None  # the translated size is not known before sending
    with pytest.raises(proto.TftpError) as refused:
        served_size(octet, False, 4096)  # a directory, a FIFO, a device
    assert refused.value.code == proto.ERR_NOT_FOUND
    assert open_failed(FileNotFoundError()).code == proto.ERR_NOT_FOUND
    assert open_failed(PermissionError()).code == proto.ERR_ACCESS
    assert open_failed(OSError(40, "too many levels of symbolic links")).code == proto.ERR_ACCESS
