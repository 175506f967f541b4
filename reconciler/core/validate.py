"""Validation: a Snapshot in, a DesiredState or every finding out, in one pass.

Called by the `validate` and `render` commands, `diff`, and the daemon's reconcile step.
Order: parse (YAML/JSON, safe) -> JSON Schema per document -> build values -> cross references
-> every template rendered for every node (strict undefined) -> netboot lints. Later stages
run on whatever earlier ones could build, so one pass reports as much as it can.
"""

from __future__ import annotations

import difflib
import functools
import posixpath
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from reconciler.core import assets as manifest
from reconciler.core import lint, schema, template
from reconciler.core.model import (
    Asset,
    Boot,
    BootFiles,
    CloudInitTemplate,
    DesiredState,
    Group,
    Issue,
    Location,
    Node,
    Profile,
    Severity,
    Site,
    Subnet,
)
from reconciler.core.select import matches, normalise_mac
from reconciler.core.snapshot import ASSETS_FILE, SITE_FILE, Snapshot, kind_of
from reconciler.core.yamldoc import Document, parse_json, parse_yaml

# Names the renderer writes next to the repo's own (docs/GENERATION.md).
RESERVED_ID_PREFIX = "node."
RESERVED_NODE_PREFIX = "group-"

# What would break out of its place in a rendered boot script: iPXE ends a command at a word
# that is `||`, `&&` or `;` and drops everything from a word starting with `#`; quotes and
# backslashes reach the kernel as written from iPXE but escaped from GRUB, so the same profile
# would boot differently. (White space in args is the `arg-whitespace` lint.)
_IPXE_OPERATORS = frozenset({"||", "&&", ";"})
_QUOTES = re.compile(r"[\"'\\]")
_WHITESPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def unsafe_boot_value(value: str, *, allow_initrd_name: bool = False) -> str | None:
    """Why `value` (a rendered kernel path, initrd entry or argument) cannot go into a boot
    script as one word, or None when it can."""
    words = value.split()
    if allow_initrd_name and len(words) == 3 and words[0] == "--name":
        value = words[1] + words[2]
        words = [words[1], words[2]]
    if not value:
        return "it is empty"
    if _QUOTES.search(value):
        return "it holds a quote or a backslash, which iPXE passes on as is and GRUB escapes"
    for word in words:
        if word in _IPXE_OPERATORS:
            return f"the word {word!r} is an iPXE command separator"
        if word.startswith("#"):
            return f"the word {word!r} starts an iPXE comment"
    if allow_initrd_name and _WHITESPACE.search(value):
        return "it holds white space (only matchbox's '--name NAME PATH' form may)"
    return None


@dataclass(frozen=True)
class Validation:
    """The outcome of validating one snapshot: a state when there are no errors, and all findings."""

    state: DesiredState | None
    issues: tuple[Issue, ...]

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.is_error)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if not i.is_error)


def stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


VALIDATION_SECRET = b"validation"  # stands in for the daemon's report secret when templates render


class _Collector:
    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self._seen: set[Issue] = set()
        self._template_failures: set[tuple[Location, str]] = set()

    def template_failure(self, loc: Location, exc: template.TemplateFailure, subject: str) -> None:
        """One finding per template place and message, naming the first node or group that hit it."""
        if (loc, exc.message) in self._template_failures:
            return
        self._template_failures.add((loc, exc.message))
        code = "template-undefined" if exc.message.startswith("undefined") else "template-error"
        self.error(loc, code, f"{exc.message} (rendering for {subject})")

    def add(self, issue: Issue) -> None:
        if issue not in self._seen:
            self._seen.add(issue)
            self.issues.append(issue)

    def extend(self, issues: Iterable[Issue]) -> None:
        for issue in issues:
            self.add(issue)

    def error(self, loc: Location, code: str, message: str) -> None:
        self.add(Issue.at(loc, code, message, Severity.ERROR))

    def warn(self, loc: Location, code: str, message: str) -> None:
        self.add(Issue.at(loc, code, message, Severity.WARNING))


