"""The content store behind /assets over real HTTP: a generation keeps its bytes after a path's
content changes, the store itself is never served, and content is collected only when no kept
generation links to it."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.assetstore import AssetStore
from reconciler.core.events import CollectEvents
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers.http import HttpServer, make_boot_app
from tests.asset_lab import sha256_of
from tests.dhcp_fixtures import make_state
from tests.support import patterned_bytes

OLD, NEW = patterned_bytes(5000, seed=11), patterned_bytes(6000, seed=12)
REV_A, REV_B = "a" * 40, "b" * 40


def stored(store: AssetStore, data: bytes, name: str) -> str:
    tmp = store.tmp_dir() / name
    tmp.write_bytes(data)
    sha = sha256_of(tmp)
    store.adopt(tmp, sha)
    return sha


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[AssetStore, GenerationHolder, HttpServer]]:
    root = tmp_path / "assets"
    root.mkdir()
    holder = GenerationHolder()
    server = HttpServer(("127.0.0.1", 0), make_boot_app(holder, CollectEvents(), root), threads=2)
    server.start()
    try:
        yield AssetStore(root), holder, server
    finally:
        server.stop(5)


def get(server: HttpServer, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_an_old_generation_keeps_its_kernel_after_the_path_changes(
    served: tuple[AssetStore, GenerationHolder, HttpServer],
) -> None:
    store, holder, server = served
    old = stored(store, OLD, "k1")
    store.link_generation(REV_A, {"ubuntu/vmlinuz": old})
    store.publish({"ubuntu/vmlinuz": old})
    holder.swap(Generation(REV_A, make_state((), revision=REV_A), {}))
    (store.root / "handplaced").write_bytes(b"by hand\n")

    new = stored(store, NEW, "k2")
    store.link_generation(REV_B, {"ubuntu/vmlinuz": new})
    store.publish({"ubuntu/vmlinuz": new})
    holder.swap(Generation(REV_B, make_state((), revision=REV_B), {}))

    assert get(server, f"/r/{REV_A}/assets/ubuntu/vmlinuz") == (200, OLD)  # the install pinned to A
    assert get(server, f"/r/{REV_B}/assets/ubuntu/vmlinuz") == (200, NEW)
    assert get(server, "/assets/ubuntu/vmlinuz") == (200, NEW)  # current
    assert get(server, f"/r/{REV_A}/assets/handplaced") == (200, b"by hand\n")  # not synced: the root's
    assert get(server, f"/assets/.netboot/blobs/sha256/{old[:2]}/{old}")[0] == 404
    assert get(server, f"/assets/.netboot/generations/{REV_A}/ubuntu/vmlinuz")[0] == 404

    # A is still kept: its kernel stays; once A is no longer kept, its content goes
    assert store.collect(keep={REV_A, REV_B}) == 0
    assert store.has(old)
    assert store.collect(keep={REV_B}) == len(OLD)
    assert not store.has(old) and store.has(new)
    assert get(server, "/assets/ubuntu/vmlinuz") == (200, NEW)


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    one = stored(store, OLD, "x1")
    two = stored(store, OLD, "x2")
    assert one == two
    store.publish({"2204/vmlinuz": one, "2204-hwe/vmlinuz": two})
    assert (tmp_path / "2204/vmlinuz").stat().st_ino == (tmp_path / "2204-hwe/vmlinuz").stat().st_ino
    assert len(list((tmp_path / ".netboot" / "blobs").glob("sha256/*/*"))) == 1
