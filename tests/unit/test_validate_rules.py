"""One deliberately broken repository per validation rule: the finding's code, file and line."""

from __future__ import annotations

import pytest

from reconciler.core.model import Issue, Severity
from reconciler.core.render import render_generation
from reconciler.core.validate import validate
from tests import repo_builder


def findings(edits: dict[str, str | None]) -> list[Issue]:
    return list(validate(repo_builder.snapshot(edits)).issues)


def the_one(edits: dict[str, str | None], code: str) -> Issue:
    hits = [i for i in findings(edits) if i.code == code]
    assert hits, f"no {code} finding in {findings(edits)}"
    return hits[0]


def test_base_repo_is_valid() -> None:
    result = validate(repo_builder.snapshot())
    assert result.issues == ()
    assert result.state is not None
    assert [n.name for n in result.state.nodes] == ["node-1", "node-2"]


@pytest.mark.parametrize(
    ("edits", "code", "file", "line"),
    [
        # schema: the line of the offending field
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nprofile: install\nip: 10.10.10.300\n"},
            "schema",
            "nodes/node-1.yaml",
            3,
        ),
        ({"nodes/node-1.yaml": "mac: nope\nprofile: install\n"}, "schema", "nodes/node-1.yaml", 1),
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nprofile: install\nhostnme: x\n"},
            "schema",
            "nodes/node-1.yaml",
            3,
        ),
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nprofile: install\nhostname: bad_name\n"},
            "schema",
            "nodes/node-1.yaml",
            3,
        ),
        ({"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\n"}, "schema", "nodes/node-1.yaml", 1),
        ({"netboot.yaml": "server:\n  address: 10.10.10.12\n  http_port: 99999\n"}, "schema", "netboot.yaml", 3),
        ({"profiles/local.yaml": "boot:\n  kernel: /k\n  args: [1]\n"}, "schema", "profiles/local.yaml", 3),
        # cross references
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: instal\n"},
            "ref-profile",
            "nodes/node-1.yaml",
            3,
        ),
        ({"groups/default.yaml": "name: x\nprofile: nowhere\n"}, "ref-profile", "groups/default.yaml", 2),
        ({"profiles/local.yaml": "boot: {}\ncloud_init: missing\n"}, "ref-cloud-init", "profiles/local.yaml", 2),
        ({"profiles/local.yaml": "id: other\nboot: {}\n"}, "profile-id-mismatch", "profiles/local.yaml", 1),
        # duplicates after normalisation
        (
            {"nodes/node-2.yaml": "mac: 52-54-00-AA-BB-01\nip: 10.10.10.202\nprofile: install\n"},
            "duplicate-mac",
            "nodes/node-2.yaml",
            1,
        ),
        (
            {"nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nip: 10.10.10.201\nprofile: install\n"},
            "duplicate-ip",
            "nodes/node-2.yaml",
            2,
        ),
        (
            {"nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nip: 10.10.10.202\nhostname: NODE-1\nprofile: install\n"},
            "duplicate-hostname",
            "nodes/node-2.yaml",
            3,
        ),
        ({"nodes/node-1.yml": "mac: 52:54:00:aa:bb:09\nprofile: install\n"}, "duplicate-node", "nodes/node-1.yml", 1),
        # addresses
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.20.0.5\nprofile: install\n"},
            "ip-outside-subnet",
            "nodes/node-1.yaml",
            2,
        ),
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: install\n"},
            "ip-in-pool",
            "nodes/node-1.yaml",
            2,
        ),
        (
            {
                "netboot.yaml": "server: {address: 10.10.10.12}\ndhcp:\n  subnets:\n    - subnet: 10.10.10.0/24\n"
                "      pool: [10.10.10.10, 10.10.11.20]\n"
            },
            "pool-outside-subnet",
            "netboot.yaml",
            5,
        ),
        (
            {
                "netboot.yaml": "server: {address: 10.10.10.12}\ndhcp:\n  subnets:\n    - subnet: 10.10.10.0/24\n"
                "    - subnet: 10.10.10.128/25\n"
            },
            "subnet-overlap",
            "netboot.yaml",
            5,
        ),
        # groups
        ({"groups/other.yaml": "profile: install\n"}, "duplicate-default-group", "groups/other.yaml", 1),
        (
            {
                "profiles/p2.yaml": "boot: {kernel: /assets/k2}\n",
                "profiles/p3.yaml": "boot: {kernel: /assets/k3}\n",
                "groups/by-rack.yaml": "profile: p2\nselector: {rack: r9}\n",
                "groups/by-role.yaml": "profile: p3\nselector: {role: db}\n",
                "nodes/node-3.yaml": "mac: 52:54:00:aa:bb:03\nip: 10.10.10.203\nprofile: p2\n"
                "labels: {rack: r9, role: db}\n",
            },
            "group-ambiguous",
            "groups/by-rack.yaml",
            2,
        ),
        (
            {"groups/r1.yaml": "profile: local\nselector: {rack: r1}\n"},
            "group-conflicts-node",
            "groups/r1.yaml",
            1,
        ),
        # templates: an unknown variable names node, file and line
        (
            {"cloud-init/autoinstall.yaml": "#cloud-config\nautoinstall:\n  version: 1\n  x: {{ hostnmae }}\n"},
            "template-undefined",
            "cloud-init/autoinstall.yaml",
            4,
        ),
        (
            {"profiles/install.yaml": "boot:\n  kernel: /assets/vmlinuz\n  args: [ip=dhcp, 'x={{ rack }}']\n"},
            "template-undefined",
            "profiles/install.yaml",
            3,
        ),
        # safe YAML
        (
            {"nodes/node-1.yaml": "mac: !!python/object/apply:os.system ['true']\nprofile: install\n"},
            "yaml-unsafe-tag",
            "nodes/node-1.yaml",
            1,
        ),
        ({"nodes/node-1.yaml": "mac: [1, 2\nprofile: install\n"}, "yaml-syntax", "nodes/node-1.yaml", 2),
        (
            {"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nprofile: install\nprofile: local\n"},
            "yaml-duplicate-key",
            "nodes/node-1.yaml",
            3,
        ),
        ({"netboot.yaml": None}, "missing-site", "netboot.yaml", 0),
    ],
)
def test_broken_repo_reports_code_file_and_line(edits: dict[str, str | None], code: str, file: str, line: int) -> None:
    issue = the_one(edits, code)
    assert (issue.file, issue.line) == (file, line), issue
    assert issue.severity is Severity.ERROR
    assert validate(repo_builder.snapshot(edits)).state is None