def validate(snapshot: Snapshot) -> Validation:
    """Validate a whole repository snapshot."""
    out = _Collector()
    out.extend(snapshot.refused)
    out.extend(snapshot.unread)
    docs = _parse_all(snapshot, out)

    site = _build_site(docs.get(SITE_FILE), out)
    assets = _build_assets(docs.get(ASSETS_FILE), snapshot.files, out)
    cloud_init = _build_cloud_init(snapshot, out)
    profiles = _build_profiles(docs, out)
    groups = _build_groups(docs, out)
    nodes = _build_nodes(docs, out)

    where = _FieldLocator(docs)
    # A reference to a file that exists but failed (its own errors say why) is not a second
    # error: "profile X does not exist, did you mean Y" would send the user the wrong way.
    declared = {kind: {stem(p) for p in snapshot.files if kind_of(p) == kind} for kind in ("profile", "cloud-init")}
    known_profiles = {**dict.fromkeys(declared["profile"]), **profiles}
    _check_profile_refs(profiles, {**dict.fromkeys(declared["cloud-init"]), **cloud_init}, where, out)
    _check_groups(groups, known_profiles, nodes, where, out)
    _check_nodes(nodes, known_profiles, site, where, out)
    if site is not None:
        _check_subnets(site, out)
        checker = _BootPlanChecker(snapshot.revision, site, profiles, assets, out, where)
        for node in sorted(nodes, key=lambda n: n.name):
            checker.check_node(node, cloud_init)
        for group in sorted(groups, key=lambda g: g.id):
            checker.check_group(group)

    issues = tuple(sorted(out.issues, key=lambda i: (i.file, i.line, i.column, i.code, i.message)))
    if site is None or any(i.is_error for i in issues):
        return Validation(None, issues)
    state = DesiredState(
        revision=snapshot.revision,
        site=site,
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        profiles=dict(sorted(profiles.items())),
        groups=tuple(sorted(groups, key=lambda g: g.id)),
        cloud_init=dict(sorted(cloud_init.items())),
        assets=assets,
    )
    return Validation(state, issues)


# -- parsing -----------------------------------------------------------------------------------


def _parse_all(snapshot: Snapshot, out: _Collector) -> dict[str, Document]:
    docs: dict[str, Document] = {}
    for path in sorted(snapshot.files):
        kind = kind_of(path)
        if kind is None or kind in ("cloud-init", "keyring"):
            continue  # cloud-init files are templates: parsed after rendering, per node; keyrings are keys
        parse = parse_json if path.endswith(".json") else parse_yaml
        doc, issues = parse(path, snapshot.files[path])
        out.extend(issues)
        if doc is not None:
            docs[path] = doc
    if SITE_FILE not in snapshot.files:
        out.error(Location(SITE_FILE), "missing-site", "netboot.yaml is required at the repository root")
    return docs


def _schema_ok(doc: Document, kind: str, out: _Collector) -> bool:
    if not isinstance(doc.data, dict):
        out.error(doc.loc(), "schema", f"(document): expected a mapping, found {type(doc.data).__name__}")
        return False
    issues = schema.check(doc, kind)
    out.extend(issues)
    return not issues


# -- building values ---------------------------------------------------------------------------


# Integer fields go through int(): JSON Schema counts 600.0 as an integer, and written as is it
# broke dhcpd ("default-lease-time 600.0;"), Kea and dnsmasq, and URLs (":8080.0").


