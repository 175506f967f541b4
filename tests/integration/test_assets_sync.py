"""`netboot-reconcile assets sync|status` against nginx on loopback serving a real ISO (xorriso), its
SHA256SUMS and a signature by a throwaway GnuPG key: what a user sees on disk and in the exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.core.assets import STORE_DIR
from tests import asset_lab, repo_builder
from tests.support import free_port, patterned_bytes, require_root, require_tool

ISO_NAME = "ubuntu-22.04.5-live-server-amd64.iso"
KERNEL = patterned_bytes(200_000, seed=1)
INITRD = patterned_bytes(900_000, seed=2)


@dataclass
class Upstream:
    root: Path
    nginx: asset_lab.Nginx
    signer: asset_lab.Signer
    iso_sha: str

    def url(self, path: str) -> str:
        return self.nginx.url(path)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    for name, package in (("xorriso", "xorriso"), ("gpg", "gnupg"), ("gpgv", "gpgv"), ("nginx", "nginx-light")):
        require_tool(name, package)
    root = tmp_path / "upstream"
    root.mkdir()
    asset_lab.make_iso(root / ISO_NAME, {"casper/vmlinuz": KERNEL, "casper/initrd": INITRD},
                       symlinks={"casper/evil": "/etc/passwd"})
    asset_lab.write_sums(root, [ISO_NAME])
    signer = asset_lab.Signer.create(tmp_path / "gnupg")
    signer.sign(root / "SHA256SUMS")
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    nginx = asset_lab.Nginx(nginx_dir, root, free_port())
    try:
        yield Upstream(root, nginx, signer, asset_lab.sha256_of(root / ISO_NAME))
    finally:
        nginx.stop()
        signer.stop()


def manifest(iso: str, kernel_file: str = "casper/vmlinuz") -> str:
    return f"""assets:
  - path: /assets/{ISO_NAME}
{iso}
  - path: /assets/vmlinuz
    from: /assets/{ISO_NAME}
    file: {kernel_file}
  - path: /assets/initrd
    from: /assets/{ISO_NAME}
    file: casper/initrd
"""


def pinned(up: Upstream, prefix: str = "/", sha: str | None = None) -> str:
    return f"    url: {up.url(prefix + ISO_NAME)}\n    sha256: {sha or up.iso_sha}"


def signed(up: Upstream) -> str:
    return (f"    url: {up.url('/' + ISO_NAME)}\n    checksums: {up.url('/SHA256SUMS')}\n"
            f"    signature: {up.url('/SHA256SUMS.gpg')}\n    keyring: keys/upstream.asc")


def repo(tmp: Path, text: str, keyring: bytes | None = None) -> Path:
    path = repo_builder.write(tmp / "repo", {"assets.yaml": text})
    if keyring is not None:
        (path / "keys").mkdir(exist_ok=True)
        (path / "keys" / "upstream.asc").write_bytes(keyring)
    return path


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "assets", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def visible(assets: Path) -> list[str]:
    """What /assets would serve: every file outside the store's own directory."""
    return sorted(str(p.relative_to(assets)) for p in assets.rglob("*")
                  if p.is_file() and STORE_DIR not in p.relative_to(assets).parts)


def test_a_fresh_sync_downloads_verifies_extracts_and_links_into_the_store(upstream: Upstream, tmp_path: Path) -> None:
    src = repo(tmp_path, manifest(pinned(upstream)))
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 0, done.stderr
    assert (assets / "vmlinuz").read_bytes() == KERNEL
    assert (assets / "initrd").read_bytes() == INITRD
    assert (assets / ISO_NAME).read_bytes() == (upstream.root / ISO_NAME).read_bytes()
    # served paths are hard links to content stored once under its digest
    iso_blob = assets / STORE_DIR / "blobs" / "sha256" / upstream.iso_sha[:2] / upstream.iso_sha
    assert os.path.samefile(assets / ISO_NAME, iso_blob)
    assert (assets / "vmlinuz").stat().st_nlink == 2
    assert not list((assets / STORE_DIR / "partial").iterdir())
    # one line per asset when stderr is not a terminal
    assert f"verified  /assets/{ISO_NAME}" in done.stderr and "3 of 3 assets verified" in done.stderr

    status = cli("status", src, "--assets-dir", assets)
    assert status.returncode == 0
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["verified", f"/assets/{ISO_NAME}"], ["verified", "/assets/vmlinuz"], ["verified", "/assets/initrd"]]

    # a second sync finds everything present and asks the server for nothing
    before = len(upstream.nginx.requests())
    again = cli("sync", src, "--assets-dir", assets)
    assert again.returncode == 0, again.stderr
    assert len(upstream.nginx.requests()) == before


