"""One site's dashboard (`/ui/?site=NAME`) keeps its site across pages: the pager's links carry
`?site=` (they were `?page=N`, so page 2 showed every site's commits and nodes).

A real results store two sites share (SQLite), its dashboard app behind a real HTTP server
(wsgiref), read with urllib: paris applied 25 commits and lyon 3, paris has 130 nodes; page 2
is still paris's view (its site link marked; the fleet: paris's nodes, not lyon's).
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from prometheus_client import CollectorRegistry

from reconciler.adapters.store import ResultsStore
from reconciler.core.outcomes import Target
from reconciler.generation import GenerationHolder
from reconciler.servers.http_results import ResultsRecorder, make_results_apps


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "results.sqlite3"
    lyon = ResultsStore(path, instance="lyon-a", site="lyon")
    for i in range(3):
        lyon.record_revision(f"{i:02d}" + "b" * 38, 1000.0 + i, [Target("lyon-1", "52:54:00:00:00:01", "p", True)])
    lyon.close()
    store = ResultsStore(path, instance="paris-a", site="paris")
    nodes = [Target(f"paris-{n:03d}", f"52:54:00:00:01:{n:02x}", "p", True) for n in range(130)]
    for i in range(25):  # the last one declares the 130 nodes
        store.record_revision(f"{i:02d}" + "a" * 38, 2000.0 + i, nodes if i == 24 else nodes[:1])
    apps = make_results_apps(holder=GenerationHolder(), recorder=ResultsRecorder(store, CollectorRegistry()),
                             registry=CollectorRegistry(), secret=None, status=dict)
    server: WSGIServer = make_server("127.0.0.1", 0, apps["/ui"], handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        store.close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def _next(page: str) -> str:
    match = re.search(r'<a rel="next" href="([^"]+)"', page)
    assert match is not None, page
    return match.group(1).replace("&amp;", "&")


@pytest.mark.parametrize("view", ["/ui/", "/ui/fleet"])
def test_the_pager_keeps_the_site(dashboard: str, view: str) -> None:
    first = _get(f"{dashboard}{view}?site=paris")
    link = _next(first)
    assert link.endswith("?site=paris&page=2"), link
    second = _get(urljoin(f"{dashboard}{view}", link))
    assert "page 2 of 2" in second
    assert '<a href="?site=paris" aria-current="page">paris</a>' in second  # still paris's view
    if view == "/ui/fleet":
        assert "paris-129" in second and "lyon-1" not in second
    prev = re.search(r'<a rel="prev" href="([^"]+)"', second)
    assert prev is not None and prev.group(1).endswith("?site=paris&amp;page=1"), prev