def _build_site(doc: Document | None, out: _Collector) -> Site | None:
    if doc is None or not _schema_ok(doc, "site", out):
        return None
    data: dict[str, Any] = doc.data
    server = data["server"]
    dhcp = data.get("dhcp", {})
    subnets: list[Subnet] = []
    for i, raw in enumerate(dhcp.get("subnets", [])):
        loc = doc.loc(("dhcp", "subnets", i, "subnet"))
        try:
            network = IPv4Network(raw["subnet"], strict=True)
        except ValueError as exc:
            try:
                network = IPv4Network(raw["subnet"], strict=False)
            except ValueError:
                out.error(loc, "subnet-invalid", f"dhcp.subnets[{i}].subnet: {exc}")
                continue
            # Host bits set: name the network meant, and check the rest against it.
            out.error(loc, "subnet-invalid", f"dhcp.subnets[{i}].subnet: {exc}; did you mean {network}?")
        pool = None
        if "pool" in raw:
            start, end = (IPv4Address(a) for a in raw["pool"])
            pool = (start, end)
            pool_loc = doc.loc(("dhcp", "subnets", i, "pool"))
            if start > end:
                out.error(pool_loc, "pool-order", f"pool {start} - {end}: the first address is after the last")
            if start not in network or end not in network:
                out.error(pool_loc, "pool-outside-subnet", f"pool {start} - {end} is not inside {network}")
            elif start == network.network_address or end == network.broadcast_address:
                out.error(pool_loc, "pool-outside-subnet", "the pool holds the network or broadcast address")
            _check_pool_holds_no_host(pool, pool_loc, server["address"], raw, out)
        if raw.get("lease_time", 600) > raw.get("max_lease_time", 7200):
            out.error(
                doc.loc(("dhcp", "subnets", i, "lease_time")),
                "lease-time",
                "lease_time is longer than max_lease_time",
            )
        for key in ("routers",):
            for j, addr in enumerate(raw.get(key, [])):
                if IPv4Address(addr) not in network:
                    out.error(
                        doc.loc(("dhcp", "subnets", i, key, j)),
                        "router-outside-subnet",
                        f"router {addr} is not inside {network}",
                    )
        subnets.append(
            Subnet(
                network=network,
                pool=pool,
                routers=tuple(IPv4Address(a) for a in raw.get("routers", [])),
                dns_servers=tuple(IPv4Address(a) for a in raw.get("dns_servers", [])),
                domain_name=raw.get("domain_name"),
                lease_time=int(raw.get("lease_time", 600)),
                max_lease_time=int(raw.get("max_lease_time", 7200)),
                source=doc.loc(("dhcp", "subnets", i)),
            )
        )
    files = data.get("boot_files", {})
    defaults = BootFiles()
    return Site(
        server_address=IPv4Address(server["address"]),
        http_port=int(server.get("http_port", 80)),
        dhcp_mode=dhcp.get("mode", "full"),
        interface=dhcp.get("interface"),
        unknown_clients=dhcp.get("unknown_clients", "ignore"),
        subnets=tuple(subnets),
        boot_files=BootFiles(
            bios=files.get("bios", defaults.bios),
            uefi_x64=files.get("uefi_x64", defaults.uefi_x64),
            uefi_arm64=files.get("uefi_arm64", defaults.uefi_arm64),
        ),
        source=doc.loc(),
    )


def _check_pool_holds_no_host(
    pool: tuple[IPv4Address, IPv4Address], loc: Location, server: str, raw: Mapping[str, Any], out: _Collector
) -> None:
    """The pool must not hold an address a host already uses: a DHCP server leases it to the next
    machine that asks (ours, Kea and dnsmasq do not ping first), and two hosts share it."""
    hosts = [("server.address", server)]
    hosts += [("router", a) for a in raw.get("routers", [])] + [("DNS server", a) for a in raw.get("dns_servers", [])]
    for what, addr in hosts:
        if pool[0] <= IPv4Address(addr) <= pool[1]:
            out.error(loc, "pool-holds-host", f"pool {pool[0]} - {pool[1]} holds the {what} {addr}: "
                      "it would be leased to a machine; start or end the pool past it")


def _build_assets(doc: Document | None, files: Mapping[str, bytes], out: _Collector) -> tuple[Asset, ...] | None:
    if doc is None:
        return None
    if not _schema_ok(doc, "assets", out):
        return None  # its own errors say what is wrong; listing nothing would flag every asset
    assets: list[Asset] = []
    seen: dict[str, Location] = {}
    for i, raw in enumerate(doc.data["assets"]):
        loc = doc.loc(("assets", i))
        if raw["path"] in seen:
            out.error(loc, "duplicate-asset", f"{raw['path']} is listed twice (first at line {seen[raw['path']].line})")
        seen[raw["path"]] = loc
        size = raw.get("size")
        keyring = raw.get("keyring")
        assets.append(Asset(
            raw["path"], raw.get("sha256"), None if size is None else int(size), raw.get("url"), loc,
            checksums=raw.get("checksums"), signature=raw.get("signature"), keyring=keyring,
            keyring_data=files.get(keyring) if keyring is not None else None,
            from_path=raw.get("from"), file=raw.get("file"),
        ))
    indexes = {id(a): i for i, a in enumerate(assets)}

    def field_loc(asset: Asset, name: str) -> Location:
        path: tuple[str | int, ...] = ("assets", indexes[id(asset)])
        return doc.loc((*path, name)) if name in doc.data["assets"][indexes[id(asset)]] else doc.loc(path)

    out.extend(manifest.check_manifest(assets, files, field_loc))
    return tuple(assets)


