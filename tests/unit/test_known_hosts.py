"""known_hosts as libssh2 can check it strictly: @revoked keys out, @cert-authority refused."""

from __future__ import annotations

import pytest

from reconciler.adapters.known_hosts import KnownHostsError, strict_known_hosts

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
HASHED = "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg="


def test_a_revoked_key_leaves_every_line_that_lists_it() -> None:
    text = (f"# lab\ngit.lab {KEY_A}\n{HASHED} {KEY_A} copy\nmirror.lab {KEY_B}\n@revoked * {KEY_A}\n")
    trusted, revoked = strict_known_hosts(text, "kh")
    assert revoked == 1
    assert trusted == f"# lab\nmirror.lab {KEY_B}\n"


def test_plain_and_hashed_lines_pass_unchanged() -> None:
    text = f"git.lab,10.0.0.1 {KEY_A}\n\n{HASHED} {KEY_B}\n"
    assert strict_known_hosts(text, "kh") == (text, 0)


@pytest.mark.parametrize(("line", "message"), [
    (f"@cert-authority *.lab {KEY_A}", r"^kh:2: @cert-authority \(SSH host certificates\) is not supported"),
    (f"@trusted * {KEY_A}", r"^kh:2: unknown marker '@trusted'"),
    ("@revoked *", r"^kh:2: expected '@revoked HOSTS KEYTYPE KEY'"),
])
def test_what_cannot_be_honoured_is_refused_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(KnownHostsError, match=message):
        strict_known_hosts(f"git.lab {KEY_B}\n{line}\n", "kh")
