"""One results store for several sites (issue 26 point 3), on both engines: each site records its
own nodes for a commit every site applies, and one site's view (`results --site`, `/ui/?site=`)
holds that site's nodes, events and strangers only; the view of all holds every site."""

from __future__ import annotations

from reconciler.adapters.store import ResultsReader, ResultsStore
from reconciler.core import outcomes
from reconciler.core.model import BootEvent
from reconciler.core.outcomes import Target

PARIS = [Target("node-1", "52:54:00:aa:bb:01", "install", True, 0, "p1"),
         Target("node-2", "52:54:00:aa:bb:02", "install", True, 0, "p2")]
LYON = [Target("node-3", "52:54:00:aa:bb:03", "install", True, 0, "p3")]
STRANGER = "52:54:00:ff:ff:03"


def test_every_site_records_its_nodes_of_one_commit_and_each_view_holds_its_own(store_location: str) -> None:
    paris = ResultsStore(store_location, instance="paris-a", site="paris")
    lyon = ResultsStore(store_location, instance="lyon-a", site="lyon")
    try:
        paris.record_revision("r1", 10.0, PARIS)
        lyon.record_revision("r1", 11.0, LYON)  # the same commit, applied by the other site after
        lyon.record(BootEvent(12.0, "ipxe-script", "r1", "52:54:00:aa:bb:03", "node-3", "10.20.0.31"))
        lyon.record(BootEvent(13.0, "ipxe-script", "r1", STRANGER, None, "10.20.0.99"))
        paris.record(BootEvent(14.0, "ipxe-script", "r1", "52:54:00:aa:bb:01", "node-1", "10.10.10.201"))
        paris.record_serving("r1", 15.0)
        lyon.record_serving("r1", 15.0)
        paris.flush(5.0)
        lyon.flush(5.0)
    finally:
        paris.close()
        lyon.close()

    reader = ResultsReader(store_location)
    try:
        assert reader.sites() == ["lyon", "paris"]
        assert {i.name: i.site for i in reader.instances()} == {"lyon-a": "lyon", "paris-a": "paris"}
        # all sites: both sites' nodes of r1 (the first application no longer hides the second's)
        assert [t.node for t in reader.targets(["r1"])["r1"]] == ["node-1", "node-2", "node-3"]
        lyon_view, paris_view = reader.for_site("lyon"), reader.for_site("paris")
        assert [t.node for t in lyon_view.targets(["r1"])["r1"]] == ["node-3"]
        assert [t.node for t in paris_view.targets(["r1"])["r1"]] == ["node-1", "node-2"]
        assert [e.mac for e in lyon_view.events_of(["r1"])] == ["52:54:00:aa:bb:03", STRANGER]
        assert [e.mac for e in paris_view.events_of(["r1"])] == ["52:54:00:aa:bb:01"]
        assert [e.mac for e in lyon_view.stranger_events(["r1"])] == [STRANGER]
        assert paris_view.stranger_events(["r1"]) == []
        assert [m[0] for m in lyon_view.unknown_machines(0.0, "r1")] == [STRANGER]
        assert paris_view.unknown_machines(0.0, "r1") == []
        # a report per site: its nodes only, and counts that are its own
        report = outcomes.commits_report(lyon_view, now=20.0)
        assert [n["node"] for n in report["commits"][0]["nodes"]] == ["node-3", None]
        assert report["commits"][0]["targeted"] == 1
        report = outcomes.commits_report(reader, now=20.0)
        assert report["commits"][0]["targeted"] == 3
    finally:
        reader.close()


def test_a_site_keeps_its_runs_open_when_another_site_applies_a_commit(store_location: str) -> None:
    paris = ResultsStore(store_location, site="paris")
    lyon = ResultsStore(store_location, site="lyon")
    try:
        paris.record_revision("r1", 10.0, PARIS)
        lyon.record_revision("r1", 10.5, LYON)
        lyon.record_revision("r2", 20.0, LYON)  # lyon applies r2 first: paris's nodes are not closed
        paris.record_revision("r2", 21.0, PARIS)
        assert [t.node for t in paris.targets(["r2"])["r2"]] == ["node-1", "node-2", "node-3"]
        assert [s.first_revision for s in paris.for_site("paris").runs(["r2"])] == ["r1", "r1"]
        assert [r for r, _ in paris.for_site("lyon").revisions()] == ["r2", "r1"]
    finally:
        paris.close()
        lyon.close()
