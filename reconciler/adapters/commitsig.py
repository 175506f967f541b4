"""Signed commits: a revision is served only when its commit carries a signature by a trusted key.

Called by the daemon's `verify` step (`daemon.steps`, with `run --verify-commits FILE`) and by
`validate --verify-commits FILE` (`commands.validate`). FILE is either
- an OpenSSH allowed_signers file (what git's `gpg.ssh.allowedSignersFile` names): the commit's
  SSH signature (git's `gpg.format=ssh`) is checked by `ssh-keygen -Y find-principals` and
  `ssh-keygen -Y verify` in namespace `git`, as `git verify-commit` does; or
- an OpenPGP keyring (`gpg --export`, binary or ASCII-armoured): the commit's OpenPGP signature is
  checked by `gpgv` against that keyring alone (no trust database, no home directory).
Only the commit being served (the branch tip) is verified, as `git verify-commit` checks one
commit; a merge is verified like any commit, by its own signature. An unsigned commit, a
signature that does not verify, or one by a key FILE does not list raises
`core.errors.InvalidRevision` with one `commit-signature` finding: the commit is never served.
"""

from __future__ import annotations

import base64
import datetime
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.core import codes
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import Location

CODE = "commit-signature"
SSH = "ssh"
OPENPGP = "openpgp"
_ARMOR = re.compile(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S)
TIMEOUT = 30


@dataclass(frozen=True)
class Signers:
    """The keys a served commit may be signed by: FILE, and what kind of file it is."""

    path: Path
    kind: str  # SSH | OPENPGP
    keyring: bytes = b""  # OPENPGP: the binary keyring (ASCII armour removed)


