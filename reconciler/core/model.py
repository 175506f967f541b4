"""The values of the domain: what a provisioning repository means once validated.

Everything here is a frozen dataclass built by `core.validate` and read by the renderer,
the protocol deciders and the servers. Nothing here does I/O or knows where a value came
from beyond the `Location` it carries for error messages.
"""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal


class Severity(enum.StrEnum):
    """How bad a finding is: errors block a commit from being served, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True, slots=True)
class Location:
    """Where a value was written: repo-relative file, 1-based line and column (0 = unknown)."""

    file: str
    line: int = 0
    column: int = 0

    def __reduce__(self) -> tuple[Callable[..., Location], tuple[str, int, int]]:
        return Location, (self.file, self.line, self.column)  # no state: why at `Node.__reduce__`


@dataclass(frozen=True, order=True)
class Issue:
    """One validation finding. Findings are data: all of them are collected in one pass."""

    file: str
    line: int
    column: int
    code: str
    severity: Severity
    message: str

    @classmethod
    def at(cls, loc: Location, code: str, message: str, severity: Severity = Severity.ERROR) -> Issue:
        return cls(loc.file, loc.line, loc.column, code, severity, message)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


DhcpMode = Literal["full", "proxy", "off"]
UnknownClients = Literal["ignore", "boot"]


@dataclass(frozen=True)
class Subnet:
    """A declared IPv4 subnet with its options; `pool` is the dynamic range (full mode)."""

    network: IPv4Network
    pool: tuple[IPv4Address, IPv4Address] | None
    routers: tuple[IPv4Address, ...] = ()
    dns_servers: tuple[IPv4Address, ...] = ()
    domain_name: str | None = None
    lease_time: int = 600
    max_lease_time: int = 7200
    source: Location = Location("netboot.yaml")

    def in_pool(self, ip: IPv4Address) -> bool:
        return self.pool is not None and self.pool[0] <= ip <= self.pool[1]


@dataclass(frozen=True)
class BootFiles:
    """Names of the iPXE binaries handed to PXE firmware (defaults: Debian's `ipxe` package),
    and where the Secure Boot chain's signed binaries are on the server (defaults: Debian's
    `shim-signed` and `grub-efi-amd64-signed`), served over TFTP as `shimx64.efi` and
    `grubx64.efi` (`core.bootfiles`)."""

    bios: str = "undionly.kpxe"
    uefi_x64: str = "ipxe.efi"
    uefi_arm64: str = "snp.efi"
    uefi_ia32: str = ""  # 32-bit UEFI (arch 6, 15): none by default (Debian's ipxe package ships none)
    ipxe_script: str = "boot.ipxe"
    shim_x64: str = "/usr/lib/shim/shimx64.efi.signed"
    grub_x64: str = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"


@dataclass(frozen=True)
class RolloutPolicy:
    """netboot.yaml `rollout:`: how the daemon reinstalls the nodes a commit asks to (core.rollout)."""

    max_in_flight: int = 1
    on_failure: Literal["pause", "continue"] = "pause"
    power: bool = False  # no power action ever without it
    reinstall_on_change: bool = False


@dataclass(frozen=True)
class Site:
    """netboot.yaml: how this site is reached and how DHCP behaves. A repository that declares
    `sites:` has one per entry (netboot.yaml's own keys merged under it, `core.build.sites`), each
    with its `name`; one that does not has one implicit site named ""."""

    server_address: IPv4Address
    http_port: int = 80
    dhcp_mode: DhcpMode = "full"
    interface: str | None = None
    unknown_clients: UnknownClients = "ignore"
    subnets: tuple[Subnet, ...] = ()
    boot_files: BootFiles = BootFiles()
    source: Location = Location("netboot.yaml")
    secure_boot: bool = False  # UEFI PXE clients get shim -> signed GRUB instead of iPXE (a profile may override)
    rollout: RolloutPolicy | None = None  # None: no `rollout:`, nodes are reinstalled by hand
    name: str = ""  # `sites.<name>` of netboot.yaml; "" for the implicit site of a repository without `sites:`

    @functools.cached_property
    def server_url(self) -> str:
        """The base URL every rendered URL starts with (no trailing slash)."""
        if self.http_port == 80:
            return f"http://{self.server_address}"
        return f"http://{self.server_address}:{self.http_port}"

    def subnet_for(self, ip: IPv4Address) -> Subnet | None:
        for subnet in self.subnets:
            if ip in subnet.network:
                return subnet
        return None


BmcDriver = Literal["ipmi", "redfish"]


@dataclass(frozen=True)
class Bmc:
    """A node's `bmc:`: how `netboot-reconcile power` reaches its BMC. `credentials` is a name in
    the --bmc-credentials file (outside git); the username and password are never in the model.
    `verify_ca` (Redfish's https; IPMI has no TLS): True checks the BMC's certificate against the
    system's CAs, a path against that CA bundle (a file on the host that powers), False not at all."""

    driver: BmcDriver
    host: str
    port: int | None  # None: the driver's default (IPMI 623, Redfish 443)
    credentials: str
    verify_ca: bool | str = True

    @property
    def address(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Node:
    """One machine: nodes/<name>.yaml. Slotted, and pickled as its fields (`__reduce__`): the
    daemon holds every node of the site, unpickled from its worker (issue 25, memory, below)."""

    name: str
    mac: str  # lowercase colon form
    profile: str
    hostname: str
    ip: IPv4Address | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    reinstall: int = 0
    source: Location = Location("")
    bmc: Bmc | None = None
    site: str | None = None  # `site:`, a name under netboot.yaml `sites:`; None in a repository without sites

    def __reduce__(self) -> tuple[Callable[..., Node], tuple[Any, ...]]:
        """Pickled as its fields, unpickled by `_unpickled_node`. Issue 25: at 100,000 nodes the
        daemon's copy was ~1.6 KB a node (a __dict__ for each Node and Location that unpickling
        made, and every node's own copy of the strings nodes share: label keys and values, the
        profile's name, metadata's keys and SSH keys); ~0.9 KB so, and pickling is no slower."""
        return _unpickled_node, (self.name, self.mac, self.profile, self.hostname, self.ip, self.labels, self.metadata,
                                 self.reinstall, self.source, self.bmc, self.site)


def _unpickled_node(name: str, mac: str, profile: str, hostname: str, ip: IPv4Address | None,
                    labels: Mapping[str, str], metadata: Mapping[str, Any], reinstall: int, source: Location,
                    bmc: Bmc | None, site: str | None) -> Node:
    """A Node as pickled (`Node.__reduce__`), with its strings interned, so the nodes of one site
    share those they repeat (pickle shares them within one message only; a pickle of the node may
    so differ from the pickle it was made from, where two of its strings are now one object, as
    the pickles of two equal nodes can: `reuse.node_key` only misses). `labels` and `metadata`
    are changed in place (their keys and strings, not their values): unpickling just made them,
    and shared them only between nodes that shared them. Not the frozen dataclass `__init__`:
    one `object.__setattr__` per field, as it does, without its checks of defaults."""
    node = object.__new__(Node)
    put = object.__setattr__
    put(node, "name", name)
    put(node, "mac", mac)
    put(node, "profile", sys.intern(profile))
    put(node, "hostname", hostname if hostname is name else sys.intern(hostname))
    put(node, "ip", ip)
    put(node, "labels", _interned(labels))
    put(node, "metadata", _interned(metadata))
    put(node, "reinstall", reinstall)
    put(node, "source", source)
    put(node, "bmc", bmc)
    put(node, "site", None if site is None else sys.intern(site))
    return node


def _interned(value: Any) -> Any:
    """`value` (YAML data: dicts, lists, scalars) with the strings in it, keys included, interned;
    its dicts and lists changed in place, each once (an anchor may share one, or make a cycle)."""
    seen: set[int] = set()
    todo = [value]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if type(item) is dict:
            if any(type(k) is str and k is not sys.intern(k) for k in item):  # keys are replaced by rebuilding it
                pairs = list(item.items())
                item.clear()
                item.update((sys.intern(k) if type(k) is str else k, v) for k, v in pairs)
            for k, v in item.items():
                if type(v) is str:
                    item[k] = sys.intern(v)
                elif type(v) in (dict, list):
                    todo.append(v)
        elif type(item) is list:
            for i, v in enumerate(item):
                if type(v) is str:
                    item[i] = sys.intern(v)
                elif type(v) in (dict, list):
                    todo.append(v)
    return value


@dataclass(frozen=True)
class Boot:
    """What a profile boots: matchbox's `boot` object."""

    kernel: str = ""
    initrd: tuple[str, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A boot profile: profiles/<id>.yaml or matchbox profiles/<id>.json."""

    id: str
    name: str
    boot: Boot
    cloud_init: str | None = None
    install_once: bool = False
    generic_id: str | None = None
    ignition_id: str | None = None
    source: Location = Location("")
    secure_boot: bool | None = None  # None: the site's `secure_boot`


@dataclass(frozen=True)
class Group:
    """A matchbox group: selector -> profile. An empty selector makes it the default group."""

    id: str
    name: str
    profile: str
    selector: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: Location = Location("")
    site: str | None = None  # `site:`: served at that site only; None: at every site

    @property
    def is_default(self) -> bool:
        return not self.selector


@dataclass(frozen=True)
class Secret:
    """One named value of secrets.yaml: its age-armored ciphertext (never the plaintext)."""

    name: str
    ciphertext: str
    source: Location = Location("")


@dataclass(frozen=True)
class SecretsFile:
    """secrets.yaml: the recipients values are encrypted for, and the encrypted values by name."""

    recipients: tuple[str, ...]
    secrets: Mapping[str, Secret]
    source: Location = Location("")


@dataclass(frozen=True)
class CloudInitTemplate:
    """cloud-init/<name>.yaml: a user-data template (Jinja2, strict undefined)."""

    name: str
    text: str
    source: Location = Location("")


@dataclass(frozen=True)
class MatchboxTemplate:
    """ignition/<name> or generic/<name>: a matchbox template, named by its file name with its
    extension (a profile's `ignition_id` / `generic_id`)."""

    name: str
    text: str
    source: Location = Location("")


@dataclass(frozen=True)
class Asset:
    """One entry of assets.yaml: one served path and where its bytes come from.

    Fetched: `url` with `sha256`, or with `checksums` (a SHA256SUMS-style file's URL), optionally
    `signature` (a detached OpenPGP signature of it) checked against `keyring` (a repo file, whose
    bytes are `keyring_data`). Extracted: `from` (another entry's path, an ISO 9660 image) and
    `file` (the path inside it). Neither: placed under --assets-dir by hand.
    """

    path: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    source: Location = Location("assets.yaml")
    checksums: str | None = None
    signature: str | None = None
    keyring: str | None = None
    keyring_data: bytes | None = field(default=None, repr=False, compare=False)
    from_path: str | None = None  # `from:` in YAML
    file: str | None = None

    @property
    def fetched(self) -> bool:
        return self.url is not None

    @property
    def extracted(self) -> bool:
        return self.from_path is not None

    @property
    def managed(self) -> bool:
        """Whether `assets sync` and the daemon produce this file (else the operator places it)."""
        return self.fetched or self.extracted


@dataclass(frozen=True)
class DesiredState:
    """What one site serves at one revision, validated: the renderer's only input. In a
    repository without sites that is the whole repository; with sites, that site's nodes and the
    groups it serves (profiles, templates, assets and secrets are shared)."""

    revision: str
    site: Site
    nodes: tuple[Node, ...]  # sorted by name
    profiles: Mapping[str, Profile]
    groups: tuple[Group, ...]  # the repo's own groups, sorted by id
    cloud_init: Mapping[str, CloudInitTemplate]
    assets: tuple[Asset, ...] | None = None  # None: no assets.yaml
    ignition: Mapping[str, MatchboxTemplate] = field(default_factory=dict)  # ignition/<name>
    generic: Mapping[str, MatchboxTemplate] = field(default_factory=dict)  # generic/<name>
    secrets: SecretsFile | None = None  # None: no secrets.yaml

    @functools.cached_property
    def _nodes_by_mac(self) -> Mapping[str, Node]:
        return {node.mac: node for node in self.nodes}

    def node_by_mac(self, mac: str) -> Node | None:
        return self._nodes_by_mac.get(mac)


@dataclass(frozen=True)
class BootEvent:
    """Something a server saw a machine do, stamped with the revision that served it.

    `stage` is a `core.events.Stage` value (dhcp-offer, tftp, ipxe-script, kernel, user-data,
    report, ...). `detail` carries stage-specific values (file, bytes, arch, ...).
    """

    time: float
    stage: str
    revision: str
    mac: str | None = None
    node: str | None = None
    client: str | None = None  # client address as a string
    detail: Mapping[str, Any] = field(default_factory=dict)
