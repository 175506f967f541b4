"""Builds small provisioning repositories for tests: a valid base, plus per-test edits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reconciler.core.snapshot import Snapshot

BASE: dict[str, str] = {
    "netboot.yaml": """\
server:
  address: 10.10.10.12
  http_port: 80
dhcp:
  mode: full
  unknown_clients: ignore
  subnets:
    - subnet: 10.10.10.0/24
      pool: [10.10.10.20, 10.10.10.200]
      routers: [10.10.10.254]
      dns_servers: [8.8.8.8]
""",
    "nodes/node-1.yaml": """\
mac: 52:54:00:aa:bb:01
ip: 10.10.10.201
profile: install
labels: {rack: r1}
""",
    "nodes/node-2.yaml": """\
mac: 52:54:00:aa:bb:02
ip: 10.10.10.202
profile: install
labels: {rack: r1}
""",
    "profiles/install.yaml": """\
name: Install Ubuntu 22.04
boot:
  kernel: /assets/vmlinuz
  initrd: [/assets/initrd]
  args:
    - autoinstall
    - ip=dhcp
    - url={{ server_url }}/assets/ubuntu-22.04.5-live-server-amd64.iso
    - cloud-config-url=/dev/null
    - "ds=nocloud;s={{ cloud_init_url }};dsmode=net"
cloud_init: autoinstall
""",
    "profiles/local.yaml": """\
name: Local disk
boot: {}
""",
    "groups/default.yaml": """\
profile: local
""",
    "cloud-init/autoinstall.yaml": """\
#cloud-config
autoinstall:
  version: 1
  identity:
    hostname: {{ hostname }}
    username: ops
    password: "$6$x$y"
""",
}


def files(edits: Mapping[str, str | None] | None = None) -> dict[str, bytes]:
    """The base repository with `edits` applied (None deletes a file)."""
    out = dict(BASE)
    for path, text in (edits or {}).items():
        if text is None:
            out.pop(path, None)
        else:
            out[path] = text
    return {path: text.encode() for path, text in out.items()}


def snapshot(edits: Mapping[str, str | None] | None = None, revision: str = "rev1") -> Snapshot:
    return Snapshot(revision=revision, files=files(edits))


def write(root: Path, edits: Mapping[str, str | None] | None = None) -> Path:
    for path, content in files(edits).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


# Two sites from one repository: shared defaults in netboot.yaml, each site its own server and
# subnet; node-1 and node-2 at paris, node-3 at lyon (apply as edits over BASE).
TWO_SITES: dict[str, str | None] = {
    "netboot.yaml": """\
server:
  http_port: 80
dhcp:
  mode: full
  unknown_clients: ignore
sites:
  paris:
    server:
      address: 10.10.10.12
    dhcp:
      interface: eth-paris
      subnets:
        - subnet: 10.10.10.0/24
          pool: [10.10.10.20, 10.10.10.200]
          routers: [10.10.10.254]
          dns_servers: [8.8.8.8]
  lyon:
    server:
      address: 10.20.0.2
      http_port: 8080
    dhcp:
      mode: proxy
      subnets:
        - subnet: 10.20.0.0/24
""",
    "nodes/node-1.yaml": """\
mac: 52:54:00:aa:bb:01
ip: 10.10.10.201
profile: install
site: paris
labels: {rack: r1}
""",
    "nodes/node-2.yaml": """\
mac: 52:54:00:aa:bb:02
ip: 10.10.10.202
profile: install
site: paris
labels: {rack: r1}
""",
    "nodes/node-3.yaml": """\
mac: 52:54:00:aa:bb:03
ip: 10.20.0.31
profile: install
site: lyon
""",
}


def two_sites(edits: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """TWO_SITES with `edits` applied over it (still edits over BASE)."""
    return {**TWO_SITES, **(edits or {})}
