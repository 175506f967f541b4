"""Generates provisioning repositories of N nodes for the benchmarks (in memory or on disk)."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from tests.repo_builder import BASE


def repo_files(nodes: int) -> dict[str, bytes]:
    """A valid repository with `nodes` nodes spread over enough /16 subnets."""
    subnets = []
    per_subnet = 60000
    count = (nodes + per_subnet - 1) // per_subnet
    for s in range(max(count, 1)):
        subnets.append(
            f"    - subnet: 10.{100 + s}.0.0/16\n      pool: [10.{100 + s}.255.1, 10.{100 + s}.255.250]\n"
            f"      routers: [10.{100 + s}.0.1]\n"
        )
    site = "server:\n  address: 10.100.0.2\ndhcp:\n  subnets:\n" + "".join(subnets)
    files = {path: text.encode() for path, text in BASE.items() if not path.startswith(("nodes/", "netboot.yaml"))}
    files["netboot.yaml"] = site.encode()
    for i in range(nodes):
        net = IPv4Network(f"10.{100 + i // per_subnet}.0.0/16")
        ip = net.network_address + 10 + i % per_subnet
        mac = f"52:54:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
        files[f"nodes/n{i:05d}.yaml"] = (
            f"mac: {mac}\nip: {ip}\nprofile: install\nlabels: {{rack: r{i % 40}}}\nmetadata: {{serial: S{i:08d}}}\n"
        ).encode()
    return files


def write_repo(root: Path, nodes: int) -> Path:
    for path, content in repo_files(nodes).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root