def _build_cloud_init(snapshot: Snapshot, out: _Collector) -> dict[str, CloudInitTemplate]:
    templates: dict[str, CloudInitTemplate] = {}
    for path in sorted(snapshot.files):
        if kind_of(path) != "cloud-init":
            continue
        name = stem(path)
        loc = Location(path, 1, 1)
        try:
            text = snapshot.files[path].decode("utf-8")
        except UnicodeDecodeError as exc:
            out.error(loc, "encoding", f"not UTF-8: {exc.reason}")
            continue
        if name in templates:
            out.error(
                loc, "duplicate-cloud-init", f"cloud-init template {name!r} is also {templates[name].source.file}"
            )
            continue
        compiled = template.compile_template(text)
        if compiled.error is not None:
            out.error(Location(path, compiled.error.line, 0), "template-syntax", compiled.error.message)
            continue
        templates[name] = CloudInitTemplate(name, text, loc)
    return templates


def _build_profiles(docs: Mapping[str, Document], out: _Collector) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for path, doc in docs.items():
        if kind_of(path) != "profile":
            continue
        is_json = path.endswith(".json")
        if not _schema_ok(doc, "profile-matchbox" if is_json else "profile", out):
            continue
        data = doc.data
        pid = stem(path)
        if "id" in data and data["id"] != pid:
            out.error(doc.loc(("id",)), "profile-id-mismatch", f"id {data['id']!r} differs from the file name {pid!r}")
            continue
        if pid.startswith(RESERVED_ID_PREFIX):
            out.error(doc.loc(), "reserved-id", _reserved_id_message("profile", pid))
            continue
        if pid in profiles:
            out.error(doc.loc(), "duplicate-profile", f"profile {pid!r} is also {profiles[pid].source.file}")
            continue
        boot = data.get("boot", {})
        args = tuple(boot.get("args", []))
        if is_json and data.get("cloud_id"):
            out.warn(
                doc.loc(("cloud_id",)),
                "matchbox-cloud-id",
                "matchbox cloud_id (Container Linux cloud-config) is not served",
            )
        profiles[pid] = Profile(
            id=pid,
            name=data.get("name", pid),
            boot=Boot(kernel=boot.get("kernel", ""), initrd=tuple(boot.get("initrd", [])), args=args),
            cloud_init=data.get("cloud_init"),
            install_once=bool(data.get("install_once", False)),
            generic_id=data.get("generic_id"),
            ignition_id=data.get("ignition_id"),
            source=doc.loc(),
            arg_locations=tuple(doc.loc(("boot", "args", i), key=False) for i in range(len(args))),
        )
    return profiles


def _build_groups(docs: Mapping[str, Document], out: _Collector) -> list[Group]:
    groups: dict[str, Group] = {}
    for path, doc in docs.items():
        if kind_of(path) != "group" or not _schema_ok(doc, "group", out):
            continue
        data = doc.data
        gid = stem(path)
        if "id" in data and data["id"] != gid:
            out.error(doc.loc(("id",)), "group-id-mismatch", f"id {data['id']!r} differs from the file name {gid!r}")
            continue
        if gid.startswith(RESERVED_ID_PREFIX):
            out.error(doc.loc(), "reserved-id", _reserved_id_message("group", gid))
            continue
        if gid in groups:
            out.error(doc.loc(), "duplicate-group", f"group {gid!r} is also {groups[gid].source.file}")
            continue
        selector = dict(data.get("selector", {}))
        if "mac" in selector:
            mac = normalise_mac(selector["mac"])
            if mac is None:
                out.error(
                    doc.loc(("selector", "mac")),
                    "mac-invalid",
                    f"selector.mac {selector['mac']!r} is not a MAC address",
                )
                continue
            selector["mac"] = mac
        groups[gid] = Group(
            id=gid,
            name=data.get("name", gid),
            profile=data["profile"],
            selector=selector,
            metadata=data.get("metadata", {}),
            source=doc.loc(),
        )
    return list(groups.values())


