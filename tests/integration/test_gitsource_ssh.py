"""SSH remotes against a real sshd on 127.0.0.1: the host key is checked strictly against --known-hosts.

sshd runs as a child with its own host key and an authorized_keys for a throwaway client key;
the client's command is `git-upload-pack '<path>'`, as for any git-over-SSH server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.gitsource import MirrorSource
from reconciler.core.errors import SourceUnavailable
from reconciler.core.render import render_generation
from reconciler.daemon import Daemon, Result
from reconciler.settings import Settings
from tests.integration.daemon_support import WorkTree, wait_for
from tests.support import free_port, require_root, require_tool


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    kind, key = Path(str(path) + ".pub").read_text().split()[:2]
    return f"{kind} {key}"


class Sshd:
    def __init__(self, tmp: Path) -> None:
        require_root()
        sshd = require_tool("sshd", "openssh-server")
        require_tool("git-upload-pack", "git")
        self.port = free_port()
        self.host_key = keygen(tmp / "host_key.key")
        self.client_key = tmp / "client_key.key"
        (tmp / "authorized_keys").write_text(keygen(self.client_key) + "\n")
        config = tmp / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nHostKey {tmp / 'host_key.key'}\nPidFile none\n"
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\n"
            "StrictModes no\nUsePAM no\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        self.log = tmp / "sshd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config), "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: "Server listening" in self.log.read_text() or self.proc.poll() is not None, "sshd")
        assert self.proc.poll() is None, self.log.read_text()

    def known_hosts(self, path: Path, key: str) -> Path:
        path.write_text(f"[127.0.0.1]:{self.port} {key}\n")
        return path

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_wrong_host_key_is_refused_and_the_right_one_is_served(sshd: Sshd, tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    remote = tree.bare_remote(tmp_path / "remote.git")
    url = f"ssh://root@127.0.0.1:{sshd.port}{remote}"
    wrong = sshd.known_hosts(tmp_path / "known_wrong", keygen(tmp_path / "other_host.key"))
    right = sshd.known_hosts(tmp_path / "known_right", sshd.host_key)

    def daemon_with(known_hosts: Path, state: str) -> Daemon:
        settings = Settings(repo=url, state_dir=tmp_path / state, known_hosts=known_hosts, ssh_key=sshd.client_key,
                            watch=False)
        daemon = Daemon(settings, renderer=render_generation)
        daemon.open()
        return daemon

    refused = daemon_with(wrong, "state-wrong")
    try:
        assert refused.reconcile_once() is Result.FAILED
        status = refused.status()
        assert status["reason"] == "SourceUnavailable"
        assert "host key" in status["message"] and "known_hosts" in status["message"]
        assert refused.holder.current() is None
    finally:
        refused.shutdown()

    accepted = daemon_with(right, "state-right")
    try:
        assert accepted.reconcile_once() is Result.APPLIED
        assert accepted.status()["last_applied_revision"] == tree.head()
    finally:
        accepted.shutdown()


def test_scp_style_address_is_a_remote(sshd: Sshd, tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    remote = tree.bare_remote(tmp_path / "remote.git")
    right = sshd.known_hosts(tmp_path / "known_right", sshd.host_key)
    # scp-style has no port: reach the test sshd through an ssh:// URL with the same path instead,
    # and check the scp-style spelling is classified as a remote (not a local path).
    from reconciler.adapters.gitsource import is_ssh, is_url

    assert is_url("git@github.com:org/repo.git") and is_ssh("git@github.com:org/repo.git")
    assert not is_url(str(remote))
    settings = Settings(repo=f"ssh://root@127.0.0.1:{sshd.port}{remote}", state_dir=tmp_path / "s",
                        known_hosts=right, ssh_key=sshd.client_key, watch=False)
    daemon = Daemon(settings, renderer=render_generation)
    daemon.open()
    try:
        assert daemon.reconcile_once() is Result.APPLIED
    finally:
        daemon.shutdown()


def _mirror(url: str, known_hosts: Path, state: Path, key: Path) -> MirrorSource:
    return MirrorSource(Settings(repo=url, state_dir=state, known_hosts=known_hosts, ssh_key=key, watch=False))


def test_a_revoked_host_key_is_refused_even_where_it_is_listed(sshd: Sshd, tmp_path: Path) -> None:
    """OpenSSH refuses a key marked `@revoked` whatever else lists it; libssh2 ignored the marker."""
    tree = WorkTree(tmp_path / "repo")
    url = f"ssh://root@127.0.0.1:{sshd.port}{tree.bare_remote(tmp_path / 'remote.git')}"
    listed = f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n"
    revoked = tmp_path / "known_revoked"
    revoked.write_text(listed + f"@revoked * {sshd.host_key} old key\n")
    source = _mirror(url, revoked, tmp_path / "state-revoked", sshd.client_key)
    try:
        with pytest.raises(SourceUnavailable, match=r"host key of 127\.0\.0\.1 not verified .*@revoked"):
            source.fetch()
    finally:
        source.close()
    # Another key's revocation leaves this host's key trusted.
    other = tmp_path / "known_other_revoked"
    other.write_text(f"@revoked * {keygen(tmp_path / 'old_host.key')}\n" + listed)
    source = _mirror(url, other, tmp_path / "state-other", sshd.client_key)
    try:
        assert source.fetch() == tree.head()
    finally:
        source.close()


def test_cert_authority_lines_are_refused_at_start_naming_the_line(tmp_path: Path) -> None:
    """libssh2 cannot verify host certificates: `run` says so and exits 2 instead of serving."""
    known_hosts = tmp_path / "known_hosts"
    ca = keygen(tmp_path / "ca.key")
    known_hosts.write_text(f"# site CA\n@cert-authority 127.0.0.1 {ca}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--repo", "ssh://git@127.0.0.1:1/site.git",
         "--known-hosts", str(known_hosts), "--state-dir", str(tmp_path / "state"), "--no-dhcp", "--no-tftp",
         "--http-listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{known_hosts}:2: @cert-authority (SSH host certificates) is not supported" in proc.stderr
    assert "Traceback" not in proc.stderr
