"""A restarted daemon (a real process) and what it kept on disk: pinned generations, the report secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

from reconciler.adapters.artifacts import ArtifactStore
from reconciler.core import template
from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from reconciler.daemon import Daemon, Result
from reconciler.settings import Settings
from tests.integration.daemon_support import EXAMPLE, NODE1_MAC, DaemonProcess, WorkTree, http_get, http_post, wait_for

NODE1_B = (EXAMPLE / "nodes" / "node-1.yaml").read_text().replace("ubuntu-2204-install", "ubuntu-2404-install")
TOKEN = re.compile(r"token=([0-9a-f]+)")


def test_pinned_urls_of_a_kept_generation_answer_after_a_restart(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    a = tree.head()
    args = ["--interval", "3600"]
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", args).start()
    try:
        daemon.wait_served(a)
        code, script_a = http_get(f"{daemon.url}/r/{a}/ipxe?mac={NODE1_MAC}")
        assert code == 200 and f"/r/{a}/" in script_a.decode()
        code, seed_a = http_get(f"{daemon.url}/r/{a}/cloud-init/{NODE1_MAC}/user-data")
        assert code == 200 and seed_a
        b = tree.commit("node-1 moves to 24.04", {"nodes/node-1.yaml": NODE1_B})
        daemon.wait_served(b)
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]

    again = DaemonProcess(str(tree.path), tmp_path / "state", args, port=daemon.port).start()
    try:
        again.wait_served(b)
        # A is still on disk (--keep-generations 10): its pinned URLs answer with A's content.
        assert http_get(f"{again.url}/r/{a}/ipxe?mac={NODE1_MAC}") == (200, script_a)
        assert http_get(f"{again.url}/r/{a}/cloud-init/{NODE1_MAC}/user-data") == (200, seed_a)
        code, meta = http_get(f"{again.url}/r/{a}/cloud-init/{NODE1_MAC}/meta-data")
        assert code == 200 and meta.startswith(b"instance-id:")
        # The current one is unchanged, and unknown revisions stay 410 Gone.
        assert f"/r/{b}/" in again.ipxe()
        assert http_get(f"{again.url}/r/{'0' * 40}/ipxe?mac={NODE1_MAC}")[0] == 410
        assert http_get(f"{again.url}/r/..%2Fcurrent/ipxe?mac={NODE1_MAC}")[0] in (404, 410)
    finally:
        assert again.stop() == 0, again.log()[-3000:]


def test_a_collected_generation_stays_gone_after_a_restart(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    a = tree.head()
    args = ["--interval", "3600", "--keep-generations", "1"]
    daemon = DaemonProcess(str(tree.path), tmp_path / "state", args).start()
    try:
        # no fetch of node-1's script here: a machine booting A would keep A from being collected
        wait_for(lambda: daemon.served_revision() == a, "A applied")
        b = tree.commit("node-1 moves to 24.04", {"nodes/node-1.yaml": NODE1_B})
        wait_for(lambda: daemon.served_revision() == b, "B applied")
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    assert not (tmp_path / "state" / "generations" / a).exists()
    again = DaemonProcess(str(tree.path), tmp_path / "state", args, port=daemon.port).start()
    try:
        again.wait_served(b)
        assert http_get(f"{again.url}/r/{a}/ipxe?mac={NODE1_MAC}")[0] == 410
        assert http_get(f"{again.url}/r/{b}/ipxe?mac={NODE1_MAC}")[0] == 200
    finally:
        assert again.stop() == 0, again.log()[-3000:]


def _seed_token(daemon: DaemonProcess) -> str:
    code, user_data = http_get(f"{daemon.url}/cloud-init/{NODE1_MAC}/user-data")
    assert code == 200, user_data
    match = TOKEN.search(user_data.decode())
    assert match, user_data.decode()
    return match.group(1)


def test_a_new_report_secret_re_renders_the_current_generation_at_start(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    head = tree.head()
    state = tmp_path / "state"
    args = ["--interval", "3600"]
    daemon = DaemonProcess(str(tree.path), state, args).start()
    try:
        daemon.wait_served(head)
        old_token = _seed_token(daemon)
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    old_secret = (state / "report-secret").read_bytes().strip()
    assert old_token == template.report_token(old_secret, "node-1", head)

    (state / "report-secret").unlink()  # the README's way to change every token
    again = DaemonProcess(str(tree.path), state, args, port=daemon.port).start()
    try:
        again.wait_served(head)
        new_secret = (state / "report-secret").read_bytes().strip()
        assert new_secret != old_secret
        token = _seed_token(again)
        assert token == template.report_token(new_secret, "node-1", head)
        # the served token is accepted from an address that is not node-1's own
        body = json.dumps({"status": "success", "message": "token after rotation"}).encode()
        code, reply = http_post(f"{again.url}/report/{NODE1_MAC}?token={token}", body,
                                {"Content-Type": "application/json"})
        assert code == 200, reply
        # and the generation on disk carries it too (a third start re-renders nothing more)
        on_disk = (state / "current" / "cloud-init" / NODE1_MAC / "user-data").read_text()
        assert f"token={token}" in on_disk
    finally:
        assert again.stop() == 0, again.log()[-3000:]


def test_writing_a_stored_revision_again_swaps_it_whole_and_recycles_the_old_tree(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "state")
    store.prepare()
    source = {"netboot.yaml": b"server: {address: 10.0.0.1}\n"}
    files = {"boot.ipxe": b"#!ipxe\n", "cloud-init/m/user-data": b"token=old\n"}
    root = store.write("a" * 40, files, source, meta={"report-key": b"old\n"})
    old = store.load("a" * 40)
    assert old.meta == {"report-key": b"old\n"} and old.files == files  # .meta/ is not a served file
    # idempotent without `replace`
    assert store.write("a" * 40, {**files, "boot.ipxe": b"other\n"}, source) == root
    assert store.load("a" * 40).files == files

    again = {**files, "cloud-init/m/user-data": b"token=new\n"}
    assert store.write("a" * 40, again, source, previous=old, meta={"report-key": b"new\n"}, replace=True) == root
    new = store.load("a" * 40)
    assert (new.files, new.source, new.meta) == (again, source, {"report-key": b"new\n"})
    assert store.meta("a" * 40, "report-key") == b"new\n"
    assert store.stored() == ["a" * 40]  # no .tmp left in generations/
    assert not [p for p in (tmp_path / "state" / "recycle").iterdir() if p.name.startswith("gen-")]


def test_a_renderer_that_fails_on_the_re_render_at_start_does_not_stop_the_start(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    state = tmp_path / "state"
    first = Daemon(Settings(repo=str(tree.path), state_dir=state, watch=False, report_secret=b"one"),
                   renderer=lambda s: render_generation(s, report_secret=b"one"))
    first.open()
    assert first.reconcile_once() is Result.APPLIED
    first.shutdown()

    def broken(state: DesiredState) -> dict[str, bytes]:
        raise RuntimeError("renderer bug")

    second = Daemon(Settings(repo=str(tree.path), state_dir=state, watch=False, report_secret=b"two"),
                    renderer=broken)
    try:
        second.open()  # the stored generation needs a new rendering, which fails: nothing served, no crash
        assert second.holder.current() is None
        assert second.reconcile_once() is Result.FAILED
    finally:
        second.shutdown()