def _build_nodes(docs: Mapping[str, Document], out: _Collector) -> list[Node]:
    nodes: dict[str, Node] = {}
    for path, doc in docs.items():
        if kind_of(path) != "node":
            continue
        name = stem(path)
        if not _valid_node_name(name):
            out.error(doc.loc(), "node-name", f"node name {name!r} (the file name) must be a DNS label: a-z, 0-9, '-'")
            continue
        if name.startswith(RESERVED_NODE_PREFIX):
            out.error(
                doc.loc(),
                "reserved-name",
                f"node name {name!r}: names starting with {RESERVED_NODE_PREFIX!r} are reserved for the "
                "rendered files of repo groups (ipxe/group-<id>.ipxe)",
            )
            continue
        if not _schema_ok(doc, "node", out):
            continue
        data = doc.data
        if name in nodes:
            out.error(doc.loc(), "duplicate-node", f"node {name!r} is also defined in {nodes[name].source.file}")
            continue
        mac = normalise_mac(data["mac"])
        if mac is None:  # the schema pattern admits only MACs; kept for safety
            out.error(doc.loc(("mac",)), "mac-invalid", f"{data['mac']!r} is not a MAC address")
            continue
        nodes[name] = Node(
            name=name,
            mac=mac,
            profile=data["profile"],
            hostname=data.get("hostname", name),
            ip=IPv4Address(data["ip"]) if "ip" in data else None,
            labels=dict(data.get("labels", {})),
            metadata=data.get("metadata", {}),
            reinstall=int(data.get("reinstall", 0)),
            source=doc.loc(),
        )
    return list(nodes.values())


def _reserved_id_message(kind: str, ident: str) -> str:
    return (
        f"{kind} id {ident!r}: ids starting with {RESERVED_ID_PREFIX!r} are reserved for the per-node "
        "matchbox groups and profiles the renderer writes (groups/node.<name>.json)"
    )


def _valid_node_name(name: str) -> bool:
    return re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name) is not None


# -- cross references --------------------------------------------------------------------------


class _FieldLocator:
    """Locations of a document's fields, for findings that point at the line of the field."""

    def __init__(self, docs: Mapping[str, Document]) -> None:
        self._docs = docs

    def __call__(self, source: Location, *path: str | int) -> Location:
        doc = self._docs.get(source.file)
        return doc.loc(path) if doc is not None else source


def _check_profile_refs(
    profiles: Mapping[str, Profile], cloud_init: Mapping[str, object], where: _FieldLocator, out: _Collector
) -> None:
    for profile in profiles.values():
        if profile.cloud_init is not None and profile.cloud_init not in cloud_init:
            out.error(
                where(profile.source, "cloud_init"),
                "ref-cloud-init",
                f"profile {profile.id!r} names cloud-init {profile.cloud_init!r}, "
                f"but cloud-init/{profile.cloud_init}.yaml does not exist",
            )


def _check_groups(
    groups: list[Group], profiles: Mapping[str, object], nodes: list[Node], where: _FieldLocator, out: _Collector
) -> None:
    defaults = [g for g in groups if g.is_default]
    for extra in sorted(defaults, key=lambda g: g.id)[1:]:
        out.error(
            extra.source,
            "duplicate-default-group",
            f"group {extra.id!r} has no selector, like {defaults[0].id!r}: only one default group",
        )
    for group in groups:
        if group.profile not in profiles:
            out.error(
                where(group.source, "profile"),
                "ref-profile",
                f"group {group.id!r} names profile {group.profile!r}, which does not exist"
                + _suggest(group.profile, profiles),
            )
    selecting = [g for g in groups if not g.is_default]
    for node in nodes:
        labels = {**node.labels, "mac": node.mac}
        hits = [g for g in selecting if matches(g.selector, labels)]
        by_count: dict[int, list[Group]] = defaultdict(list)
        for g in hits:
            by_count[len(g.selector)].append(g)
            if g.profile != node.profile:
                out.error(
                    where(g.source, "profile"),
                    "group-conflicts-node",
                    f"group {g.id!r} selects node {node.name!r} ({node.source.file}) with profile {g.profile!r}, "
                    f"but the node names profile {node.profile!r}",
                )
        for count, tied in by_count.items():
            if len(tied) > 1 and len({g.profile for g in tied}) > 1:
                ids = ", ".join(sorted(g.id for g in tied))
                first = min(tied, key=lambda g: g.source.file)
                out.error(
                    where(first.source, "selector"),
                    "group-ambiguous",
                    f"groups {ids} all have {count} selector(s) and all match node {node.name!r}: "
                    "matchbox would pick one silently",
                )


