"""A node's report token holds for every generation on disk, also after a restart, without that
generation first being loaded through a request (a `/r/<sha>/` URL).

A machine that started installing from revision A reports with A's token; meanwhile B was
applied and the daemon restarted, so only B (current) is in memory. The token was refused
(403 bad-token) unless the results store happened to name A as the revision that last served
the machine.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.commands import run as run_command
from reconciler.core import template
from reconciler.core.render import render_generation
from reconciler.daemon import Daemon, Result
from reconciler.settings import Settings
from tests.integration.test_results import (
    MACS,
    SECRET,
    STRANGER,
    commit,
    make_assets,
    make_repo,
    node_yaml,
    post_json,
)


def make_daemon(repo: Path, state: Path, assets: Path) -> Daemon:
    settings = Settings(repo=str(repo), state_dir=state, watch=False, dhcp=False, tftp=False,
                        http_listen=("127.0.0.1", 0), assets_dir=assets, report_secret=SECRET)
    daemon = Daemon(settings, renderer=lambda s: render_generation(s, report_secret=SECRET))
    daemon.open()
    return daemon


def test_a_token_for_a_generation_on_disk_holds_after_a_restart(tmp_path: Path) -> None:
    repo, state, assets = make_repo(tmp_path / "repo"), tmp_path / "state", make_assets(tmp_path / "assets")
    first = make_daemon(repo, state, assets)
    try:
        assert first.reconcile_once() is Result.APPLIED
        old = first.book.applied
        (repo / "nodes" / "node-1.yaml").write_text(node_yaml("node-1") + "labels: {rack: r9}\n")
        new = commit(repo, "node-1 moves rack")
        assert first.reconcile_once() is Result.APPLIED
    finally:
        first.shutdown()
    assert old is not None and old != new

    again = make_daemon(repo, state, assets)  # a restart: only `current` (new) is loaded
    try:
        run_command._start_servers(again, again.settings)
        port = again.servers["http"].server.address[1]
        assert old in again.artifacts.stored() and old not in again.holder.retained()
        token = template.report_token(SECRET, "node-1", old)
        reply = post_json(port, f"/report/{MACS['node-1']}?token={token}", {"status": "success"}, STRANGER)
        assert reply.status == 200, reply.body
        assert reply.json()["revision"] == old
        wrong = post_json(port, f"/report/{MACS['node-1']}?token={'0' * 32}", {"status": "success"}, STRANGER)
        assert wrong.status == 403
    finally:
        again.shutdown()