def test_template_error_names_the_node() -> None:
    issue = the_one(
        {"cloud-init/autoinstall.yaml": "#cloud-config\nautoinstall:\n  version: 1\n  x: {{ hostnmae }}\n"},
        "template-undefined",
    )
    assert "node-1" in issue.message and "hostnmae" in issue.message


def test_one_template_error_is_reported_once_not_per_node() -> None:
    issues = findings({"cloud-init/autoinstall.yaml": "#cloud-config\nx: {{ nope }}\n"})
    assert len([i for i in issues if i.code == "template-undefined"]) == 1


def test_every_finding_is_collected_in_one_pass() -> None:
    issues = findings(
        {
            "nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.50\nprofile: missing\n",
            "nodes/node-2.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.99.0.1\nprofile: install\n",
            "groups/default.yaml": "profile: gone\n",
        }
    )
    codes = {i.code for i in issues}
    assert {"ip-in-pool", "ref-profile", "duplicate-mac", "ip-outside-subnet"} <= codes


def test_suggests_the_profile_meant() -> None:
    issue = the_one({"nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: instal\n"}, "ref-profile")
    assert "did you mean 'install'" in issue.message


def test_mac_any_spelling_is_normalised() -> None:
    for spelling in ("52-54-00-AA-BB-01", "5254.00aa.bb01", "525400AABB01"):
        state = validate(
            repo_builder.snapshot({"nodes/node-1.yaml": f"mac: {spelling}\nip: 10.10.10.201\nprofile: install\n"})
        ).state
        assert state is not None
        assert state.nodes[0].mac == "52:54:00:aa:bb:01"


