"""The daemon fetches a commit's assets before it activates it: a real daemon process, a real git
repository, nginx on loopback serving real ISOs (xorriso). While the assets download, /status says
Reconciling/FetchingAssets with progress and the last good generation keeps serving; bytes that
do not verify make the commit invalid; an install pinned to an older generation keeps its kernel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import asset_lab
from tests.integration.daemon_support import DaemonProcess, WorkTree, http_get, wait_for
from tests.support import free_port, patterned_bytes, require_tool

KERNEL1, INITRD1 = patterned_bytes(300_000, seed=21), patterned_bytes(900_000, seed=22)
KERNEL2, INITRD2 = patterned_bytes(310_000, seed=23), patterned_bytes(100_000, seed=24)
ISO = "/assets/ubuntu/2204/ubuntu-22.04.5-live-server-amd64.iso"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[asset_lab.Nginx, dict[str, str]]]:
    for name, package in (("xorriso", "xorriso"), ("nginx", "nginx-light")):
        require_tool(name, package)
    root = tmp_path / "upstream"
    root.mkdir()
    shas = {}
    for name, kernel, initrd in (("v1.iso", KERNEL1, INITRD1), ("v2.iso", KERNEL2, INITRD2)):
        asset_lab.make_iso(root / name, {"casper/vmlinuz": kernel, "casper/initrd": initrd})
        shas[name] = asset_lab.sha256_of(root / name)
    (tmp_path / "nginx").mkdir()
    nginx = asset_lab.Nginx(tmp_path / "nginx", root, free_port())
    try:
        yield nginx, shas
    finally:
        nginx.stop()


def manifest(url: str, sha: str) -> str:
    """Every path example-repo's profiles use: 22.04 fetched and extracted, 24.04 from the same ISO."""
    lines = [f"assets:\n  - path: {ISO}\n    url: {url}\n    sha256: {sha}\n"]
    for release in ("2204", "2404"):
        for name in ("vmlinuz", "initrd"):
            lines.append(f"  - path: /assets/ubuntu/{release}/{name}\n    from: {ISO}\n    file: casper/{name}\n")
    lines.append("  - path: /assets/ubuntu/2404/ubuntu-24.04.1-live-server-amd64.iso\n")
    return "".join(lines)


PATH_ONLY = "assets:\n" + "".join(
    f"  - path: {p}\n" for p in (ISO, "/assets/ubuntu/2204/vmlinuz", "/assets/ubuntu/2204/initrd",
                                 "/assets/ubuntu/2404/vmlinuz", "/assets/ubuntu/2404/initrd",
                                 "/assets/ubuntu/2404/ubuntu-24.04.1-live-server-amd64.iso"))


def get(daemon: DaemonProcess, path: str) -> tuple[int, bytes]:
    return http_get(daemon.url + path, timeout=10)