def _check_nodes(
    nodes: list[Node], profiles: Mapping[str, object], site: Site | None, where: _FieldLocator, out: _Collector
) -> None:
    seen: dict[str, dict[str, Node]] = {"mac": {}, "ip": {}, "hostname": {}}
    for node in sorted(nodes, key=lambda n: n.source.file):
        if node.profile not in profiles:
            out.error(
                where(node.source, "profile"),
                "ref-profile",
                f"node {node.name!r} names profile {node.profile!r}, which does not exist"
                + _suggest(node.profile, profiles),
            )
        for key, value in (
            ("mac", node.mac),
            ("ip", str(node.ip) if node.ip else None),
            ("hostname", node.hostname.lower()),
        ):
            if value is None:
                continue
            other = seen[key].get(value)
            if other is not None:
                out.error(
                    where(node.source, key),
                    f"duplicate-{key}",
                    f"{key} {value} of node {node.name!r} is also used by node {other.name!r} ({other.source.file})",
                )
            else:
                seen[key][value] = node
        if site is not None and node.ip is not None:
            subnet = site.subnet_for(node.ip)
            if subnet is None:
                declared = ", ".join(str(s.network) for s in site.subnets) or "none"
                out.error(
                    where(node.source, "ip"),
                    "ip-outside-subnet",
                    f"ip {node.ip} of node {node.name!r} is in no declared subnet (declared: {declared})",
                )
            elif node.ip == site.server_address or node.ip in subnet.routers:
                what = "server.address" if node.ip == site.server_address else "a router"
                out.error(
                    where(node.source, "ip"),
                    "ip-conflict",
                    f"ip {node.ip} of node {node.name!r} is {what} in netboot.yaml: two hosts would answer it",
                )
            elif subnet.in_pool(node.ip):
                assert subnet.pool is not None
                out.error(
                    where(node.source, "ip"),
                    "ip-in-pool",
                    f"ip {node.ip} of node {node.name!r} is inside the pool "
                    f"{subnet.pool[0]} - {subnet.pool[1]}: "
                    "it could be leased to another machine",
                )
            elif node.ip in (subnet.network.network_address, subnet.network.broadcast_address):
                out.error(
                    where(node.source, "ip"),
                    "ip-outside-subnet",
                    f"ip {node.ip} is the network or broadcast address of {subnet.network}",
                )


def _check_subnets(site: Site, out: _Collector) -> None:
    for i, a in enumerate(site.subnets):
        for b in site.subnets[i + 1 :]:
            if a.network.overlaps(b.network):
                out.error(b.source, "subnet-overlap", f"subnet {b.network} overlaps {a.network}")