def test_hostname_defaults_to_the_file_name() -> None:
    state = validate(repo_builder.snapshot()).state
    assert state is not None
    assert state.nodes[0].hostname == "node-1"


def test_matchbox_json_profiles_and_groups_are_valid_input() -> None:
    state = validate(
        repo_builder.snapshot(
            {
                "profiles/mb.json": '{"id": "mb", "name": "matchbox", "boot": {"kernel": "/assets/k", '
                '"initrd": ["/assets/i"], "args": ["console=ttyS0"]}}',
                "groups/mb.json": '{"id": "mb", "name": "m", "profile": "mb", "selector": {"os": "installed"}}',
            }
        )
    ).state
    assert state is not None
    assert state.profiles["mb"].boot.args == ("console=ttyS0",)
    assert [g.id for g in state.groups] == ["default", "mb"]


def test_files_outside_the_format_are_ignored() -> None:
    state = validate(repo_builder.snapshot({"README.md": "# hi", "nodes/notes.txt": "x", "other/x.yaml": ": :"})).state
    assert state is not None


def test_boot_file_names_stay_under_the_tftp_root() -> None:
    site = (
        repo_builder.BASE["netboot.yaml"]
        + "boot_files:\n  uefi_x64: efi/../../etc/passwd\n  bios: ipxe/undionly.kpxe\n"
    )
    issues = findings({"netboot.yaml": site})
    assert [(i.code, i.line) for i in issues] == [("schema", 13)]


SITE = repo_builder.BASE["netboot.yaml"]
INSTALL = repo_builder.BASE["profiles/install.yaml"]


def codes(edits: dict[str, str | None]) -> list[str]:
    return sorted(i.code for i in findings(edits))


def test_whole_numbers_written_with_a_decimal_point_render_as_integers() -> None:
    """JSON Schema counts 600.0 as an integer; written as is, dhcpd, Kea and dnsmasq refused the
    config ("default-lease-time 600.0;") and URLs carried ":8080.0"."""
    site = SITE.replace("http_port: 80", "http_port: 8080.0").replace(
        "dns_servers: [8.8.8.8]", "dns_servers: [8.8.8.8]\n      lease_time: 600.0\n      max_lease_time: 7200.0")
    node = repo_builder.BASE["nodes/node-1.yaml"] + "reinstall: 1.0\n"
    state = validate(repo_builder.snapshot({"netboot.yaml": site, "nodes/node-1.yaml": node})).state
    assert state is not None
    subnet = state.site.subnets[0]
    assert (subnet.lease_time, subnet.max_lease_time, state.site.http_port) == (600, 7200, 8080)
    assert all(type(v) is int for v in (subnet.lease_time, subnet.max_lease_time, state.site.http_port,
                                        state.nodes[0].reinstall))
    files = render_generation(state)
    dhcpd = files["dhcpd.conf"].decode()
    assert "default-lease-time 600;" in dhcpd and "max-lease-time 7200;" in dhcpd
    assert ":8080/" in dhcpd and ".0/" not in dhcpd.replace("10.10.10.0/", "")


@pytest.mark.parametrize(
    ("pool", "what"),
    [
        ("[10.10.10.10, 10.10.10.200]", "server.address 10.10.10.12"),
        ("[10.10.10.20, 10.10.10.254]", "router 10.10.10.254"),
    ],
)
def test_a_pool_holding_a_host_address_is_an_error(pool: str, what: str) -> None:
    hit = the_one({"netboot.yaml": SITE.replace("[10.10.10.20, 10.10.10.200]", pool)}, "pool-holds-host")
    assert (hit.file, hit.line) == ("netboot.yaml", 9)  # the pool's line
    assert what in hit.message


@pytest.mark.parametrize("ip", ["10.10.10.12", "10.10.10.254"])
def test_a_node_on_the_server_or_router_address_is_an_error(ip: str) -> None:
    node = repo_builder.BASE["nodes/node-1.yaml"].replace("10.10.10.201", ip)
    hit = the_one({"nodes/node-1.yaml": node}, "ip-conflict")
    assert (hit.file, hit.line) == ("nodes/node-1.yaml", 2)


