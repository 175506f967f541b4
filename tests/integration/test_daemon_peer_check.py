"""The daemon's peer check, the real `dhcpd -t` on each rendered dhcpd.conf (daemon.steps): it
runs for a dhcpd.conf this dhcpd has not accepted, not again for one that differs from the
accepted one only by its first line (the header comment naming the revision: a commit that
changes no DHCP field); another dhcpd binary (an upgrade) checks again, and --verify-incremental
checks every commit. dhcpd runs behind a wrapper on PATH that notes each run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reconciler.core.render import render_generation
from reconciler.daemon import Daemon, Result
from reconciler.settings import Settings
from tests.integration.daemon_support import WorkTree

DHCPD = shutil.which("dhcpd", path="/usr/sbin:/sbin:/usr/bin")
NODE = "mac: 52:54:00:cc:dd:{mac}\nprofile: local-disk\nlabels: {{note: {note}}}\n"


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A log with one line per run of the `dhcpd` the daemon finds on PATH (the real one)."""
    if DHCPD is None:
        pytest.skip("ISC dhcpd is not installed")
    log = tmp_path / "dhcpd-runs"
    log.write_text("")
    _wrapper(tmp_path / "bin", f'echo run >> {log}\nexec {DHCPD} "$@"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return log


def _wrapper(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "dhcpd"
    tmp = bin_dir / "dhcpd.new"
    tmp.write_text("#!/bin/sh\n" + body)
    tmp.chmod(0o755)
    tmp.replace(path)  # a new file, as a package upgrade makes


def _daemon(tree: WorkTree, state: Path, **overrides: object) -> Daemon:
    settings = Settings(repo=str(tree.path), state_dir=state, watch=False, **overrides)  # type: ignore[arg-type]
    daemon = Daemon(settings, renderer=render_generation)
    daemon.open()
    return daemon


def _count(runs: Path) -> int:
    return len(runs.read_text().splitlines())


def _conf(daemon: Daemon) -> bytes:
    current = daemon.holder.current()
    assert current is not None
    conf = current.file("dhcpd.conf")
    assert conf is not None
    return conf


@pytest.mark.parametrize("run_like", [False, True], ids=["plain", "worker-and-memo"])
def test_dhcpd_checks_a_config_once_until_a_dhcp_field_or_dhcpd_itself_changes(tmp_path: Path, runs: Path,
                                                                               run_like: bool) -> None:
    """`run_like`: as the `run` command has it, the worker's render memo storing the config at its
    stand-in revision, the same stored object from commit to commit (steps._stored_conf)."""
    tree = WorkTree(tmp_path / "repo")
    tree.commit("a node", {"nodes/n.yaml": NODE.format(mac="01", note="a")})
    daemon = _daemon(tree, tmp_path / "state", **({"worker": True, "reuse_renders": True} if run_like else {}))
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        assert _count(runs) == 1
        first = _conf(daemon)
        tree.commit("a label", {"nodes/n.yaml": NODE.format(mac="01", note="b")})
        assert daemon.reconcile_once() is Result.APPLIED
        assert _conf(daemon) != first  # its header names the new revision
        assert _count(runs) == 1  # the rest is what dhcpd accepted: not checked again
        tree.commit("a MAC", {"nodes/n.yaml": NODE.format(mac="02", note="b")})
        assert daemon.reconcile_once() is Result.APPLIED
        assert _count(runs) == 2
        # dhcpd replaced (an upgrade): the same config is checked again, and this one refuses it
        _wrapper(tmp_path / "bin", f'echo run >> {runs}\necho "dhcpd.conf line 3: bad" >&2\nexit 1\n')
        tree.commit("another label", {"nodes/n.yaml": NODE.format(mac="02", note="c")})
        assert daemon.reconcile_once() is Result.REJECTED
        assert _count(runs) == 3
        assert "rejected by dhcpd -t" in daemon.status()["message"]
    finally:
        daemon.shutdown()


def test_verify_incremental_checks_every_commit(tmp_path: Path, runs: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    tree.commit("a node", {"nodes/n.yaml": NODE.format(mac="01", note="a")})
    daemon = _daemon(tree, tmp_path / "state", verify_incremental=True)
    try:
        assert daemon.reconcile_once() is Result.APPLIED
        tree.commit("a label", {"nodes/n.yaml": NODE.format(mac="01", note="b")})
        assert daemon.reconcile_once() is Result.APPLIED
        assert _count(runs) == 2
    finally:
        daemon.shutdown()


def test_a_first_commit_refused_by_dhcpd_through_the_worker_is_rejected_with_its_words(tmp_path: Path,
                                                                                        runs: Path) -> None:
    """The worker sends a whole result's dhcpd.conf ahead and `dhcpd -t` starts on it while the
    rest comes (daemon.steps, `_peer_early`): its refusal is the commit's, said as before, once."""
    _wrapper(tmp_path / "bin", f'echo run >> {runs}\necho "dhcpd.conf line 3: bad" >&2\nexit 1\n')
    tree = WorkTree(tmp_path / "repo")
    tree.commit("a node", {"nodes/n.yaml": NODE.format(mac="01", note="a")})
    daemon = _daemon(tree, tmp_path / "state", worker=True, reuse_renders=True)
    try:
        assert daemon.reconcile_once() is Result.REJECTED
        assert _count(runs) == 1
        assert daemon.status()["message"].endswith("rejected by dhcpd -t: dhcpd.conf line 3: bad")
    finally:
        daemon.shutdown()
