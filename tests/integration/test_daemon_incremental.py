"""The daemon renders only what a commit touched (issue 25), and serves exactly what a render
from scratch gives: a real daemon applies a long random sequence of commits to a repository of
2,000 nodes (node edits, additions, deletions, renames, profile and template edits, netboot.yaml),
and each generation it serves is compared, file by file, with the commit rendered from scratch
here. `--verify-incremental` catches a memo gone wrong: it logs the mismatch and serves the
render from scratch."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pytest

from reconciler.adapters import renderfork
from reconciler.adapters.agecrypt import load_identity
from reconciler.adapters.artifacts import ArtifactStore
from reconciler.adapters.dirsource import read_directory
from reconciler.commands.run import report_secret
from reconciler.core.render import render_served
from reconciler.core.validate import validate
from reconciler.daemon import worker
from reconciler.daemon.steps import RENDER_MEMO
from tests.integration.daemon_support import DEMO_IDENTITY, DaemonProcess, WorkTree, http_get, wait_for

NODES = 2000
PROFILE = """\
name: Bulk install
boot:
  kernel: /assets/ubuntu/2204/vmlinuz
  initrd: [/assets/ubuntu/2204/initrd]
  args: [autoinstall, ip=dhcp, "ds=nocloud;s={{ cloud_init_url }};dsmode=net", "rev={{ revision }}", "%s"]
cloud_init: bulk
"""
TEMPLATE = """\
#cloud-config
autoinstall:
  version: 1
  identity:
    hostname: {{ hostname }}
    username: ops
    password: "$6$x$y"
