"""Detached OpenPGP signatures checked by a real verifier: GnuPG's `gpgv`.

Called by `adapters.assetsync` for an assets.yaml entry with `signature:` and `keyring:`. The
keyring is the repository file's bytes (armored ones dearmored: gpgv reads binary keyrings);
gpgv runs with a throwaway home, so no user or system keyring takes part.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from reconciler.adapters.assetfetch import AssetError, AssetInvalid
from reconciler.core.assets import dearmor


def verify_detached(data: bytes, signature: bytes, keyring: bytes, what: str) -> None:
    """Return when `signature` is a good signature of `data` by a key in `keyring`; AssetError otherwise."""
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise AssetError(f"{what}: gpgv is not installed (Debian package gpgv) to check its signature")
    try:
        keys = dearmor(keyring)
    except ValueError as exc:
        raise AssetInvalid(f"{what}: keyring: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="netboot-gpgv-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        (home / "keys.gpg").write_bytes(keys)
        (home / "data").write_bytes(data)
        (home / "data.sig").write_bytes(signature)
        proc = subprocess.run(
            [gpgv, "--homedir", str(home), "--status-fd", "1", "--keyring", str(home / "keys.gpg"),
             str(home / "data.sig"), str(home / "data")],
            capture_output=True, text=True, timeout=60, check=False,
        )
    status = proc.stdout.splitlines()
    if proc.returncode == 0 and any(line.startswith("[GNUPG:] VALIDSIG") for line in status):
        return
    if any(line.startswith("[GNUPG:] NO_PUBKEY") for line in status):
        why = "signed by a key that is not in the keyring"
    elif any(line.startswith("[GNUPG:] BADSIG") for line in status):
        why = "BAD signature: the file is not what the key signed"
    elif any(line.startswith("[GNUPG:] NODATA") for line in status):
        why = "the signature file holds no OpenPGP signature"
    else:
        why = (proc.stderr.strip().splitlines() or ["gpgv failed"])[-1]
    raise AssetInvalid(f"{what}: signature check failed: {why}")
