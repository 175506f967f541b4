"""reconciler.servers.tftp against real TFTP clients: tftp-hpa, atftp and curl.

Each test starts the server on 127.0.0.1 with an ephemeral port, runs the client as a user
would, and compares the file the client wrote (or the error the client reports) with the root.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler.core.events import CollectEvents
from reconciler.core.model import DesiredState, Site
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers.tftp import TftpServer
from tests.support import patterned_bytes, require_tool

TIMEOUT = 60


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    directory.mkdir()
    (directory / "ipxe.efi").write_bytes(patterned_bytes(850_528, 1))
    (directory / "undionly.kpxe").write_bytes(patterned_bytes(74_213, 2))
    (directory / "tiny.bin").write_bytes(patterned_bytes(2_000, 3))
    (directory / "exact.bin").write_bytes(patterned_bytes(512 * 40, 4))
    (directory / "boot.txt").write_bytes(b"#!ipxe\nchain http://10.0.0.1/boot.ipxe\r\necho done\n")
    return directory


@pytest.fixture
def server(root: Path) -> Iterator[tuple[TftpServer, GenerationHolder, CollectEvents]]:
    holder = GenerationHolder()
    events = CollectEvents()
    tftp = TftpServer(("127.0.0.1", 0), root, holder, events)
    tftp.start()
    try:
        yield tftp, holder, events
    finally:
        tftp.stop(2.0)


Server = tuple[TftpServer, GenerationHolder, CollectEvents]


def tftp_hpa(server: TftpServer, name: str, out: Path, mode: str = "binary") -> subprocess.CompletedProcess[str]:
    tool = require_tool("tftp", "tftp-hpa")
    host, port = server.address
    return subprocess.run(
        [tool, host, str(port), "-m", mode, "-c", "get", name, str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def atftp(server: TftpServer, name: str, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("atftp", "atftp")
    host, port = server.address
    args = [tool, "-g", "-r", name, "-l", str(out)]
    for option in options:
        args += ["--option", option]
    return subprocess.run([*args, host, str(port)], capture_output=True, text=True, timeout=TIMEOUT, check=False)


def curl(server: TftpServer, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("curl", "curl")
    host, port = server.address
    return subprocess.run(
        [tool, "-sS", *extra, "-o", str(out), f"tftp://{host}:{port}/{name}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("name", ["undionly.kpxe", "exact.bin", "tiny.bin"])
def test_tftp_hpa_plain_512_byte_blocks(server: Server, root: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "got"
    result = tftp_hpa(server[0], name, out)
    assert out.read_bytes() == (root / name).read_bytes(), result.stderr


def test_tftp_hpa_netascii_round_trips_text(server: Server, root: Path, tmp_path: Path) -> None:
    out = tmp_path / "got"
    result = tftp_hpa(server[0], "boot.txt", out, mode="ascii")
    # tftp-hpa turns netascii back into local text, so the user gets the file as it is.
    assert out.read_bytes() == (root / "boot.txt").read_bytes(), result.stderr


def test_tftp_hpa_reports_file_not_found(server: Server, tmp_path: Path) -> None:
    result = tftp_hpa(server[0], "missing.bin", tmp_path / "got")
    assert "Error code 1" in result.stdout + result.stderr


def test_tftp_hpa_reports_access_violation_for_dot_dot(server: Server, tmp_path: Path) -> None:
    result = tftp_hpa(server[0], "../root/ipxe.efi", tmp_path / "got")
    assert "Error code 2" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "blksize"), [("tiny.bin", 8), ("ipxe.efi", 512), ("ipxe.efi", 1468), ("ipxe.efi", 65464)]
)
def test_atftp_blksize(server: Server, root: Path, tmp_path: Path, name: str, blksize: int) -> None:
    out = tmp_path / "got"
    result = atftp(server[0], name, out, f"blksize {blksize}")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (root / name).read_bytes()


@pytest.mark.parametrize("windowsize", [4, 16])
def test_atftp_windowsize(server: Server, root: Path, tmp_path: Path, windowsize: int) -> None:
    out = tmp_path / "got"
    result = atftp(server[0], "ipxe.efi", out, "blksize 1468", f"windowsize {windowsize}", "tsize 0")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (root / "ipxe.efi").read_bytes()
    assert f"windowsize = {windowsize}" in result.stderr + result.stdout


@pytest.mark.parametrize("extra", [(), ("--tftp-blksize", "1468")])
def test_curl(server: Server, root: Path, tmp_path: Path, extra: tuple[str, ...]) -> None:
    out = tmp_path / "got"
    result = curl(server[0], "ipxe.efi", out, *extra)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (root / "ipxe.efi").read_bytes()


def test_curl_sees_file_not_found(server: Server, tmp_path: Path) -> None:
    result = curl(server[0], "missing.bin", tmp_path / "got")
    assert result.returncode == 68, result.stderr  # CURLE_TFTP_NOTFOUND


def test_curl_sees_access_violation_for_a_symlink_out_of_the_root(server: Server, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    (root / "escape").symlink_to(secret)
    out = tmp_path / "got"
    result = curl(server[0], "escape", out)
    assert result.returncode == 69, result.stderr  # CURLE_TFTP_PERM
    assert not out.exists() or b"private" not in out.read_bytes()


def test_a_file_the_generation_provides_wins_over_the_root(server: Server, root: Path, tmp_path: Path) -> None:
    tftp, holder, events = server
    script = b"#!ipxe\nchain http://10.0.0.1/ipxe?mac=${mac:hexhyp}\n"
    state = DesiredState(
        revision="f" * 40,
        site=Site(server_address=IPv4Address("127.0.0.1")),
        nodes=(),
        profiles={},
        groups=(),
        cloud_init={},
    )
    holder.swap(Generation("f" * 40, state, {"tftp/boot.ipxe": script, "tftp/undionly.kpxe": b"override"}))
    assert tftp_hpa(tftp, "boot.ipxe", tmp_path / "a").returncode == 0
    assert (tmp_path / "a").read_bytes() == script
    assert atftp(tftp, "/undionly.kpxe", tmp_path / "b").returncode == 0
    assert (tmp_path / "b").read_bytes() == b"override"
    assert curl(tftp, "ipxe.efi", tmp_path / "c").returncode == 0
    assert (tmp_path / "c").read_bytes() == (root / "ipxe.efi").read_bytes()
    tftp.stop(2.0)
    assert [(e.detail["file"], e.revision, e.detail["result"]) for e in events.events] == [
        ("boot.ipxe", "f" * 40, "ok"),
        ("/undionly.kpxe", "f" * 40, "ok"),
        ("ipxe.efi", "f" * 40, "ok"),
    ]
