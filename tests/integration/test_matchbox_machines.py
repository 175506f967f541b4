"""A matchbox group that pins one machine's MAC installs like a node file, end to end.

The repository of test_results.py (real daemon wiring, git, SQLite, HTTP clients on the
machines' own loopback addresses), with node-3 written the matchbox way: `groups/node-3.json`,
`{"selector": {"mac": ...}}`, no node file. It gets its NoCloud seed with its own report
token, its curtin reports make its outcome, and install-once then boots its disk, as node-1's
does in test_results.py. On the old code the group's profile needed a node, and its script said
so and exited.
"""

from __future__ import annotations

import json

from reconciler.core import template
from tests.integration import test_results
from tests.integration.test_results import (
    IPS,
    MACS,
    SECRET,
    Site,
    autoinstall_events,
    node_entry,
    results_json,
    simulate_netboot,
)

site = test_results.site  # the fixture: test_results.py's daemon wiring, closed after the test


def test_a_group_pinning_a_mac_installs_reports_and_installs_once_like_a_node(site: Site) -> None:
    group = {"id": "node-3", "name": "node 3, matchbox style", "profile": "install",
             "selector": {"MAC": MACS["node-3"].replace(":", "-").upper()}, "metadata": {"rack": "r9"}}
    (site.repo / "nodes" / "node-3.yaml").unlink()
    (site.repo / "groups").mkdir()
    (site.repo / "groups" / "node-3.json").write_text(json.dumps(group, indent=2) + "\n")
    sha = site.apply({}, "node-3 as a matchbox group")

    user_data = site.get(f"/r/{sha}/cloud-init/{MACS['node-3']}/user-data", IPS["node-3"]).body.decode()
    token = template.report_token(SECRET, "node-3", sha)
    assert f'endpoint: "http://127.0.0.1/report/autoinstall/{MACS["node-3"]}?token={token}"' in user_data
    assert "hostname: node-3" in user_data

    simulate_netboot(site.port, "node-3", sha)
    autoinstall_events(site.port, "node-3")
    site.flush()
    assert node_entry(results_json(site.store), sha, "node-3")["outcome"] == "succeeded"

    script = site.get(f"/ipxe?mac={MACS['node-3']}", IPS["node-3"]).body.decode()
    assert "installed (install_once)" in script and "kernel " not in script
    env = site.get(f"/metadata?mac={MACS['node-3']}", IPS["node-3"]).body.decode().splitlines()
    assert "RACK=r9" in env and f"MAC={MACS['node-3']}" in env
