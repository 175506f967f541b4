"""The example repository rendered by the real renderer, served over real HTTP, followed like a node.

A node boots: bootstrap -> /ipxe -> the pinned kernel and initrd URLs in that script -> the pinned
NoCloud seed URL in its kernel args; commit B lands in between; the node keeps getting A.
The nodes' reserved addresses are moved from 10.10.10.x to 127.10.10.x and each node's requests
come from its own address (a node's script and seed go to that address only).
"""

from __future__ import annotations

import dataclasses
import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from reconciler.adapters.dirsource import read_directory
from reconciler.core.events import CollectEvents
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers.http import HttpServer, make_boot_app
from tests.integration.test_http_boot import NODE1_IP, on_loopback

REPO = Path(__file__).resolve().parents[2] / "example-repo"
SHA_A = "1" * 40
SHA_B = "2" * 40


def rendered(revision: str) -> Generation:
    state = validate(read_directory(REPO)).state
    assert state is not None
    state = dataclasses.replace(state, revision=revision, nodes=tuple(on_loopback(n) for n in state.nodes))
    return Generation(revision, state, render_generation(state))


def connect(address: tuple[str, int], source: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*address, timeout=10, source_address=(source, 0))


@pytest.fixture
def node_view(tmp_path: Path) -> Iterator[tuple[GenerationHolder, CollectEvents, http.client.HTTPConnection]]:
    assets = tmp_path / "assets"
    for release in ("2204", "2404"):
        (assets / "ubuntu" / release).mkdir(parents=True)
        (assets / "ubuntu" / release / "vmlinuz").write_bytes(b"kernel " + release.encode())
        (assets / "ubuntu" / release / "initrd").write_bytes(b"initrd " + release.encode())
    holder = GenerationHolder()
    holder.swap(rendered(SHA_A))
    events = CollectEvents()
    server = HttpServer(("127.0.0.1", 0), make_boot_app(holder, events, assets))
    server.start()
    conn = connect(server.address, NODE1_IP)  # node-1's one keep-alive connection, like iPXE
    try:
        yield holder, events, conn
    finally:
        conn.close()
        server.stop(5)


def fetch(conn: http.client.HTTPConnection, url_or_path: str) -> tuple[int, str, bytes]:
    parts = urlsplit(url_or_path)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", target)
    resp = conn.getresponse()
    return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def test_node_follows_its_pinned_script_across_a_commit(
    node_view: tuple[GenerationHolder, CollectEvents, http.client.HTTPConnection],
) -> None:
    holder, events, conn = node_view
    status, _, bootstrap = fetch(conn, "/boot.ipxe")
    assert status == 200 and b"mac=${mac:hexhyp}" in bootstrap
    status, _, script = fetch(conn, "/ipxe?uuid=&mac=52-54-00-aa-bb-01&domain=&hostname=&serial=&arch=x86_64")
    assert status == 200
    text = script.decode()
    kernel = re.search(r"^kernel (\S+)", text, re.M)
    initrd = re.search(r"^initrd --name \S+ (\S+)", text, re.M)
    seed = re.search(r"ds=nocloud;s=([^;\s]+)", text)
    assert kernel and initrd and seed
    for url in (kernel[1], initrd[1], seed[1]):
        assert urlsplit(url).path.startswith(f"/r/{SHA_A}/"), url
    assert seed[1].endswith("/")

    holder.swap(rendered(SHA_B))  # commit B lands mid-install

    assert fetch(conn, kernel[1])[::2] == (200, b"kernel 2204")
    assert fetch(conn, initrd[1])[::2] == (200, b"initrd 2204")
    status, ctype, user = fetch(conn, seed[1] + "user-data")
    assert status == 200 and ctype.startswith("text/cloud-config") and user.startswith(b"#cloud-config")
    assert f"installed revision {SHA_A}".encode() in user
    status, ctype, meta = fetch(conn, seed[1] + "meta-data")
    assert b"instance-id" in meta
    assert status == 200 and ctype.startswith("application/yaml")
    assert fetch(conn, seed[1] + "vendor-data")[0] == 200

    got = [(e.stage, e.revision, e.node) for e in events.events]
    assert got == [
        ("ipxe-bootstrap", SHA_A, "node-1"),
        ("ipxe-script", SHA_A, "node-1"),
        ("kernel", SHA_A, "node-1"),  # by node-1's reserved address
        ("initrd", SHA_A, "node-1"),
        ("user-data", SHA_A, "node-1"),
        ("meta-data", SHA_A, "node-1"),
        ("vendor-data", SHA_A, "node-1"),
    ]
    # the next boot is B's
    status, _, script = fetch(conn, "/ipxe?mac=52-54-00-aa-bb-01")
    assert f"/r/{SHA_B}/assets/".encode() in script


def test_unknown_machine_gets_the_default_group_and_legacy_node_its_disk(
    node_view: tuple[GenerationHolder, CollectEvents, http.client.HTTPConnection],
) -> None:
    _, events, conn = node_view
    status, _, script = fetch(conn, "/ipxe?mac=52-54-00-de-ad-01")
    assert status == 200 and b"group default" in script and b"exit" in script
    address = (conn.host, conn.port)
    status, _, script = fetch(connect(address, "127.10.10.220"), "/ipxe?mac=5254.00aa.bb20")
    assert status == 200 and b"legacy-1" in script
    db1 = connect(address, "127.10.10.210")
    status, _, env = fetch(db1, "/metadata?mac=52:54:00:aa:bb:10")
    lines = env.decode().splitlines()
    assert status == 200 and "HOSTNAME=db-1" in lines and "REQUEST_QUERY_MAC=52:54:00:aa:bb:10" in lines
    status, _, grub = fetch(db1, "/grub?mac=52-54-00-aa-bb-10")
    assert status == 200 and f"/r/{SHA_A}/assets/ubuntu/2404/".encode() in grub
    assert [e.node for e in events.events] == [None, "legacy-1", "db-1", "db-1"]
