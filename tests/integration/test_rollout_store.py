"""Rollouts in the results store, on both engines (SQLite and PostgreSQL): kept at each change,
read back newest first, so a restarted daemon (or `results`) sees the same rollout."""

from __future__ import annotations

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
