"""--verify-commits FILE: only a commit signed by a key FILE lists is served (or validates).

Real keys and real signatures: SSH keys made by ssh-keygen and OpenPGP keys made by gpg (in a
GNUPGHOME of the test's own), commits signed by git itself (`commit -S`, `merge -S`), verified
by the real ssh-keygen -Y and gpgv. FILE is an OpenSSH allowed_signers file or an OpenPGP keyring.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

from reconciler.adapters.commitsig import load_signers, verify_commit
from reconciler.core.errors import InvalidRevision
from reconciler.core.render import render_generation
from reconciler.daemon import Condition, Daemon, Result
from reconciler.settings import Settings
from tests.integration.daemon_support import GIT_ENV, ROOT, WorkTree
from tests.support import require_tool


@dataclass
class Keys:
    ssh: Path  # trusted SSH private key
    ssh_other: Path  # an SSH key nobody listed
    gpg_home: Path
    gpg: str  # trusted OpenPGP key fingerprint
    gpg_other: str  # an OpenPGP key not in the keyring
    allowed_signers: Path
    keyring: Path  # binary (gpg --export)
    keyring_asc: Path  # ASCII-armoured (gpg --armor --export)


def _gpg_key(home: Path, uid: str) -> str:
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign",
                    "never"], env=env, check=True, capture_output=True)
    out = subprocess.run(["gpg", "--list-keys", "--with-colons", uid], env=env, check=True, capture_output=True,
                         text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    for tool, package in (("ssh-keygen", "openssh-client"), ("gpg", "gnupg"), ("gpgv", "gpgv"), ("git", "git")):
        require_tool(tool, package)
    tmp = tmp_path_factory.mktemp("keys")
    for name in ("ops", "other"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp / name)], check=True)
    public = (tmp / "ops.pub").read_text().split()
    allowed = tmp / "allowed_signers"
    allowed.write_text(f'# who may change the lab\nops@lab.example namespaces="git" {public[0]} {public[1]}\n')
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    gpg = _gpg_key(home, "Ops <ops@lab.example>")
    gpg_other = _gpg_key(home, "Other <other@lab.example>")
    env = {**os.environ, "GNUPGHOME": str(home)}
    keyring = tmp / "keyring.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--export", gpg], env=env, check=True, capture_output=True).stdout)
    armoured = tmp / "keyring.asc"
    armoured.write_bytes(subprocess.run(["gpg", "--armor", "--export", gpg], env=env, check=True,
                                        capture_output=True).stdout)
    yield Keys(tmp / "ops", tmp / "other", home, gpg, gpg_other, allowed, keyring, armoured)
    # gpg started an agent for this GNUPGHOME; it outlives the run unless told to go
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


class SignedTree(WorkTree):
    """A work tree whose commits are signed (or not) by git itself."""

    def __init__(self, path: Path, keys: Keys) -> None:
        self.keys = keys
        super().__init__(path)

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_ENV, "GNUPGHOME": str(self.keys.gpg_home)}
        proc = subprocess.run(["git", *args], cwd=self.path, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def signing(self, key: Path | str | None) -> list[str]:
        if key is None:
            return []
        if isinstance(key, Path):
            return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"]
        return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={key}"]

    def signed_commit(self, message: str, key: Path | str | None, files: dict[str, str] | None = None) -> str:
        self.write(files or {f"nodes/{message.replace(' ', '-')}.txt": message})
        self.git("add", "-A")
        self.git(*self.signing(key), "commit", "-q", "--allow-empty", *(["-S"] if key else []), "-m", message)
        return self.head()


@pytest.fixture
def tree(tmp_path: Path, keys: Keys) -> SignedTree:
    tree = SignedTree(tmp_path / "site", keys)
    tree.signed_commit("signed initial", keys.ssh)
    return tree


def test_signatures_are_checked_against_the_file(tree: SignedTree, keys: Keys) -> None:
    ssh = tree.signed_commit("by ops ssh", keys.ssh)
    unsigned = tree.signed_commit("unsigned", None)
    other_ssh = tree.signed_commit("by another ssh key", keys.ssh_other)
    gpg = tree.signed_commit("by ops gpg", keys.gpg)
    other_gpg = tree.signed_commit("by another gpg key", keys.gpg_other)
    main = tree.git("rev-parse", "--abbrev-ref", "HEAD")
    tree.git("checkout", "-q", "-b", "topic", ssh)
    tree.signed_commit("topic work", keys.ssh)
    tree.git("checkout", "-q", main)
    tree.git(*tree.signing(keys.ssh), "merge", "-q", "--no-ff", "-S", "-m", "signed merge", "topic")
    signed_merge = tree.head()
    tree.git("checkout", "-q", "-b", "topic2", ssh)
    tree.signed_commit("more topic work", keys.ssh)
    tree.git("checkout", "-q", main)
    tree.git("merge", "-q", "--no-ff", "-m", "unsigned merge of signed work", "topic2")
    unsigned_merge = tree.head()
    repo = pygit2.Repository(str(tree.path))
    ssh_signers = load_signers(keys.allowed_signers)
    pgp_signers = load_signers(keys.keyring)
    armoured = load_signers(keys.keyring_asc)

    assert verify_commit(repo, ssh, ssh_signers) == "ops@lab.example"
    assert verify_commit(repo, signed_merge, ssh_signers) == "ops@lab.example"
    assert verify_commit(repo, gpg, pgp_signers) == "Ops <ops@lab.example>"
    assert verify_commit(repo, gpg, armoured) == "Ops <ops@lab.example>"
    refused = {
        (unsigned, "ssh"): "is not signed",
        (other_ssh, "ssh"): "is signed by a key (ED25519 key SHA256:",
        (gpg, "ssh"): "is signed with an OpenPGP key, and --verify-commits",
        (ssh, "pgp"): "is signed with an SSH key, and --verify-commits",
        (other_gpg, "pgp"): f"is signed by OpenPGP key {keys.gpg_other[-16:]}, which --verify-commits",
        (unsigned, "pgp"): "is not signed",
        (unsigned_merge, "ssh"): "is not signed",  # its parents' signatures do not sign the merge
    }
    for (revision, kind), expected in refused.items():
        with pytest.raises(InvalidRevision, match=re.escape(expected)) as caught:
            verify_commit(repo, revision, ssh_signers if kind == "ssh" else pgp_signers)
        assert [f.code for f in caught.value.findings] == ["commit-signature"]
        assert revision[:12] in str(caught.value)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_validate_reports_an_unsigned_commit_as_the_daemon_would(tree: SignedTree, keys: Keys) -> None:
    signed = tree.head()
    unsigned = tree.signed_commit("unsigned", None)
    ok = cli("validate", tree.path, signed, "--verify-commits", keys.allowed_signers)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = cli("validate", tree.path, "--verify-commits", keys.allowed_signers, "--format", "json")  # REV: HEAD
    assert bad.returncode == 1, bad.stdout + bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["valid"] is False
    assert [i["code"] for i in doc["issues"]] == ["commit-signature"]
    assert f"commit {unsigned[:12]} is not signed" in doc["issues"][0]["message"]
    # Without --verify-commits a REV is validated from git, signed or not.
    assert cli("validate", tree.path, unsigned).returncode == 0


def test_the_daemon_serves_signed_commits_only(tree: SignedTree, keys: Keys, tmp_path: Path) -> None:
    settings = Settings(repo=str(tree.path), state_dir=tmp_path / "state", watch=False,
                        verify_commits=keys.keyring_asc)
    initial = tree.head()
    daemon = Daemon(settings, renderer=render_generation)
    daemon.open()
    try:
        # The initial commit is SSH-signed, and this file is an OpenPGP keyring: not served.
        assert daemon.reconcile_once() is Result.REJECTED
        assert daemon.holder.current() is None
        good = tree.signed_commit("by ops gpg", keys.gpg)
        assert daemon.reconcile_once() is Result.APPLIED
        unsigned = tree.signed_commit("unsigned", None)
        assert daemon.reconcile_once() is Result.REJECTED
        current = daemon.holder.current()
        assert current is not None and current.revision == good
        status = daemon.status()
        assert status["condition"] == Condition.STALLED
        assert status["last_attempted_revision"] == unsigned and status["last_applied_revision"] == good
        assert [f["code"] for f in status["findings"]] == ["commit-signature"]
        assert daemon.reconcile_once() is Result.UNCHANGED  # not retried
        other = tree.signed_commit("by another gpg key", keys.gpg_other)
        assert daemon.reconcile_once() is Result.REJECTED
        assert other[:12] in daemon.status()["message"]
        fixed = tree.signed_commit("by ops gpg again", keys.gpg)
        assert daemon.reconcile_once() is Result.APPLIED
        current = daemon.holder.current()
        assert current is not None and current.revision == fixed
        # A force-push back to an older commit is verified like any other: the initial one is
        # signed, but by an SSH key this keyring does not hold; the older OpenPGP-signed one serves.
        tree.git("reset", "-q", "--hard", initial)
        assert daemon.reconcile_once() is Result.REJECTED
        assert "is signed with an SSH key" in daemon.status()["message"]
        tree.git("reset", "-q", "--hard", good)
        assert daemon.reconcile_once() is Result.APPLIED
        current = daemon.holder.current()
        assert current is not None and current.revision == good
    finally:
        daemon.shutdown()


def test_run_refuses_a_file_it_cannot_use_and_a_plain_directory(tmp_path: Path, keys: Keys) -> None:
    site = tmp_path / "plain"
    site.mkdir()
    listen = ["--no-dhcp", "--no-tftp", "--http-listen", "127.0.0.1:0"]
    empty = tmp_path / "empty"
    empty.write_text("")
    proc = cli("run", "--repo", site, "--state-dir", tmp_path / "s1", "--verify-commits", empty, *listen)
    assert proc.returncode == 2 and f"--verify-commits {empty}: the file is empty" in proc.stderr, proc.stderr
    proc = cli("run", "--repo", site, "--state-dir", tmp_path / "s2", "--verify-commits", keys.allowed_signers,
               *listen)
    assert proc.returncode == 2 and "a plain directory, not a git repository" in proc.stderr, proc.stderr


def test_diff_shows_an_unsigned_head_as_invalid(tree: SignedTree, keys: Keys) -> None:
    """A pull request check: HEAD unsigned is a broken HEAD, with the finding first (exit 1)."""
    base = tree.head()
    tree.signed_commit("unsigned", None)
    proc = cli("diff", "--repo", tree.path, base, "HEAD", "--verify-commits", keys.allowed_signers)
    assert proc.returncode == 1, proc.stderr
    assert "is **invalid**: 1 error(s)" in proc.stdout and "commit-signature" in proc.stdout, proc.stdout
    signed = tree.signed_commit("signed again", keys.ssh)
    proc = cli("diff", "--repo", tree.path, base, signed, "--verify-commits", keys.allowed_signers)
    assert proc.returncode in (0, 1) and "**invalid**" not in proc.stdout and "commit-signature" not in proc.stdout