def test_a_signed_checksums_file_verifies_the_download(upstream: Upstream, tmp_path: Path) -> None:
    src = repo(tmp_path, manifest(signed(upstream)), keyring=upstream.signer.public_key(armor=True))
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 0, done.stderr
    assert asset_lab.sha256_of(assets / ISO_NAME) == upstream.iso_sha


def test_a_signature_by_another_key_is_refused_and_nothing_is_served(upstream: Upstream, tmp_path: Path) -> None:
    other = asset_lab.Signer.create(tmp_path / "other-gnupg", "Somebody Else <else@example.invalid>")
    try:
        src = repo(tmp_path, manifest(signed(upstream)), keyring=other.public_key())
    finally:
        other.stop()
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 1
    assert "signature check failed: signed by a key that is not in the keyring" in done.stderr
    assert visible(assets) == []


def test_a_checksums_file_changed_after_signing_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    sums = upstream.root / "SHA256SUMS"
    sums.write_text(sums.read_text().replace(upstream.iso_sha[:8], "00000000"))
    src = repo(tmp_path, manifest(signed(upstream)), keyring=upstream.signer.public_key(armor=True))
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 1
    assert "BAD signature" in done.stderr
    assert visible(assets) == []


def test_a_tampered_download_is_deleted_and_never_served(upstream: Upstream, tmp_path: Path) -> None:
    iso = upstream.root / ISO_NAME
    data = bytearray(iso.read_bytes())
    data[70_000] ^= 0xFF
    iso.write_bytes(bytes(data))
    src = repo(tmp_path, manifest(pinned(upstream)))
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 1
    assert f"/{ISO_NAME}: sha256 mismatch" in done.stderr and "deleted" in done.stderr
    assert f"/assets/vmlinuz: its image /assets/{ISO_NAME} failed" in done.stderr
    assert visible(assets) == []
    assert not list((assets / STORE_DIR / "partial").iterdir())


def test_a_file_the_iso_does_not_hold_fails_alone(upstream: Upstream, tmp_path: Path) -> None:
    src = repo(tmp_path, manifest(pinned(upstream), kernel_file="casper/vmlinuz-nope"))
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 1
    assert "/assets/vmlinuz: the image has no file casper/vmlinuz-nope" in done.stderr
    assert visible(assets) == sorted([ISO_NAME, "initrd"])
    status = cli("status", src, "--assets-dir", assets)
    assert status.returncode == 1
    assert "missing   /assets/vmlinuz" in status.stdout


def test_a_symlink_inside_the_iso_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    src = repo(tmp_path, manifest(pinned(upstream), kernel_file="casper/evil"))
    assets = tmp_path / "assets"
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 1
    assert "casper/evil is a symbolic link in the image (to /etc/passwd)" in done.stderr
    assert "vmlinuz" not in visible(assets)


def test_a_killed_download_resumes_with_range(upstream: Upstream, tmp_path: Path) -> None:
    src = repo(tmp_path, manifest(pinned(upstream, prefix="/slow/")))
    assets = tmp_path / "assets"
    partial = assets / STORE_DIR / "partial" / upstream.iso_sha
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "assets", "sync", str(src), "--assets-dir",
                             str(assets)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size >= 300_000):
        assert proc.poll() is None and time.monotonic() < deadline, "the download never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = partial.stat().st_size
    assert visible(assets) == []  # killed mid-download: nothing served
    done = cli("sync", src, "--assets-dir", assets)
    assert done.returncode == 0, done.stderr
    assert asset_lab.sha256_of(assets / ISO_NAME) == upstream.iso_sha
    ranged = [r for r in upstream.nginx.requests() if r.startswith("206 ")]
    assert len(ranged) == 1 and f"range=bytes={kept}-" in ranged[0], upstream.nginx.requests()


