"""What follows serving a commit and may wait (the supervisor's kick, the heap:
`Daemon._after_served`) runs on its own thread under `run` (daemon.afterserve): a commit made
meanwhile is served without waiting for it, the follow-ups run in activation order, and a stop
runs what is queued before the results store closes. Collection of unused assets stays on the
loop's thread. Real git, real SQLite store, the loop in a thread."""

from __future__ import annotations

import threading
from pathlib import Path

from reconciler.core.outcomes import Target
from reconciler.core.render import render_generation
from reconciler.daemon import Daemon
from reconciler.generation import Generation
from reconciler.settings import Settings
from tests.integration.daemon_support import WorkTree, wait_for

NODE = "mac: 52:54:00:dd:ee:01\nprofile: local-disk\nlabels: {{note: {note}}}\n"


def test_a_commit_is_served_while_the_last_ones_follow_up_still_runs(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "repo")
    first = tree.commit("a node", {"nodes/n.yaml": NODE.format(note="a")})
    settings = Settings(repo=str(tree.path), state_dir=tmp_path / "state", watch=False, interval=3600.0)
    daemon = Daemon(settings, renderer=render_generation)
    daemon.open()
    gate, followed = threading.Event(), []
    after_served = daemon._after_served

    def held(generation: Generation, previous: tuple[Target, ...] | None, current: tuple[Target, ...] | None,
             timings: dict[str, float]) -> None:
        if generation.revision == first:
            gate.wait(60)  # the first commit's follow-up takes as long as the test wants
        after_served(generation, previous, current, timings)
        followed.append(generation.revision)

    daemon._after_served = held  # type: ignore[method-assign]
    loop = threading.Thread(target=daemon.run, daemon=True)
    loop.start()
    try:
        wait_for(lambda: (c := daemon.holder.current()) is not None and c.revision == first, "the first commit served")
        second = tree.commit("a label", {"nodes/n.yaml": NODE.format(note="b")})
        daemon.trigger("test")
        wait_for(lambda: (c := daemon.holder.current()) is not None and c.revision == second,
                 "the second commit served while the first one's follow-up is held")
        assert followed == []
        gate.set()
        wait_for(lambda: followed == [first, second], "both follow-ups, in order")
        third = tree.commit("another label", {"nodes/n.yaml": NODE.format(note="c")})
        daemon.trigger("test")
        wait_for(lambda: (c := daemon.holder.current()) is not None and c.revision == third, "the third served")
    finally:
        gate.set()
        daemon.stop()
        loop.join(60)
        daemon.shutdown()
    assert followed[-1] == third  # run by the stop at the latest, before the store closed
    assert daemon._targets is not None and {t.node for t in daemon._targets} >= {"n"}


def test_unused_assets_are_collected_on_the_loops_thread_never_beside_an_assets_step(tmp_path: Path) -> None:
    # On the after-serving thread, collection ran beside the next commit's assets step, whose newly
    # linked content no kept or served generation names until activation: it was deleted (a new
    # kernel lost, /r/<sha>/assets/ answering the old one). The rollout's decision stays there too.
    tree = WorkTree(tmp_path / "repo")
    # example-repo's assets.yaml names ISOs on the internet: none here (nothing to fetch)
    tree.commit("a node", {"nodes/n.yaml": NODE.format(note="a"), "assets.yaml": None})
    settings = Settings(repo=str(tree.path), state_dir=tmp_path / "state", watch=False, interval=3600.0,
                        assets_dir=tmp_path / "assets")
    daemon = Daemon(settings, renderer=render_generation)
    daemon.open()
    store = daemon.reconciler.asset_store
    assert store is not None
    threads: list[str] = []
    collect = store.collect

    def recorded(*args: object, **kwargs: object) -> int:
        threads.append(threading.current_thread().name)
        return collect(*args, **kwargs)  # type: ignore[arg-type]

    store.collect = recorded  # type: ignore[method-assign]
    loop = threading.Thread(target=daemon.run, name="the-loop", daemon=True)
    loop.start()
    try:
        for note in "bc":
            wait_for(lambda: bool(threads), "assets collected after an activation")
            threads.clear()
            tree.commit("a label", {"nodes/n.yaml": NODE.format(note=note)})
            daemon.trigger("test")
        wait_for(lambda: bool(threads), "assets collected after the last activation")
    finally:
        daemon.stop()
        loop.join(60)
        daemon.shutdown()
    assert set(threads) == {"the-loop"}, threads
