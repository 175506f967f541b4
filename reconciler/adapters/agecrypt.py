"""age encryption of secrets.yaml values with pyrage (the Rust `age` crate): the identity file
read, values decrypted and encrypted.

Called by the `run`, `render`, `validate` and `diff` commands (`--age-identity FILE`: an
`AgeIdentity`, the `core.secrets.Decrypter` they hand to validation and rendering) and by
`secrets set` (`encrypt`, for the recipients secrets.yaml lists). The identity stays in memory
as the file's text (the daemon's worker process gets it pickled, and pyrage's key objects do not
pickle); `repr` never shows it. pyrage is imported when a key is used, not when the CLI loads
(a venv made before pyrage was a dependency still runs every other command).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reconciler.core.secrets import SecretUnreadable

_SSH_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----"


class AgeIdentity:
    """The identities of one age identity file (`AGE-SECRET-KEY-1...` lines, or an OpenSSH
    private key); calling it decrypts an armored value to text."""

    def __init__(self, text: str, origin: str = "") -> None:
        self._text = text
        self.origin = origin
        self.key = hashlib.sha256(b"netboot-reconcile secret fingerprints\0" + text.encode()).digest()
        self._identities()  # ValueError now, not at the first decryption

    def __repr__(self) -> str:
        return f"AgeIdentity({self.origin or 'in memory'})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (AgeIdentity, (self._text, self.origin))

    @functools.cache  # noqa: B019 (one per identity file: the daemon keeps one for its life)
    def _identities(self) -> list[Any]:
        import pyrage
        where = self.origin or "the identity"
        if _SSH_PRIVATE in self._text:
            try:
                return [pyrage.ssh.Identity.from_buffer(self._text.encode())]
            except Exception as exc:
                raise ValueError(f"{where}: not a usable OpenSSH private key ({exc})") from None
        found: list[Any] = []
        for number, raw in enumerate(self._text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                found.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                # never echo the line: it may be a key with a typo
                raise ValueError(f"{where}, line {number}: not an age identity (AGE-SECRET-KEY-1...)") from None
        if not found:
            raise ValueError(f"{where}: holds no age identity (AGE-SECRET-KEY-1... lines, or an OpenSSH private key)")
        return found

    def __call__(self, ciphertext: str) -> str:
        import pyrage

        try:
            plain = pyrage.decrypt(ciphertext.encode(), self._identities())
        except Exception as exc:  # pyrage.DecryptError: "No matching keys found", "Header is invalid", ...
            raise SecretUnreadable(f"{exc} (identity {self.origin or 'given'})") from None
        try:
            return bytes(plain).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretUnreadable("the value is not UTF-8 text") from None


def load_identity(path: Path) -> AgeIdentity:
    """`--age-identity FILE`. OSError when it cannot be read, ValueError when it holds no identity."""
    return AgeIdentity(path.read_text("utf-8"), str(path))


def encrypt(recipients: Sequence[str], plaintext: str) -> str:
    """`plaintext` encrypted for every recipient (age1... or ssh- public keys), age-armored.
    ValueError naming a recipient that is not a public key."""
    import pyrage

    keys: list[Any] = []
    for recipient in recipients:
        try:
            if recipient.startswith("ssh-"):
                keys.append(pyrage.ssh.Recipient.from_str(recipient))
            else:
                keys.append(pyrage.x25519.Recipient.from_str(recipient))
        except Exception as exc:
            raise ValueError(f"recipient {recipient!r} is not an age or OpenSSH public key ({exc})") from None
    armored = pyrage.encrypt(plaintext.encode("utf-8"), keys, armored=True)
    return bytes(armored).decode("ascii")
