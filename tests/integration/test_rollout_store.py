"""Rollouts in the results store, on both engines (SQLite and PostgreSQL): kept at each change,
read back newest first, so a restarted daemon (or `results`) sees the same rollout."""

from __future__ import annotations

from pathlib import Path

from reconciler.adapters.store import ResultsReader, ResultsStore
from reconciler.core.model import RolloutPolicy
from reconciler.core.outcomes import Outcome
from reconciler.core.rollout import Applied, Observed, Want, step


def test_a_rollout_is_kept_at_each_change_and_read_back(store_location: str) -> None:
    first, actions = step(None, Applied("a" * 40, RolloutPolicy(1, "pause", True),
                                        (Want("n1", "m1", "reinstall 0 -> 1"), Want("n2", "m2", "reinstall 0 -> 1")),
                                        {"n1": "", "n2": ""}, 10.0))
    assert first is not None and [a.node for a in actions] == ["n1"]
    failed, _ = step(first, Observed("n1", Outcome.FAILED, "report failure", 20.0))
    newer, _ = step(failed, Applied("b" * 40, RolloutPolicy(1, "pause", True), (Want("n1", "m1", "reinstall 1 -> 2"),),
                                    {"n1": "", "n2": ""}, 30.0))
    assert failed is not None and newer is not None
    store = ResultsStore(store_location)
    try:
        store.save_rollout(first)
        store.save_rollout(failed)  # the same rollout, a later state: one row
        assert store.rollouts() == [failed]
        store.save_rollout(newer)
        assert store.rollouts() == [newer, failed] and store.rollouts(1) == [newer]
    finally:
        store.close()
    if "://" not in store_location:
        reader = ResultsReader(store_location)
        try:
            assert reader.rollouts()[1].paused == "n1 failed: its boot failed: report failure"
        finally:
            reader.close()
    again = ResultsStore(store_location)
    try:
        assert again.rollouts() == [newer, failed]
    finally:
        again.close()


def test_two_sites_keep_their_own_rollout_of_one_commit(store_location: str) -> None:
    revision = "c" * 40
    rollouts = {}
    for site, node in (("paris", "p1"), ("lyon", "l1")):
        want = (Want(node, "m", "reinstall 0 -> 1"),)
        value, _ = step(None, Applied(revision, RolloutPolicy(1, "pause", False), want, {node: ""}, 10.0))
        assert value is not None
        rollouts[site] = value
        store = ResultsStore(store_location, site=site)
        try:
            store.save_rollout(value)
        finally:
            store.close()
    store = ResultsStore(store_location, site="paris")
    try:
        assert store.rollouts(site="paris") == [rollouts["paris"]]
        assert store.rollouts(site="lyon") == [rollouts["lyon"]]
        assert store.for_site("lyon").rollouts() == [rollouts["lyon"]]
        assert len(store.rollouts()) == 2  # every site's
    finally:
        store.close()


def test_a_rollout_stored_before_sites_is_the_rollout_of_site_none(tmp_path: Path) -> None:
    import json
    import sqlite3

    path = tmp_path / "results.sqlite3"
    value, _ = step(None, Applied("d" * 40, RolloutPolicy(), (Want("n1", "m1", "reinstall 0 -> 1"),), {"n1": ""}, 5.0))
    assert value is not None
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE rollouts; CREATE TABLE rollouts (revision TEXT PRIMARY KEY, created REAL NOT NULL, "
                       "updated REAL NOT NULL, doc TEXT NOT NULL); PRAGMA user_version = 10;")
    conn.execute("INSERT INTO rollouts VALUES (?,?,?,?)", (value.revision, 5.0, 5.0, json.dumps(value.as_dict())))
    conn.commit()
    conn.close()
    store = ResultsStore(path)
    try:
        assert store.rollouts(site="") == [value]
    finally:
        store.close()


def test_an_instance_without_credentials_on_a_shared_store_follows_and_never_acts(store_location: str,
                                                                                  tmp_path: Path) -> None:
    """Two instances of one site on one store: the one with --bmc-credentials runs the rollout, the
    other shows it and decides nothing (a site's machines are not power-cycled twice)."""
    import pytest

    from reconciler.core.model import Node
    from reconciler.core.outcomes import Target
    from reconciler.daemon.rollouts import RolloutElsewhere, RolloutRunner

    nodes = [Node("n1", "52:54:00:00:00:01", "p", "n1", reinstall=1)]
    before, after = [Target("n1", nodes[0].mac, "p", True, 0, "x")], [Target("n1", nodes[0].mac, "p", True, 1, "y")]
    creds = tmp_path / "creds.yaml"
    creds.write_text("{}\n")
    creds.chmod(0o600)
    first, second = ResultsStore(store_location, instance="a"), ResultsStore(store_location, instance="b")
    runs = RolloutRunner(first, nodes=lambda: {}, credentials=creds, boot_timeout=60, clock=lambda: 100.0)
    follows = RolloutRunner(second, nodes=lambda: {}, credentials=None, boot_timeout=60, clock=lambda: 100.0,
                            follow=True)
    try:
        follows.applied("e" * 40, RolloutPolicy(power=True), before, after, nodes)
        assert follows.current is None  # it decides nothing
        runs.applied("e" * 40, RolloutPolicy(power=True), before, after, nodes)
        shown = follows.current
        assert shown is not None and shown == runs.current and shown.nodes[0].state.value == "needs-manual-reboot"
        view = follows.view()
        assert view is not None and view["run_here"] is False
        with pytest.raises(RolloutElsewhere):
            follows.pause("")
        assert runs.pause("window") is not None and follows.current is not None
        assert follows.current.paused == "window"
    finally:
        runs.stop()
        follows.stop()
        first.close()
        second.close()