def load_signers(path: Path) -> Signers:
    """Read `--verify-commits FILE`; ValueError (a start-up error) naming what is wrong with it."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"--verify-commits {path}: the file is empty")
    armoured = _ARMOR.findall(data)
    if armoured or data[0] & 0x80:  # an armoured or a binary OpenPGP keyring (a packet tag has bit 7 set)
        _require("gpgv", "gpgv")
        keyring = b"".join(_dearmor(block) for block in armoured) if armoured else data
        return Signers(path, OPENPGP, keyring)
    _require("ssh-keygen", "openssh-client")
    lines = [ln for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip() and
             not ln.lstrip().startswith("#")]
    if not any(re.search(r"\b(ssh-\w+|ecdsa-sha2-\S+|sk-\S+)\s+AAAA", ln) for ln in lines):
        raise ValueError(f"--verify-commits {path}: neither an OpenSSH allowed_signers file (PRINCIPALS "
                         "[OPTIONS] KEYTYPE KEY lines) nor an OpenPGP keyring (gpg --export)")
    return Signers(path, SSH)


def verify_commit(repo: pygit2.Repository, revision: str, signers: Signers) -> str:
    """Who signed commit `revision` (a principal or an OpenPGP user id); InvalidRevision when it
    is unsigned, its signature does not verify, or the key is not one `signers` lists."""
    commit = repo.revparse_single(revision).peel(pygit2.Commit)
    short = str(commit.id)[:12]
    signature, payload = commit.gpg_signature
    if not signature or payload is None:
        raise invalid(f"commit {short} is not signed; --verify-commits {signers.path} admits only commits "
                       "signed by a key it lists")
    if signature.lstrip().startswith(b"-----BEGIN SSH SIGNATURE-----"):
        found = SSH
    elif signature.lstrip().startswith(b"-----BEGIN PGP SIGNATURE-----"):
        found = OPENPGP
    else:
        raise invalid(f"commit {short} has a signature of a kind not supported here (x509?); "
                       f"--verify-commits {signers.path} takes SSH or OpenPGP signatures")
    if found != signers.kind:
        raise invalid(f"commit {short} is signed with an {_KIND[found]} key, and --verify-commits "
                       f"{signers.path} lists {_KIND[signers.kind]} keys only")
    with tempfile.TemporaryDirectory(prefix="netboot-verify-") as tmp:
        work = Path(tmp)
        (work / "signature").write_bytes(signature)
        (work / "payload").write_bytes(payload)
        if found == SSH:
            return _verify_ssh(work, signers, short, commit.commit_time)
        return _verify_openpgp(work, signers, short)


_KIND = {SSH: "SSH", OPENPGP: "OpenPGP"}


def _verify_ssh(work: Path, signers: Signers, short: str, when: int) -> str:
    sig = str(work / "signature")
    # The key's validity (allowed_signers valid-after/valid-before) at the commit's time, as git asks.
    at = "-Overify-time=" + datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y%m%d%H%M%S")
    found = _run(["ssh-keygen", "-Y", "find-principals", "-s", sig, "-f", str(signers.path), at])
    principals = found.stdout.decode(errors="replace").split()
    if found.returncode != 0 or not principals:
        key = _run(["ssh-keygen", "-Y", "check-novalidate", "-n", "git", "-s", sig], stdin=work / "payload")
        made = re.search(r"with (\S+) key (SHA256:\S+)", key.stdout.decode(errors="replace"))
        by = f" ({made.group(1)} key {made.group(2)})" if made else ""
        raise invalid(f"commit {short} is signed by a key{by} that --verify-commits {signers.path} does not list")
    for principal in principals:
        check = _run(["ssh-keygen", "-Y", "verify", "-f", str(signers.path), "-I", principal, "-n", "git",
                      "-s", sig, at], stdin=work / "payload")
        if check.returncode == 0:
            return principal
    why = _last_line(check.stderr or check.stdout)
    raise invalid(f"commit {short}: its SSH signature does not verify against --verify-commits {signers.path}: {why}")


def _verify_openpgp(work: Path, signers: Signers, short: str) -> str:
    (work / "keyring.gpg").write_bytes(signers.keyring)
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    check = _run(["gpgv", "--homedir", str(home), "--keyring", str(work / "keyring.gpg"), "--status-fd", "1",
                  str(work / "signature"), str(work / "payload")])
    status = check.stdout.decode(errors="replace")
    good = re.search(r"^\[GNUPG:\] GOODSIG \S+ (.*)$", status, re.M)
    if check.returncode == 0 and good is not None and "[GNUPG:] VALIDSIG" in status:
        return good.group(1)
    missing = re.search(r"^\[GNUPG:\] NO_PUBKEY (\S+)", status, re.M)
    if missing is not None:
        raise invalid(f"commit {short} is signed by OpenPGP key {missing.group(1)}, which --verify-commits "
                       f"{signers.path} does not hold")
    why = _last_line(check.stderr) or "gpgv refused it"
    raise invalid(f"commit {short}: its OpenPGP signature does not verify against --verify-commits "
                   f"{signers.path}: {why}")


def _dearmor(block: bytes) -> bytes:
    """The binary packets of one ASCII-armoured block (headers, then base64, then '=' and a CRC)."""
    head, _, body = block.partition(b"\n\n") if b"\n\n" in block else (b"", b"", block)
    if not body:
        body = head
    lines = [ln.strip() for ln in body.replace(b"\r", b"").splitlines()]
    return base64.b64decode(b"".join(ln for ln in lines if ln and not ln.startswith(b"=")))


def _run(cmd: list[str], stdin: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    with open(stdin, "rb") if stdin is not None else open("/dev/null", "rb") as fh:
        return subprocess.run(cmd, stdin=fh, capture_output=True, timeout=TIMEOUT, check=False)


def _last_line(output: bytes) -> str:
    lines = [ln for ln in output.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise ValueError(f"--verify-commits needs {tool}: apt-get install {package}")


def invalid(message: str) -> InvalidRevision:
    """The InvalidRevision of a commit that may not be served, with its one finding."""
    return InvalidRevision(message, (codes.issue(CODE, Location("."), message),))
