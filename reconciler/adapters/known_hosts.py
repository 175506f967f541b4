"""An OpenSSH known_hosts file, made into one that libgit2's SSH (libssh2) checks as OpenSSH would.

Called by `adapters.gitsource` when an ssh remote is given `--known-hosts FILE`: the private copy
libgit2 reads is `strict_known_hosts(text)`, not the file itself. libssh2 knows plain
`hosts keytype key` lines only and passes OpenSSH's markers by: a key listed for the host and
also `@revoked` was accepted. Here a `@revoked` key is taken out of every line (OpenSSH refuses
it for the hosts the marker's pattern matches; a revoked key is refused for every host here),
so libgit2 finds it unknown and refuses it. `@cert-authority` (host certificates) cannot be
honoured (libssh2 does not verify host certificates) and is refused, naming the line.
"""

from __future__ import annotations

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


class KnownHostsError(ValueError):
    """A known_hosts line this program cannot check as OpenSSH would; the message names it."""


def strict_known_hosts(text: str, name: str) -> tuple[str, int]:
    """(the lines libssh2 should trust, how many keys were revoked) of known_hosts `text` (file `name`)."""
    revoked: set[tuple[str, str]] = set()
    kept: list[tuple[str, tuple[str, str] | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            kept.append((line, None))
            continue
        if fields[0].startswith("@"):
            if fields[0] == CERT_AUTHORITY:
                raise KnownHostsError(
                    f"{name}:{number}: @cert-authority (SSH host certificates) is not supported: libgit2's SSH "
                    "cannot verify a host certificate; list the host's own key instead "
                    "(ssh-keyscan -t ed25519 HOST >> known_hosts, then check its fingerprint)")
            if fields[0] != REVOKED:
                raise KnownHostsError(f"{name}:{number}: unknown marker {fields[0]!r} (OpenSSH knows @revoked and "
                                      "@cert-authority)")
            if len(fields) < 4:
                raise KnownHostsError(f"{name}:{number}: expected '@revoked HOSTS KEYTYPE KEY'")
            revoked.add((fields[2], fields[3]))
            continue
        key = (fields[1], fields[2]) if len(fields) >= 3 else None
        kept.append((line, key))
    lines = [line for line, key in kept if key is None or key not in revoked]
    return "".join(line + "\n" for line in lines), len(revoked)