def test_a_commit_is_held_until_its_assets_verify_then_served(
    upstream: tuple[asset_lab.Nginx, dict[str, str]], tmp_path: Path,
) -> None:
    nginx, shas = upstream
    work = WorkTree(tmp_path / "work")
    first = work.commit("assets placed by hand", {"assets.yaml": PATH_ONLY})
    daemon = DaemonProcess(str(work.path), tmp_path / "state",
                           extra=["--assets-dir", str(tmp_path / "assets"), "--interval", "0.3"])
    daemon.start()
    try:
        daemon.wait_served(first)
        # the ISO comes from nginx's rate-limited location: slow enough to watch
        second = work.commit("fetch 22.04", {"assets.yaml": manifest(nginx.url("/slow/v1.iso"), shas["v1.iso"])})

        def fetching() -> dict[str, Any] | None:
            status = daemon.status_doc()
            return status if status["reason"] == "FetchingAssets" else None

        status = wait_for(fetching, f"/status to say FetchingAssets\n{daemon.log()[-2000:]}")
        assert status["condition"] == "Reconciling"
        assert status["assets"]["revision"] == second and status["assets"]["assets"] == 5
        assert first in daemon.ipxe()  # the last good generation keeps serving meanwhile
        assert get(daemon, "/assets/ubuntu/2204/vmlinuz")[0] == 404  # nothing half-there is served

        def downloading() -> dict[str, Any] | None:
            assets = daemon.status_doc()["assets"] or {"fetching": {}}
            return next((p for p in assets["fetching"].values() if p["bytes"] > 0), None)

        progress = wait_for(downloading, "download progress in /status")
        assert 0 < progress["bytes"] <= progress["total"]

        daemon.wait_served(second, timeout=60)
        wait_for(lambda: daemon.status_doc()["condition"] == "Ready", "Ready once the assets are in")
        assert get(daemon, "/assets/ubuntu/2204/vmlinuz") == (200, KERNEL1)
        assert get(daemon, "/assets/ubuntu/2404/initrd") == (200, INITRD1)

        # the ISO changes: the new commit serves the new kernel, an install pinned to the old one keeps its bytes
        third = work.commit("new ISO", {"assets.yaml": manifest(nginx.url("/v2.iso"), shas["v2.iso"])})
        daemon.wait_served(third, timeout=60)
        assert get(daemon, "/assets/ubuntu/2204/vmlinuz") == (200, KERNEL2)
        assert get(daemon, f"/r/{third}/assets/ubuntu/2204/vmlinuz") == (200, KERNEL2)
        assert get(daemon, f"/r/{second}/assets/ubuntu/2204/vmlinuz") == (200, KERNEL1)
        assert get(daemon, f"/r/{second}/assets/ubuntu/2204/initrd") == (200, INITRD1)

        # bytes that do not verify: the commit is invalid, with the finding at its line; v2 keeps serving
        # (a digest the store holds would be served whatever the url: content is named by its digest)
        fourth = work.commit("wrong digest", {"assets.yaml": manifest(nginx.url("/v1.iso"), "e" * 64)})
        status = wait_for(lambda: (s := daemon.status_doc())["condition"] == "Stalled" and s,
                          f"the commit with a wrong digest to stall\n{daemon.log()[-2000:]}", timeout=60)
        assert status["desired_revision"] == fourth and status["reason"] == "InvalidRevision"
        hits = [f for f in status["findings"] if f["code"] == "asset-verification-failed"]
        assert hits and hits[0]["file"] == "assets.yaml" and hits[0]["line"] == 2, status["findings"]
        assert "sha256 mismatch" in hits[0]["message"]
        assert third in daemon.ipxe()
        assert get(daemon, "/assets/ubuntu/2204/vmlinuz") == (200, KERNEL2)
    finally:
        daemon.stop()


def test_no_fetch_serves_and_warns_naming_the_missing_path(
    upstream: tuple[asset_lab.Nginx, dict[str, str]], tmp_path: Path,
) -> None:
    nginx, shas = upstream
    work = WorkTree(tmp_path / "work")
    sha = work.commit("assets", {"assets.yaml": manifest(nginx.url("/v1.iso"), shas["v1.iso"])})
    daemon = DaemonProcess(str(work.path), tmp_path / "state",
                           extra=["--assets-dir", str(tmp_path / "assets"), "--no-fetch"])
    daemon.start()
    try:
        daemon.wait_served(sha)
        log = daemon.log()
        assert "asset-missing" in log and "/assets/ubuntu/2204/vmlinuz: missing" in log, log[-3000:]
        assert not [r for r in nginx.requests() if "v1.iso" in r]  # nothing was fetched
    finally:
        daemon.stop()


def test_a_daemon_given_an_assets_dir_later_fetches_for_the_commit_it_already_serves(
    upstream: tuple[asset_lab.Nginx, dict[str, str]], tmp_path: Path,
) -> None:
    nginx, shas = upstream
    work = WorkTree(tmp_path / "work")
    sha = work.commit("assets", {"assets.yaml": manifest(nginx.url("/v1.iso"), shas["v1.iso"])})
    before = DaemonProcess(str(work.path), tmp_path / "state")
    before.start()
    try:
        before.wait_served(sha)
    finally:
        before.stop()
    daemon = DaemonProcess(str(work.path), tmp_path / "state", extra=["--assets-dir", str(tmp_path / "assets")])
    daemon.start()
    try:
        wait_for(lambda: get(daemon, "/assets/ubuntu/2204/vmlinuz") == (200, KERNEL1),
                 f"the served commit's kernel, fetched without a new commit\n{daemon.log()[-2000:]}", timeout=60)
        assert get(daemon, f"/r/{sha}/assets/ubuntu/2204/initrd") == (200, INITRD1)
        assert daemon.served_revision() == sha
    finally:
        daemon.stop()
