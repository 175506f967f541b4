"""The real peers read what the renderer writes: isc-dhcp-server, Kea, dnsmasq and cloud-init.

`dhcpd -t -cf`, `kea-dhcp4 -t` (inside a network namespace this test makes, holding a dummy
interface of the site's name, because Kea checks that the interface it binds exists),
`dnsmasq --test -C` and `cloud-init schema --config-file`, on example-repo and on a sample of
random valid repositories (hypothesis).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from reconciler.core.render import render_generation
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from tests import repo_builder
from tests.render_support import DB_1, INTERFACE, example_state, random_repo, secure_override_state, valid_state
from tests.support import require_root, require_tool


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A network namespace with (veth) interfaces named like the sites' (ens18, nr0)."""
    require_root()
    ip = require_tool("ip", "iproute2")
    name = f"nr-render-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        for ifname in ("ens18", INTERFACE):
            peer = f"{ifname}p"
            subprocess.run([ip, "-n", name, "link", "add", ifname, "type", "veth", "peer", "name", peer], check=True)
            subprocess.run([ip, "-n", name, "link", "set", ifname, "up"], check=True)
        yield name
    finally:
        subprocess.run([ip, "netns", "del", name], check=False)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def check_dhcpd(path: Path) -> None:
    require_root()
    dhcpd = require_tool("dhcpd", "isc-dhcp-server")
    result = _run([dhcpd, "-t", "-q", "-cf", str(path), "-lf", "/dev/null"], path.parent)
    assert result.returncode == 0, f"dhcpd -t refused {path}:\n{result.stdout}{result.stderr}\n{path.read_text()}"


def check_kea(path: Path, ns: str) -> None:
    kea = require_tool("kea-dhcp4", "kea-dhcp4-server")
    ip = require_tool("ip", "iproute2")
    result = _run([ip, "netns", "exec", ns, kea, "-t", str(path)], path.parent)
    assert result.returncode == 0, f"kea-dhcp4 -t refused {path}:\n{result.stdout}{result.stderr}\n{path.read_text()}"


def check_dnsmasq(path: Path) -> None:
    dnsmasq = require_tool("dnsmasq", "dnsmasq-base")
    result = _run([dnsmasq, "--test", "-C", str(path)], path.parent)
    assert result.returncode == 0, f"dnsmasq --test refused {path}:\n{result.stdout}{result.stderr}"


def check_cloud_init(path: Path) -> None:
    cloud_init = require_tool("cloud-init", "cloud-init")
    result = _run([cloud_init, "schema", "--config-file", str(path)], path.parent)
    assert result.returncode == 0, f"cloud-init schema refused {path}:\n{result.stdout}{result.stderr}"


def write_tree(files: Mapping[str, bytes], root: Path) -> Path:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def test_example_repo_dhcpd_conf_passes_dhcpd(tmp_path: Path) -> None:
    check_dhcpd(write_tree(render_generation(example_state()), tmp_path) / "dhcpd.conf")


def test_example_repo_kea_conf_passes_kea(tmp_path: Path, netns: str) -> None:
    check_kea(write_tree(render_generation(example_state()), tmp_path) / "kea-dhcp4.conf", netns)


def test_example_repo_dnsmasq_conf_passes_dnsmasq(tmp_path: Path) -> None:
    check_dnsmasq(write_tree(render_generation(example_state()), tmp_path) / "dnsmasq.conf")


def test_example_repo_user_data_passes_cloud_init_schema(tmp_path: Path) -> None:
    root = write_tree(render_generation(example_state()), tmp_path)
    seeds = sorted(root.glob("cloud-init/*/user-data"))
    assert len(seeds) == 4
    for seed in seeds:
        check_cloud_init(seed)


def test_unknown_clients_ignore_configs_pass_their_peers(tmp_path: Path, netns: str) -> None:
    state = example_state()
    site = dataclasses.replace(state.site, unknown_clients="ignore", interface=None)
    node = dataclasses.replace(state.nodes[0], ip=None)  # a host entry without fixed-address
    state = dataclasses.replace(state, site=site, nodes=(node, *state.nodes[1:]))
    root = write_tree(render_generation(state), tmp_path)
    check_dhcpd(root / "dhcpd.conf")
    check_kea(root / "kea-dhcp4.conf", netns)
    check_dnsmasq(root / "dnsmasq.conf")


@pytest.mark.parametrize("site_secure", [True, False])
def test_secure_boot_override_configs_pass_their_peers(site_secure: bool, tmp_path: Path, netns: str) -> None:
    """db-1's profile overrides the site's `secure_boot`: the per-MAC branch, class and tag parse."""
    root = write_tree(render_generation(secure_override_state(site_secure)), tmp_path)
    assert DB_1.replace(":", "") in (root / "kea-dhcp4.conf").read_text()
    check_dhcpd(root / "dhcpd.conf")
    check_kea(root / "kea-dhcp4.conf", netns)
    check_dnsmasq(root / "dnsmasq.conf")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=random_repo())
def test_random_valid_repos_pass_dhcpd_kea_dnsmasq(
    files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory, netns: str
) -> None:
    state = valid_state(Snapshot("f" * 40, files))
    root = write_tree(render_generation(state), tmp_path_factory.mktemp("random"))
    check_dhcpd(root / "dhcpd.conf")
    check_kea(root / "kea-dhcp4.conf", netns)
    check_dnsmasq(root / "dnsmasq.conf")
    for seed in sorted(root.glob("cloud-init/*/user-data"))[:1]:
        check_cloud_init(seed)


def test_hostnames_dnsmasq_reads_as_keywords_are_left_out(tmp_path: Path) -> None:
    """dnsmasq reads a dhcp-host field `ignore` as "ignore this host" and `600`, `12h` or
    `infinite` as a lease time: such a name is left out of the line (a warning says so)."""
    edits = {f"nodes/{name}.yaml": f"mac: 52:54:00:aa:cc:{i:02x}\nprofile: install\n"
             for i, name in enumerate(("ignore", "600", "12h", "infinite", "web-1"))}
    result = validate(repo_builder.snapshot(edits))
    assert result.state is not None, result.errors
    warned = sorted(i.file for i in result.warnings if i.code == "dnsmasq-hostname")
    assert warned == ["nodes/12h.yaml", "nodes/600.yaml", "nodes/ignore.yaml", "nodes/infinite.yaml"]
    root = write_tree(render_generation(result.state), tmp_path)
    lines = (root / "dnsmasq.conf").read_text().splitlines()
    hosts = [line for line in lines if line.startswith("dhcp-host=52:54:00:aa:cc")]
    assert hosts == [f"dhcp-host=52:54:00:aa:cc:{i:02x}" for i in (2, 1, 0, 3)] + ["dhcp-host=52:54:00:aa:cc:04,web-1"]
    check_dnsmasq(root / "dnsmasq.conf")