def test_a_404_and_a_redirect_loop_are_named(upstream: Upstream, tmp_path: Path) -> None:
    text = f"""assets:
  - path: /assets/a.iso
    url: {upstream.url('/nope.iso')}
    sha256: {upstream.iso_sha}
  - path: /assets/b.iso
    url: {upstream.url('/loop')}
    sha256: {'b' * 64}
  - path: /assets/vmlinuz
  - path: /assets/initrd
  - path: /assets/{ISO_NAME}
"""
    assets = tmp_path / "assets"
    done = cli("sync", repo(tmp_path, text), "--assets-dir", assets)
    assert done.returncode == 1
    assert "/nope.iso: HTTP 404 Not Found" in done.stderr
    assert "/loop: redirect loop or too many redirects" in done.stderr
    assert visible(assets) == []


class _BadServer:
    """A hand-written HTTP peer, because nginx cannot be made to misbehave: `hang` accepts and never
    answers; `short` promises 1 MB in Content-Length, sends 1000 bytes and closes; `long` says
    1000 bytes and sends 5000; `unsized` sends 2 MB with no Content-Length, then closes."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(4096)
            if self.mode == "hang":
                self.held.append(conn)
                continue
            if self.mode == "unsized":
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 2_000_000)
                conn.close()
                continue
            length, body = (1000000, b"x" * 1000) if self.mode == "short" else (1000, b"y" * 5000)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % length + body)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize(("mode", "message"), [("hang", "timed out"), ("short", "truncated"),
                                               ("long", "sha256 mismatch")])
def test_a_hanging_or_lying_server_is_a_clear_error(tmp_path: Path, mode: str, message: str) -> None:
    server = _BadServer(mode)
    try:
        text = f"""assets:
  - path: /assets/a.iso
    url: http://127.0.0.1:{server.port}/a.iso
    sha256: {'c' * 64}
  - path: /assets/vmlinuz
  - path: /assets/initrd
  - path: /assets/{ISO_NAME}
