"""Many sites from one repository (issue 26 point 3): netboot.yaml `sites:` merged over the shared
settings, nodes at one site each, what each site serves, and the findings across sites."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler.core.errors import InvalidRevision
from reconciler.core.model import Issue
from reconciler.core.render import render_generation
from reconciler.core.validate import Validation, validate
from tests import repo_builder

SITE_YAML = str(repo_builder.TWO_SITES["netboot.yaml"])


def check(edits: dict[str, str | None] | None = None) -> Validation:
    return validate(repo_builder.snapshot(repo_builder.two_sites(edits)))


def line_of(text: str, needle: str, after: str = "") -> int:
    """1-based line of the first `needle` after the first `after`."""
    start = text.index(after) if after else 0
    return text[:text.index(needle, start)].count("\n") + 1


def the_one(result: Validation, code: str) -> Issue:
    hits = [i for i in result.issues if i.code == code]
    assert len(hits) == 1, f"expected one {code} finding in {result.issues}"
    return hits[0]


def test_each_site_serves_its_own_nodes_with_its_own_settings_merged_over_the_shared_ones() -> None:
    result = check()
    assert result.issues == ()
    assert sorted(result.sites) == ["lyon", "paris"]
    paris, lyon = result.sites["paris"], result.sites["lyon"]
    assert [n.name for n in paris.nodes] == ["node-1", "node-2"]
    assert [n.name for n in lyon.nodes] == ["node-3"]
    assert (paris.site.name, paris.site.server_url, paris.site.dhcp_mode, paris.site.interface) == (
        "paris", "http://10.10.10.12", "full", "eth-paris")
    assert (lyon.site.name, lyon.site.server_url, lyon.site.dhcp_mode, lyon.site.interface) == (
        "lyon", "http://10.20.0.2:8080", "proxy", None)
    # shared: unknown_clients from netboot.yaml, profiles and groups at both
    assert paris.site.unknown_clients == lyon.site.unknown_clients == "ignore"
    assert paris.profiles.keys() == lyon.profiles.keys() == {"install", "local"}
    assert [g.id for g in paris.groups] == [g.id for g in lyon.groups] == ["default"]
    # a repository with sites has no single state: a daemon picks one
    assert result.state is None
    assert result.for_site("lyon") is lyon


def test_a_repository_without_sites_is_one_implicit_site_as_before() -> None:
    result = validate(repo_builder.snapshot())
    assert result.state is not None
    assert result.sites == {"": result.state}
    assert result.state.site.name == ""
    assert result.for_site(None) is result.state


def test_each_site_renders_only_its_nodes_and_its_dhcp() -> None:
    result = check()
    paris = render_generation(result.sites["paris"])
    lyon = render_generation(result.sites["lyon"])
    assert "10.10.10.0" in paris["dhcpd.conf"].decode() and "10.20.0.0" not in paris["dhcpd.conf"].decode()
    assert "52:54:00:aa:bb:03" not in paris["dhcpd.conf"].decode()
    assert "groups/node.node-3.json" in lyon and "groups/node.node-1.json" not in lyon
    assert "groups/node.node-3.json" not in paris
    assert b"http://10.20.0.2:8080/" in lyon["ipxe/node-3.ipxe"]
    assert b"10.20.0.2" not in paris["boot.ipxe"] and b"10.10.10.12" in paris["boot.ipxe"]


@pytest.mark.parametrize(("site", "code", "words"), [
    (None, "site-required", "declares sites lyon, paris: a daemon serves one of them (--site NAME)"),
    ("pariss", "site-not-declared", "site 'pariss' is not declared in netboot.yaml (sites: lyon, paris) "
                               "(did you mean 'paris'?)"),
])
def test_serving_a_repository_with_sites_needs_one_of_its_sites(site: str | None, code: str, words: str) -> None:
    with pytest.raises(InvalidRevision) as caught:
        check().for_site(site)
    assert [(f.code, f.file) for f in caught.value.findings] == [(code, "netboot.yaml")]
    assert words in caught.value.findings[0].message


def test_a_site_asked_of_a_repository_without_sites_is_unknown() -> None:
    with pytest.raises(InvalidRevision) as caught:
        validate(repo_builder.snapshot()).for_site("paris")
    assert [f.code for f in caught.value.findings] == ["site-not-declared"]
    assert "netboot.yaml has no `sites:`" in caught.value.findings[0].message


NODE_3 = "mac: 52:54:00:aa:bb:03\nip: 10.20.0.31\nprofile: install\n"


@pytest.mark.parametrize(("edits", "code", "file", "needle", "after", "words"), [
    # membership
    ({"nodes/node-3.yaml": NODE_3}, "node-no-site", "nodes/node-3.yaml", "mac", "",
     "node 'node-3' is at no site: netboot.yaml declares sites lyon, paris"),
    ({"nodes/node-3.yaml": NODE_3 + "site: lyn\n"}, "unknown-site", "nodes/node-3.yaml", "site:", "",
     "did you mean 'lyon'?"),
    ({"groups/rack.yaml": "profile: local\nselector: {rack: r1}\nsite: nantes\n"}, "unknown-site",
     "groups/rack.yaml", "site:", "", "group 'rack': site 'nantes' is not declared"),
    # a site's own settings, checked where they are written
    ({"netboot.yaml": SITE_YAML.replace("      http_port: 8080", "      http_port: 99999")}, "schema",
     "netboot.yaml", "http_port: 99999", "", "sites.lyon.server.http_port"),
    ({"netboot.yaml": SITE_YAML.replace("  lyon:", "  Lyon:")}, "schema", "netboot.yaml", "sites:", "",
     "lowercase DNS label"),
    ({"netboot.yaml": SITE_YAML.replace("      address: 10.20.0.2\n", "")}, "site-no-server", "netboot.yaml",
     "server:", "lyon:", "site 'lyon': server.address is not set"),
    ({"netboot.yaml": SITE_YAML.replace("- subnet: 10.20.0.0/24", "- subnet: 10.20.0.0/24\n"
                                        "          pool: [10.20.0.1, 10.20.0.50]")},
     "pool-holds-host", "netboot.yaml", "pool: [10.20.0.1", "", "holds the server.address 10.20.0.2"),
    # across sites
    ({"netboot.yaml": SITE_YAML.replace("- subnet: 10.20.0.0/24", "- subnet: 10.10.0.0/16")},
     "site-subnet-overlap", "netboot.yaml", "- subnet: 10.10.0.0/16", "",
     "subnet 10.10.0.0/16 of site 'lyon' overlaps 10.10.10.0/24 of site 'paris'"),
    ({"nodes/node-3.yaml": NODE_3.replace("10.20.0.31", "10.10.10.203") + "site: lyon\n"}, "ip-outside-subnet",
     "nodes/node-3.yaml", "ip:", "", "no declared subnet of site 'lyon' (declared: 10.20.0.0/24); "
                                     "it is in a subnet of site 'paris'"),
    ({"nodes/node-3.yaml": NODE_3.replace("10.20.0.31", "10.10.10.201") + "site: paris\n"}, "duplicate-ip",
     "nodes/node-3.yaml", "ip:", "", "also used by node 'node-1'"),
    ({"groups/lyon.yaml": "profile: local\n"}, "duplicate-default-group", "groups/lyon.yaml", "profile", "",
     "like 'default': only one default group"),
])
def test_site_findings_name_file_line_and_field(
    edits: dict[str, str | None], code: str, file: str, needle: str, after: str, words: str
) -> None:
    finding = the_one(check(edits), code)
    text = edits.get(file) or repo_builder.files(repo_builder.two_sites(edits))[file].decode()
    assert (finding.file, finding.line) == (file, line_of(text, needle, after)), finding
    assert words in finding.message
    assert check(edits).sites == {}  # invalid: nothing to serve


def test_a_site_keeps_its_own_default_group() -> None:
    result = check({"groups/lyon.yaml": "profile: local\nsite: lyon\n",
                    "groups/default.yaml": "profile: local\nsite: paris\n"})
    assert result.issues == ()
    assert [g.id for g in result.sites["lyon"].groups] == ["lyon"]
    assert [g.id for g in result.sites["paris"].groups] == ["default"]


def test_a_node_names_no_site_in_a_repository_without_sites() -> None:
    edits: dict[str, str | None] = {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nprofile: install\nsite: paris\n"}
    finding = the_one(validate(repo_builder.snapshot(edits)), "unknown-site")
    assert (finding.file, finding.line) == ("nodes/node-1.yaml", 3)


def test_a_group_describing_one_machine_puts_it_at_its_site() -> None:
    result = check({"groups/m1.yaml": "profile: local\nselector: {mac: '52:54:00:aa:bb:09'}\nsite: lyon\n"})
    assert result.issues == ()
    assert [n.name for n in result.sites["lyon"].nodes] == ["m1", "node-3"]
    assert result.sites["lyon"].node_by_mac("52:54:00:aa:bb:09") is not None
    assert result.sites["paris"].node_by_mac("52:54:00:aa:bb:09") is None


def test_a_site_inherits_the_shared_subnets_it_does_not_set() -> None:
    shared = SITE_YAML.replace("dhcp:\n  mode: full\n", "dhcp:\n  mode: full\n  subnets:\n"
                               "    - subnet: 10.30.0.0/24\n", 1)
    text = shared.replace("    dhcp:\n      mode: proxy\n      subnets:\n        - subnet: 10.20.0.0/24\n",
                          "    dhcp:\n      mode: proxy\n")
    result = check({"netboot.yaml": text, "nodes/node-3.yaml": NODE_3.replace("10.20.0.31", "10.30.0.31")
                    + "site: lyon\n"})
    assert result.issues == ()
    lyon = result.sites["lyon"].site
    assert [str(s.network) for s in lyon.subnets] == ["10.30.0.0/24"]
    assert lyon.server_address == IPv4Address("10.20.0.2")


def test_the_example_of_docs_sites_md_is_a_valid_two_site_repository() -> None:
    """docs/SITES.md's netboot.yaml and node, as written there, with the repo_builder's profiles."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SITES.md").read_text()
    site_yaml, node_yaml = re.findall(r"```yaml\n(.*?)```", doc, re.S)[:2]
    node_yaml = node_yaml.replace("ubuntu-2204-install", "install")
    lyon = "mac: 52:54:00:aa:bb:03\nip: 10.20.0.31\nprofile: install\nsite: lyon\n"
    result = validate(repo_builder.snapshot({"netboot.yaml": site_yaml, "nodes/node-1.yaml": node_yaml,
                                             "nodes/node-2.yaml": None, "nodes/node-3.yaml": lyon}))
    assert [i for i in result.issues if i.is_error] == []
    assert {n: [x.name for x in s.nodes] for n, s in result.sites.items()} == {"lyon": ["node-3"], "paris": ["node-1"]}
    assert result.sites["lyon"].site.dhcp_mode == "proxy" and result.sites["lyon"].site.http_port == 8080
    assert result.sites["paris"].site.boot_files.uefi_x64 == "ipxe.efi"
