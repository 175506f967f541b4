"""`kill -9` at random points of a reconcile, then restart: a complete generation is served, never a torn one.

`--keep-generations 2`, so most reconciles also collect a generation and write into inodes recycled
from collected ones (adapters/artifacts.py): a kill lands in those steps too, and every generation
kept on disk (not only `current`) must still hold exactly what its commit renders."""

from __future__ import annotations

import functools
import random
import signal
import time
from pathlib import Path

import pygit2

from reconciler.adapters.agecrypt import load_identity
from reconciler.adapters.artifacts import ArtifactStore
from reconciler.adapters.gitsource import read_tree
from reconciler.commands.run import report_secret
from reconciler.core.render import render_served
from reconciler.core.validate import validate
from tests.integration.daemon_support import DEMO_IDENTITY, DaemonProcess, WorkTree, wait_for

NODES = 300
ARGS = ["--interval", "3600", "--no-watch", "--keep-generations", "2"]


def node_files(round_: int) -> dict[str, str | None]:
    return {
        f"nodes/bulk-{i:04d}.yaml": f"mac: 52:54:01:{i >> 8:02x}:{i & 255:02x}:{round_ % 256:02x}\n"
        f"profile: local-disk\nlabels: {{round: r{round_}}}\n"
        for i in range(NODES)
    }


def expected_files(repo: Path, revision: str, state_dir: Path) -> dict[str, bytes]:
    """A fresh render of `revision`, as the daemon renders it (with its boot-report secret)."""
    validation = validate(read_tree(pygit2.Repository(str(repo)), revision))
    assert validation.state is not None
    # as the daemon renders it: example-repo's secret decrypted with the demo identity it was given
    return dict(render_served(validation.state, report_secret(state_dir), load_identity(DEMO_IDENTITY)))


def applied_durations(daemon: DaemonProcess) -> list[float]:
    status = daemon.status()
    return [r["duration_seconds"] for r in (status or {}).get("reconciles", []) if r["result"] == "applied"]


def test_kill_9_during_reconciles_never_leaves_a_torn_generation(tmp_path: Path) -> None:
    rng = random.Random(1234)
    tree = WorkTree(tmp_path / "repo")
    tree.commit("bulk", node_files(0))
    state = tmp_path / "state"
    daemon = DaemonProcess(str(tree.path), state, ARGS).start()
    daemon.wait_served(tree.head())
    daemon.wait_persisted(tree.head())  # served first, then written: a kill before that leaves no `current`
    port = daemon.port
    commits = {tree.head()}
    torn_windows = 0  # kills that landed before the new generation was swapped in
    fractions = [0.05, 0.25, 0.45, 0.65, 0.85, 1.05]
    rng.shuffle(fractions)
    try:
        for round_, fraction in enumerate(fractions, start=1):
            # The new generation is served a moment before its reconcile is in the history.
            duration = max(wait_for(functools.partial(applied_durations, daemon), "an applied reconcile in /status"))
            new = tree.commit(f"round {round_}", node_files(round_))
            commits.add(new)
            daemon.signal(signal.SIGHUP)
            # Kill somewhere inside the reconcile: a spread of points over the time one takes.
            time.sleep(duration * rng.uniform(fraction - 0.05, fraction + 0.05))
            daemon.kill()

            store = ArtifactStore(state)
            current = store.current_revision()
            assert current in commits
            stored = store.load(current)
            assert dict(stored.files) == expected_files(tree.path, current, state), f"torn generation {current}"
            for revision in store.stored():
                assert dict(store.load(revision).files) == expected_files(tree.path, revision, state), \
                    f"torn generation {revision}"
            torn_windows += current != new

            daemon = DaemonProcess(str(tree.path), state, ARGS, port=port).start()
            # At once: the generation on disk is served while the daemon reconciles.
            assert daemon.served_revision() in commits
            daemon.wait_served(tree.head())
            daemon.wait_persisted(tree.head())  # served first, then written
            assert not any(p.name.endswith(".tmp") for p in (state / "generations").iterdir())
    finally:
        assert daemon.stop() == 0
    assert torn_windows > 0, "no kill landed inside a reconcile: the test did not exercise the window"
