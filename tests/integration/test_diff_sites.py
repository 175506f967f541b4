"""`diff` on a repository with sites (issue 26 point 3): the blast radius grouped by site, in
markdown and JSON, through the real CLI on real two-commit git repositories."""

from __future__ import annotations

from pathlib import Path

from tests import repo_builder
from tests.diff_support import two_commits
from tests.integration.test_diff import BASE_ARGS, diff, diff_json, profile_with_args

SITES = repo_builder.two_sites()
SITE_YAML = str(SITES["netboot.yaml"])


def test_a_shared_profile_change_is_grouped_by_the_sites_it_reaches(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"profiles/install.yaml": profile_with_args(*BASE_ARGS, "quiet")}, SITES)
    code, md = diff(repo)
    assert code == 1
    assert "### Blast radius by site" in md
    assert "| `lyon` | 1 | 0 | 0 | 1 | none | no |" in md
    assert "| `paris` | 2 | 0 | 0 | 2 | none | no |" in md
    lyon, paris = md.split("## Site `lyon`")[1].split("## Site `paris`")
    assert "| `node-3` | changed |" in lyon and "node-1" not in lyon.split("<sub>")[0]
    assert "| `node-1` | changed |" in paris and "| `node-3` |" not in paris

    code, doc = diff_json(repo)
    assert code == 1 and doc["changed"] is True
    assert sorted(doc["sites"]) == ["lyon", "paris"]
    assert doc["sites"]["lyon"]["summary"]["changed"] == ["node-3"]
    assert doc["sites"]["paris"]["summary"]["changed"] == ["node-1", "node-2"]
    assert doc["sites"]["paris"]["blast_radius"][0]["reaches"] == ["node-1", "node-2"]


def test_one_sites_dhcp_change_leaves_the_other_site_unchanged(tmp_path: Path) -> None:
    head = SITE_YAML.replace("- subnet: 10.20.0.0/24", "- subnet: 10.20.0.0/24\n          routers: [10.20.0.254]")
    repo = two_commits(tmp_path / "r", {"netboot.yaml": head}, SITES)
    code, doc = diff_json(repo)
    assert code == 1
    assert doc["sites"]["paris"]["changed"] is False and doc["sites"]["paris"]["dhcp"] == []
    assert doc["sites"]["lyon"]["changed"] is True
    assert "10.20.0.254" in doc["sites"]["lyon"]["dhcp"][0]["diff"]
    code, md = diff(repo)
    assert "| `paris` | 0 | 0 | 0 | 0 | none | no |" in md
    assert "## Site `paris`" not in md and "## Site `lyon`" in md


def test_no_change_at_any_site_exits_0(tmp_path: Path) -> None:
    repo = two_commits(tmp_path / "r", {"README.md": "notes\n"}, SITES)
    code, md = diff(repo)
    assert code == 0, md
    assert "**No change** at any site." in md


def test_moving_to_sites_compares_each_site_with_what_served_its_nodes(tmp_path: Path) -> None:
    # BASE has no sites; HEAD puts node-1 and node-2 at paris (same server and subnet as before)
    # and node-3 at lyon (a new server): only lyon's node changes.
    repo = two_commits(tmp_path / "r", SITES)
    code, doc = diff_json(repo)
    assert code == 1
    assert doc["sites"]["paris"]["nodes"] == []
    assert doc["sites"]["lyon"]["summary"]["changed"] == ["node-3"]
