"""What `record_revision` stores (node_plans' runs) when several stores write one database, on both
engines: two instances of one site and one of another site, in any order, each keeping the open
runs it last wrote in memory (`ResultsStore._write_revision`). The runs must be those of the rule,
applied to every write in the order they happened, whoever wrote them (a model here): a store
that trusted what it last wrote after another instance of its site had written would leave a
node's run open at the plan it knew."""

from __future__ import annotations

from random import Random
from typing import Any

import pytest

from reconciler.adapters.store import ResultsStore
from reconciler.core.outcomes import Target

NODES = ("n1", "n2", "n3")


def _targets(declared: dict[str, tuple[str, str]]) -> list[Target]:
    return [Target(node, f"52:54:00:00:00:0{node[1]}", profile, False, 0, plan)
            for node, (profile, plan) in sorted(declared.items())]


def _model(writes: list[tuple[str, str, list[Target]]]) -> set[tuple[Any, ...]]:
    """The runs the rule gives: (site, node, profile, plan, first revision, last revision or None)."""
    order: list[str] = []  # revisions by first application (their seq)
    applied: set[tuple[str, str]] = set()
    runs: list[list[Any]] = []  # [site, target, first, last]: open while last is None
    for site, revision, targets in writes:
        if (revision, site) in applied:
            continue
        applied.add((revision, site))
        if revision not in order:
            order.append(revision)
        seq = order.index(revision)
        earlier = [order.index(r) for r, s in applied if s == site and order.index(r) < seq]
        previous = order[max(earlier)] if earlier else None
        # Closing at no previous revision (a site's first is another site's earlier commit) leaves it open.
        open_runs = {run[1].node: run for run in runs if run[0] == site and run[3] is None}
        for t in targets:
            run = open_runs.pop(t.node, None)
            if run is not None and run[1] == t and t.plan:
                continue
            if run is not None:
                run[3] = previous
            runs.append([site, t, revision, None])
        for run in open_runs.values():
            run[3] = previous
    return {(s, t.node, t.profile, t.plan, first, last) for s, t, first, last in runs}


def _stored(store: ResultsStore, sites: tuple[str, ...]) -> set[tuple[Any, ...]]:
    rows = store._rows(
        "SELECT n.site, n.node, n.profile, n.plan, f.revision, l.revision FROM node_plans n "
        "JOIN revisions f ON f.rowid = n.first_seq LEFT JOIN revisions l ON l.rowid = n.last_seq "
        f"WHERE n.site IN ({','.join('?' * len(sites))})", sites)
    return {tuple(r) for r in rows}


@pytest.mark.parametrize("seed", range(12))
def test_runs_follow_every_write_of_every_instance(store_location: str, seed: int) -> None:
    random = Random(seed)
    sites = ("a", "a", "b")
    stores = [ResultsStore(store_location, site=site) for site in sites]
    try:
        writes: list[tuple[str, str, list[Target]]] = []
        for applied in range(120):
            # Revisions from a small pool, so that a store often records one another store has.
            which, name = random.randrange(3), f"r{applied // 10}-{random.randrange(4)}"
            declared = {node: (random.choice("pq"), random.choice(("", "a", "b")))
                        for node in random.sample(NODES, random.randrange(len(NODES) + 1))}
            if writes and random.random() < 0.5:  # mostly one node's change, as a commit is
                declared = {**dict(_declared(writes[-1][2])), **dict(list(declared.items())[:1])}
            targets = _targets(declared)
            stores[which].record_revision(name, float(applied), targets)
            writes.append((sites[which], name, targets))
            if applied % 10 == 9:
                assert _stored(stores[0], sites[1:]) == _model(writes), f"after write {applied}"
    finally:
        for store in stores:
            store.close()


def _declared(targets: list[Target]) -> list[tuple[str, tuple[str, str]]]:
    return [(t.node, (t.profile, t.plan)) for t in targets]


def test_an_instance_reads_the_runs_again_after_another_instance_of_its_site_wrote(store_location: str) -> None:
    first, second = ResultsStore(store_location, site="s"), ResultsStore(store_location, site="s")
    try:
        first.record_revision("r1", 1.0, _targets({"n1": ("p", "a"), "n2": ("p", "a")}))
        second.record_revision("r2", 2.0, _targets({"n1": ("p", "b"), "n2": ("p", "a")}))
        # `first` never applied r2: to it, r3 declares n1 as r1 did; the store holds r2's plan for it.
        first.record_revision("r3", 3.0, _targets({"n1": ("p", "a"), "n2": ("p", "a")}))
        assert _stored(first, ("s",)) == {
            ("s", "n1", "p", "a", "r1", "r1"), ("s", "n1", "p", "b", "r2", "r2"), ("s", "n1", "p", "a", "r3", None),
            ("s", "n2", "p", "a", "r1", None)}
        assert [t.plan for t in first.targets(["r3"])["r3"]] == ["a", "a"]
    finally:
        first.close()
        second.close()


def test_an_instance_of_the_version_before_is_seen_writing_the_runs(store_location: str) -> None:
    """A rolling upgrade: an instance still running the version before (12's plan_stamps unknown to
    it: it writes node_plans and revision_sites only) shares the database with one running this
    version. Its write must make the other read the runs again (found by review: a stamp only the
    new version set left n1 open at the old instance's plan and r3 unrecorded)."""
    new, old = ResultsStore(store_location, site="s"), ResultsStore(store_location, site="s")
    try:
        execute = old._db.execute

        def as_the_version_before(sql: str, params: Any = ()) -> Any:
            return None if "plan_stamps" in sql else execute(sql, params)

        old._db.execute = as_the_version_before  # type: ignore[method-assign]
        old._runs = None
        new.record_revision("r1", 1.0, _targets({"n1": ("p", "a")}))
        old.record_revision("r2", 2.0, _targets({"n1": ("p", "b")}))
        new.record_revision("r3", 3.0, _targets({"n1": ("p", "a")}))
        assert _stored(new, ("s",)) == {("s", "n1", "p", "a", "r1", "r1"), ("s", "n1", "p", "b", "r2", "r2"),
                                        ("s", "n1", "p", "a", "r3", None)}
    finally:
        new.close()
        old.close()