def test_a_broken_profile_is_not_also_reported_missing_by_the_nodes_naming_it() -> None:
    """Its own error says what is wrong; 'does not exist, did you mean local' would send users
    to another OS."""
    assert codes({"profiles/install.yaml": INSTALL.replace("  kernel:", "  kernal:")}) == ["schema"]
    assert codes({"profiles/install.yaml": "boot: [\n"}) == ["yaml-syntax"]


def test_a_broken_template_is_not_also_reported_missing() -> None:
    assert codes({"cloud-init/autoinstall.yaml": "#cloud-config\nhostname: {{ hostname }\n"}) == ["template-syntax"]


def test_a_broken_assets_manifest_does_not_flag_every_asset_as_unlisted() -> None:
    manifest = "assets:\n  - path: /assets/vmlinuz\n    sha256: XYZ\n  - path: /assets/initrd\n"
    assert set(codes({"assets.yaml": manifest})) == {"schema"}


def test_a_subnet_with_host_bits_names_the_network_meant_and_nothing_more() -> None:
    site = SITE.replace("subnet: 10.10.10.0/24", "subnet: 10.10.10.1/24")
    assert codes({"netboot.yaml": site}) == ["subnet-invalid"]
    assert "did you mean 10.10.10.0/24?" in the_one({"netboot.yaml": site}, "subnet-invalid").message


def test_the_long_seedfrom_form_needs_its_trailing_slash_too() -> None:
    profile = INSTALL.replace('"ds=nocloud;s={{ cloud_init_url }};dsmode=net"',
                              '"ds=nocloud;seedfrom=http://10.10.10.12/ci/x;dsmode=net"')
    hit = the_one({"profiles/install.yaml": profile}, "nocloud-trailing-slash")
    assert "http://10.10.10.12/ci/x" in hit.message


def test_a_template_branch_on_the_report_token_is_checked_as_the_daemon_renders_it() -> None:
    """The daemon always has a report token: the branch it takes is the one validation renders."""
    user_data = repo_builder.BASE["cloud-init/autoinstall.yaml"] + (
        "  reporting:\n    hook:\n      type: webhook\n"
        "      endpoint: \"{% if report_token %}{{ metadata.report_host }}{% endif %}\"\n")
    hit = the_one({"cloud-init/autoinstall.yaml": user_data}, "template-undefined")
    assert hit.file == "cloud-init/autoinstall.yaml" and "report_host" in hit.message


def test_an_unlisted_kernel_or_initrd_is_reported_at_its_own_line() -> None:
    manifest = "assets:\n  - path: /assets/vmlinuz\n"  # the initrd is not listed
    hit = the_one({"assets.yaml": manifest}, "asset-not-listed")
    assert (hit.file, hit.line) == ("profiles/install.yaml", 4)  # `initrd:`, not the profile's first line
    manifest = "assets:\n  - path: /assets/initrd\n"
    assert the_one({"assets.yaml": manifest}, "asset-not-listed").line == 3  # `kernel:`


def test_a_misspelt_autoinstall_key_is_an_error_at_its_line() -> None:
    """Subiquity ignores `autoinstal:` and stops at a prompt; a missing section stays a warning
    (install media may carry their own autoinstall.yaml)."""
    user_data = repo_builder.BASE["cloud-init/autoinstall.yaml"].replace("autoinstall:", "autoinstal:")
    hit = the_one({"cloud-init/autoinstall.yaml": user_data}, "autoinstall-key-misspelt")
    assert hit.is_error and (hit.file, hit.line) == ("cloud-init/autoinstall.yaml", 2)
    assert "'autoinstal'" in hit.message and "did you mean 'autoinstall'" in hit.message
    other = repo_builder.BASE["cloud-init/autoinstall.yaml"].replace("autoinstall:", "hostname: x\nusers:")
    assert not the_one({"cloud-init/autoinstall.yaml": other}, "autoinstall-section-missing").is_error