# %s
"""


def _node(i: int, profile: str, note: str = "") -> str:
    extra = f"metadata: {{note: {note}}}\n" if note else ""
    return f"mac: 52:54:03:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}\nprofile: {profile}\n{extra}"


def _seed(tree: WorkTree) -> None:
    files: dict[str, str | None] = {"profiles/bulk.yaml": PROFILE % "x=0", "cloud-init/bulk.yaml": TEMPLATE % "t0"}
    for i in range(NODES):
        files[f"nodes/bulk-{i:05d}.yaml"] = _node(i, "bulk" if i % 2 else "local-disk")
    tree.commit(f"{NODES} nodes", files)


def _edit(tree: WorkTree, rnd: random.Random, n: int) -> str:
    nodes = sorted(p.name for p in (tree.path / "nodes").iterdir() if p.name.startswith("bulk-"))
    kind = rnd.choice(["node", "node", "node", "add", "delete", "rename", "profile", "template", "site"])
    pick = rnd.choice(nodes)
    i = int(re.sub(r"\D", "", pick.split(".")[0])[-5:] or 0)
    if kind == "node":
        tree.write({f"nodes/{pick}": _node(i, rnd.choice(["bulk", "local-disk"]), f"c{n}")})
    elif kind == "add":
        tree.write({f"nodes/bulk-{NODES + n:05d}.yaml": _node(NODES + n, "bulk", f"new{n}")})
    elif kind == "delete":
        tree.write({f"nodes/{pick}": None})
    elif kind == "rename":
        text = (tree.path / "nodes" / pick).read_text()
        tree.write({f"nodes/{pick}": None, f"nodes/bulk-r{n}-{pick}": text})
    elif kind == "profile":
        tree.write({"profiles/bulk.yaml": PROFILE % f"x={n}"})
    elif kind == "template":
        tree.write({"cloud-init/bulk.yaml": TEMPLATE % f"t{n}"})
    else:
        site = (tree.path / "netboot.yaml").read_text()
        tree.write({"netboot.yaml": re.sub(r"lease_time: \d+", f"lease_time: {600 + n}", site, count=1)})
    return kind


def _from_scratch(tree: WorkTree, revision: str, state_dir: Path) -> dict[str, bytes]:
    snapshot = dataclasses.replace(read_directory(tree.path), revision=revision)
    state = validate(snapshot).state
    assert state is not None
    return dict(render_served(state, report_secret(state_dir), load_identity(DEMO_IDENTITY)))


def _wait_applied(daemon: DaemonProcess, revision: str) -> None:
    def done() -> bool:
        status = daemon.status() or {}
        rejected = status.get("last_attempted_revision") == revision and status.get("reason") == "InvalidRevision"
        assert not (rejected and status.get("last_applied_revision") != revision), daemon.log()[-3000:]
        return status.get("last_applied_revision") == revision

    wait_for(done, f"{revision[:12]} applied\n{daemon.log()[-3000:]}", timeout=300)


@pytest.mark.parametrize("forking", [False, True], ids=["one-cpu", "forked"])
def test_each_generation_served_after_random_commits_is_the_render_from_scratch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forking: bool) -> None:
    """`forked`: the worker hands half of any render of 200 nodes or more to a forked child
    (adapters.renderfork, at 4,000 by default), as a first render or a profile edit does."""
    if forking:
        monkeypatch.setenv(renderfork.FANOUT_MIN_ENV, "200")
    tree = WorkTree(tmp_path / "repo")
    _seed(tree)
    state_dir = tmp_path / "state"
    daemon = DaemonProcess(str(tree.path), state_dir, ["--interval", "3600"]).start()
    rnd = random.Random(25)
    try:
        _wait_applied(daemon, tree.head())
        kinds = []
        for n in range(20):
            kinds.append(_edit(tree, rnd, n))
            revision = tree.commit(f"change {n}")
            _wait_applied(daemon, revision)
            daemon.wait_persisted(revision)  # served first, then written: both are compared
            served = ArtifactStore(state_dir).load(revision).files
            expected = _from_scratch(tree, revision, state_dir)
            assert served.keys() == expected.keys(), kinds
            wrong = [p for p in expected if served[p] != expected[p]]
            assert not wrong, (kinds, wrong[:5])
            code, body = http_get(f"{daemon.url}/ipxe?mac=52:54:03:00:00:01")
            assert code == 200 and body == expected["ipxe/bulk-00001.ipxe"]
        log = daemon.log()
        reused = [float(m) for m in re.findall(r"worker\.memo\.reused=([0-9.]+)", log)]
        assert reused and max(reused) >= NODES // 2, "the memo was never used"
        forked = [float(m) for m in re.findall(r"worker\.render\.forked=([0-9.]+)", log)]
        assert (max(forked) >= NODES // 2) == forking, forked
        validated = [float(m) for m in re.findall(r"worker\.validate\.forked=([0-9.]+)", log)]
        assert (max(validated) >= NODES // 2) == forking, validated  # the first validation's boot check
    finally:
        daemon.stop()


def _served_after_a_wrong_memo(tmp_path: Path, extra: list[str], code: str | None) -> tuple[DaemonProcess, bytes,
                                                                                         bytes]:
    """A daemon applies two bulk nodes and stops (its worker writes the memo); the memo is then
    made to hold another iPXE script for bulk-00001 (what a bug in the reuse, or the code before
    an upgrade, would leave) and, with `code`, to say other code made it; the daemon starts again
    and bulk-00002 changes. The daemon (running: stop it), what it serves bulk-00001, and what a
    render from scratch gives."""
    tree = WorkTree(tmp_path / "repo")
    tree.commit("a bulk node", {"profiles/bulk.yaml": PROFILE % "x=0", "cloud-init/bulk.yaml": TEMPLATE % "t0",
                                "nodes/bulk-00001.yaml": _node(1, "bulk"), "nodes/bulk-00002.yaml": _node(2, "bulk")})
    state_dir = tmp_path / "state"
    daemon = DaemonProcess(str(tree.path), state_dir, ["--interval", "3600", *extra]).start()
    try:
        _wait_applied(daemon, tree.head())
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    try:
        memo_file = state_dir / RENDER_MEMO
        memo = worker._load_memo(memo_file)
        kept = memo.entries["bulk-00001"]
        wrong = {**kept.entries, "ipxe/bulk-00001.ipxe": b"#!ipxe\necho wrong\n"}
        memo.entries["bulk-00001"] = kept._replace(entries=wrong)
        if code is not None:
            memo.code = code
        worker._save_memo(memo_file, memo)
        daemon.start()
        revision = tree.commit("another node changes", {"nodes/bulk-00002.yaml": _node(2, "bulk", "x")})
        _wait_applied(daemon, revision)
        status, served = http_get(f"{daemon.url}/ipxe?mac=52:54:03:00:00:01")
        assert status == 200, served
    except BaseException:
        daemon.stop()
        raise
    return daemon, served, _from_scratch(tree, revision, state_dir)["ipxe/bulk-00001.ipxe"]


def test_verify_incremental_serves_the_render_from_scratch_and_says_the_memo_was_wrong(tmp_path: Path) -> None:
    daemon, served, expected = _served_after_a_wrong_memo(tmp_path, ["--verify-incremental"], None)
    try:
        assert served == expected
        assert "INCREMENTAL RENDER MISMATCH" in daemon.log()
        assert "ipxe/bulk-00001.ipxe" in daemon.log()
    finally:
        daemon.stop()


def test_a_memo_made_by_other_code_is_not_used(tmp_path: Path) -> None:
    """After an upgrade, nodes whose inputs did not change are rendered by the new code: the memo
    kept from the old code (its bytes, here a wrong iPXE script standing for an old rendering bug)
    was served to them until their inputs changed. No --verify-incremental: a daemon as run."""
    daemon, served, expected = _served_after_a_wrong_memo(tmp_path, [], "the digest of an older release")
    try:
        assert served == expected, served
    finally:
        daemon.stop()