def _suggest(name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- templates and lints -----------------------------------------------------------------------


class _BootPlanChecker:
    """Renders every boot template for every node, and for every repo group (the machines no node
    file declares), as the renderer will; lints what comes out. Each distinct result is linted once."""

    def __init__(
        self,
        revision: str,
        site: Site,
        profiles: Mapping[str, Profile],
        assets: tuple[Asset, ...] | None,
        out: _Collector,
        where: _FieldLocator,
    ) -> None:
        self.revision, self.site, self.profiles, self.out, self.where = revision, site, profiles, out, where
        self.listed = {a.path for a in assets} if assets is not None else None
        self.linted_args: set[tuple[str, tuple[str, ...]]] = set()
        self.linted_user_data: set[tuple[str, str]] = set()

    def _boot_path_loc(self, profile: Profile) -> Callable[[int], Location]:
        """The line of a profile's boot path by its index in (kernel, *initrd)."""

        def loc(index: int) -> Location:
            return self.where(profile.source, "boot", *(("kernel",) if index == 0 else ("initrd", index - 1)))

        return loc

    def check_node(self, node: Node, cloud_init: Mapping[str, CloudInitTemplate]) -> None:
        profile = self.profiles.get(node.profile)
        if profile is None:
            return
        # The daemon always renders a real report token: a template branching on it is checked
        # on that branch (a placeholder secret gives a token of the same form).
        token = template.report_token(VALIDATION_SECRET, node.name, self.revision)
        context = template.node_context(self.site, node, self.revision, token)
        subject = f"node {node.name!r}, {node.source.file}"
        rendered_args = self._check_boot(profile, context, subject)
        tpl = cloud_init.get(profile.cloud_init) if profile.cloud_init else None
        if tpl is None:
            return
        try:
            text = template.render(tpl.text, context)
        except template.TemplateFailure as exc:
            self.out.template_failure(Location(tpl.source.file, exc.line, 0), exc, subject)
            return
        key = (tpl.name, text)
        if key not in self.linted_user_data:
            self.linted_user_data.add(key)
            self.out.extend(lint.lint_user_data(text, tpl.source, "autoinstall" in (rendered_args or ())))

    def check_group(self, group: Group) -> None:
        """A repo group's profile is rendered without a node: a node-only variable makes its script
        say so and exit (a warning: machines only that group selects cannot boot it); anything else
        must render, and its output passes the same checks as a node's."""
        profile = self.profiles.get(group.profile)
        if profile is None or not profile.boot.kernel:
            return
        texts = (profile.boot.kernel, *profile.boot.initrd, *profile.boot.args)
        needs = sorted(set().union(*(template.referenced_variables(t) for t in texts)) & template.NODE_ONLY_VARIABLES)
        if needs:
            self.out.warn(
                group.source,
                "group-profile-needs-node",
                f"group {group.id!r} boots profile {profile.id!r}, whose templates use {', '.join(needs)}: "
                "a machine no node file declares has none, so it gets a script that says so and exits",
            )
            return
        context = template.group_context(self.site, group, self.revision)
        self._check_boot(profile, context, f"group {group.id!r}, {group.source.file}")

    def _check_boot(self, profile: Profile, context: Mapping[str, Any], subject: str) -> tuple[str, ...] | None:
        """Render kernel, initrd and args; check and lint them. Returns the rendered args."""
        arg_loc = functools.partial(_arg_loc, profile)
        path_loc = self._boot_path_loc(profile)
        rendered_args = _render_each(profile.boot.args, context, arg_loc, subject, self.out)
        boot_paths = _render_each((profile.boot.kernel, *profile.boot.initrd), context, path_loc, subject, self.out)
        _check_boot_values(profile, rendered_args or (), boot_paths, self.out)
        if rendered_args is None or (profile.id, rendered_args) in self.linted_args:
            return rendered_args
        self.linted_args.add((profile.id, rendered_args))
        self.out.extend(lint.lint_args(rendered_args, arg_loc, profile.source, profile.cloud_init is not None))
        if self.listed is not None:
            refs = [(a, _arg_loc(profile, i)) for i, a in enumerate(rendered_args) if a.startswith("url=")]
            refs += [(p, path_loc(i)) for i, p in enumerate(boot_paths or ()) if p]
            for ref, loc in refs:
                path = lint.asset_path(ref, self.site.server_url)
                if path is not None and path not in self.listed:
                    self.out.add(lint.finding("asset-not-listed", loc, path))
        return rendered_args


def _check_boot_values(
    profile: Profile,
    args: tuple[str, ...],
    boot_paths: tuple[str, ...] | None,
    out: _Collector,
) -> None:
    """No rendered kernel path, initrd or argument may break out of its word (see unsafe_boot_value)."""
    for i, arg in enumerate(args):
        if _WHITESPACE.search(arg):
            continue  # the arg-whitespace lint reports it
        why = unsafe_boot_value(arg)
        if why is not None:
            out.error(_arg_loc(profile, i), "boot-value-unsafe", f"argument {arg!r}: {why}")
    if boot_paths is None or not profile.boot.kernel:
        return
    kernel, *initrds = boot_paths
    for what, value, initrd in (("kernel", kernel, False), *(("initrd", v, True) for v in initrds)):
        why = unsafe_boot_value(value, allow_initrd_name=initrd)
        if why is None and not initrd and _WHITESPACE.search(value):
            why = "it holds white space"
        if why is not None:
            out.error(profile.source, "boot-value-unsafe", f"{what} {value!r}: {why}")


def _arg_loc(profile: Profile, index: int) -> Location:
    if index < len(profile.arg_locations):
        return profile.arg_locations[index]
    return profile.source


def _render_each(
    texts: tuple[str, ...], context: Mapping[str, Any], loc_of: Callable[[int], Location], subject: str, out: _Collector
) -> tuple[str, ...] | None:
    try:
        return template.render_many(texts, context)
    except template.TemplateFailure:
        pass  # render one by one to say which text failed
    for i, text in enumerate(texts):
        try:
            template.render(text, context)
        except template.TemplateFailure as exc:
            out.template_failure(loc_of(i), exc, subject)
    return None