"""
        assets = tmp_path / "assets"
        done = cli("sync", repo(tmp_path, text), "--assets-dir", assets, "--timeout", "1")
    finally:
        server.close()
    assert done.returncode == 1
    assert f"/a.iso: {message}" in done.stderr, done.stderr
    assert visible(assets) == []


def test_an_invalid_manifest_is_a_usage_error(tmp_path: Path) -> None:
    text = "assets:\n  - path: /assets/vmlinuz\n    url: https://example.invalid/vmlinuz\n"
    done = cli("sync", repo(tmp_path, text), "--assets-dir", tmp_path / "assets")
    assert done.returncode == 2
    assert "assets.yaml:3" in done.stderr and "asset-unverifiable" in done.stderr


def test_sync_without_assets_dir_is_a_usage_error(tmp_path: Path) -> None:
    assert cli("sync", tmp_path).returncode == 2
    assert cli("syn", tmp_path, "--assets-dir", tmp_path).returncode == 2  # no abbreviations


def test_a_download_that_cannot_fit_is_refused_before_it_starts(upstream: Upstream, tmp_path: Path) -> None:
    """A real small file system (tmpfs, 256 KiB) as --assets-dir; the ISO is over 1 MB."""
    require_root()
    assets = tmp_path / "assets"
    assets.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(assets)], check=True)
    try:
        done = cli("sync", repo(tmp_path, manifest(pinned(upstream))), "--assets-dir", assets)
        assert done.returncode == 1
        assert f"/{ISO_NAME}: needs {(upstream.root / ISO_NAME).stat().st_size} bytes" in done.stderr, done.stderr
        assert visible(assets) == []
        assert not list((assets / STORE_DIR / "partial").iterdir())
    finally:
        subprocess.run(["umount", str(assets)], check=True)


def test_a_terminal_gets_a_progress_bar(upstream: Upstream, tmp_path: Path) -> None:
    script = require_tool("script", "bsdutils")
    src = repo(tmp_path, manifest(pinned(upstream)))
    command = f"{sys.executable} -m reconciler assets sync {src} --assets-dir {tmp_path / 'assets'}"
    done = subprocess.run([script, "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    assert done.returncode == 0, done.stdout
    assert "━" in done.stdout  # rich's bar
    assert "3 of 3 assets verified" in done.stdout


def test_content_nothing_links_to_any_more_is_removed_and_shared_content_kept(
    upstream: Upstream, tmp_path: Path,
) -> None:
    assets = tmp_path / "assets"
    first = cli("sync", repo(tmp_path, manifest(pinned(upstream))), "--assets-dir", assets)
    assert first.returncode == 0, first.stderr
    old_iso = assets / STORE_DIR / "blobs" / "sha256" / upstream.iso_sha[:2] / upstream.iso_sha
    assert old_iso.exists()
    # a new ISO with a new kernel and the same initrd
    asset_lab.make_iso(upstream.root / "v2.iso", {"casper/vmlinuz": KERNEL[::-1], "casper/initrd": INITRD})
    text = manifest(f"    url: {upstream.url('/v2.iso')}\n    sha256: {asset_lab.sha256_of(upstream.root / 'v2.iso')}")
    (tmp_path / "repo" / "assets.yaml").write_text(text)
    second = cli("sync", tmp_path / "repo", "--assets-dir", assets)
    assert second.returncode == 0, second.stderr
    assert "removed" in second.stderr
    assert not old_iso.exists()  # the old ISO and the old kernel: nothing links to them
    blobs = list((assets / STORE_DIR / "blobs").glob("sha256/*/*"))
    assert len(blobs) == 3  # new ISO, new kernel, the unchanged initrd (stored once, kept)
    assert (assets / "vmlinuz").read_bytes() == KERNEL[::-1]
    assert (assets / "initrd").read_bytes() == INITRD


def test_a_disk_that_fills_mid_download_leaves_nothing(tmp_path: Path) -> None:
    """No Content-Length, so nothing can be refused up front: the write fails on a real 256 KiB tmpfs."""
    require_root()
    server = _BadServer("unsized")
    assets = tmp_path / "assets"
    assets.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(assets)], check=True)
    try:
        text = f"""assets:
  - path: /assets/a.iso
    url: http://127.0.0.1:{server.port}/a.iso
    sha256: {'d' * 64}
  - path: /assets/vmlinuz
  - path: /assets/initrd
  - path: /assets/{ISO_NAME}
"""
        done = cli("sync", repo(tmp_path, text), "--assets-dir", assets)
        assert done.returncode == 1
        assert "/a.iso: the disk is full" in done.stderr, done.stderr
        assert visible(assets) == []
        assert not list((assets / STORE_DIR / "partial").iterdir())
    finally:
        server.close()
        subprocess.run(["umount", str(assets)], check=True)


def test_a_mistake_elsewhere_in_the_repository_does_not_stop_a_sync(upstream: Upstream, tmp_path: Path) -> None:
    src = repo(tmp_path, manifest(pinned(upstream)))
    (src / "nodes" / "node-1.yaml").write_text("mac: nope\n")
    done = cli("sync", src, "--assets-dir", tmp_path / "assets")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "assets" / "vmlinuz").read_bytes() == KERNEL


def test_a_file_placed_by_hand_with_the_right_digest_is_taken_into_the_store_not_fetched(
    upstream: Upstream, tmp_path: Path,
) -> None:
    """The seed's way (wget into the assets directory) upgraded: the ISO already there is not fetched again."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / ISO_NAME).write_bytes((upstream.root / ISO_NAME).read_bytes())
    done = cli("sync", repo(tmp_path, manifest(pinned(upstream))), "--assets-dir", assets)
    assert done.returncode == 0, done.stderr
    assert not [r for r in upstream.nginx.requests() if ISO_NAME in r]
    iso_blob = assets / STORE_DIR / "blobs" / "sha256" / upstream.iso_sha[:2] / upstream.iso_sha
    assert os.path.samefile(assets / ISO_NAME, iso_blob)
    assert (assets / "vmlinuz").read_bytes() == KERNEL
