"""Building the model's values from parsed documents: site, assets, cloud-init templates,
profiles, groups and nodes, each with the findings its own file gives.

Called by `core.validate` only. A document that fails its schema or its own rules builds no
value; the findings say why, and later stages run on what could be built.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from reconciler.core import assets as manifest
from reconciler.core import schema, secrets, template
from reconciler.core.codes import issue
from reconciler.core.collect import Findings
from reconciler.core.docmemo import BuiltNode, ValidateMemo
from reconciler.core.model import (
    Asset,
    Boot,
    BootFiles,
    CloudInitTemplate,
    Group,
    Issue,
    Location,
    Node,
    Profile,
    RolloutPolicy,
    SecretsFile,
    Site,
    Subnet,
)
from reconciler.core.render import fanout
from reconciler.core.select import normalise_mac
from reconciler.core.snapshot import SITE_FILE, Snapshot, kind_of
from reconciler.core.yamldoc import Document, Path, parse_json, parse_yaml

# Names the renderer writes next to the repo's own (docs/GENERATION.md).
RESERVED_ID_PREFIX = "node."
RESERVED_NODE_PREFIX = "group-"


def stem(path: str) -> str:
    """The file name without its extension: posixpath.splitext(posixpath.basename(path))[0],
    in fewer steps. Not remembered: a cache of every node file's was ~120 bytes a node (issue 25),
    and a one-node commit asks for the changed files' only."""
    name = path[path.rfind("/") + 1:]
    dot = name.rfind(".")
    # (a name that is only dots before its last one has no extension: splitext's rule)
    return name[:dot] if dot > 0 and name[:dot].strip(".") else name


# -- parsing -----------------------------------------------------------------------------------


_TEMPLATES = ("cloud-init", "keyring", "ignition", "generic")  # not parsed here


def parse_all(snapshot: Snapshot, out: Findings, memo: ValidateMemo | None = None) -> dict[str, Document]:
    """Every document of the snapshot parsed (`memo`: what an earlier validation parsed is reused
    for unchanged bytes; when the paths are the same as last time, only changed files are looked at)."""
    since = None
    if memo is not None:
        since, memo.since = memo.since, None
        if since is not None and since[1] is not snapshot.files:
            since = None  # said of another snapshot
    docs = _parse_changed(snapshot.files, out, memo, since) if memo is not None else None
    if docs is None:
        docs = {}
        found: dict[str, tuple[Issue, ...]] = {}
        for path, (doc, issues) in _parsed(snapshot.files, memo):
            out.extend(issues)
            if issues:
                found[path] = tuple(issues)
            if doc is not None:
                docs[path] = doc
        if memo is not None:
            memo.keep_only(snapshot.files)
            kept = snapshot.files if since is not None else dict(snapshot.files)  # (`since`: unchanging)
            memo.last_parse, memo.changed = (kept, docs, found), None
            memo.paths += 1
    if SITE_FILE not in snapshot.files:
        out.report("missing-site", Location(SITE_FILE), "netboot.yaml is required at the repository root")
    return docs


def _parsed(files: Mapping[str, bytes], memo: ValidateMemo | None
            ) -> Iterator[tuple[str, tuple[Document | None, tuple[Issue, ...]]]]:
    """Each document's path and parse, in path order. A first parse (no memo, or one that has
    parsed nothing) goes through the installed walker (`render.fanout`: in the daemon's worker and
    the commands a forked child parses half of a large repository's files, and checks its node
    files' schema ahead, `_check_ahead`); what it parsed comes back as the document's parts."""
    # templates (cloud-init: parsed per node once rendered; ignition, generic: ignition.py), keys: not parsed
    paths = [(p, k) for p in sorted(files) if (k := kind_of(p)) is not None and k not in _TEMPLATES]
    walk = fanout.walker()
    if walk is fanout.one_by_one or (memo is not None and memo.last_parse is not None):
        for path, _ in paths:
            parse = parse_json if path.endswith(".json") else parse_yaml
            yield path, parse(path, files[path]) if memo is None else memo.parse(path, files[path], parse)
        return

    def parse_one(item: tuple[str, str]) -> tuple[Document | None, tuple[Issue, ...]]:
        path, kind = item
        parse = parse_json if path.endswith(".json") else parse_yaml
        doc, issues = parse(path, files[path]) if memo is None else memo.parse(path, files[path], parse)
        if doc is not None and kind == "node":
            _check_ahead(doc, kind)
        return doc, issues

    def capture(item: tuple[str, str], parsed: tuple[Document | None, tuple[Issue, ...]]) -> object:
        doc, issues = parsed
        if doc is None or issues:  # parsed here again: "too deep" depends on the stack, the child's is deeper
            return None
        source = True if doc.source is files[item[0]] else doc.source  # the bytes this process has: not sent
        kind = doc.checked_as
        return doc.data, source, doc.start, None if kind is None else (kind, doc.checked(kind))

    def adopt(item: tuple[str, str], parts: Any) -> tuple[Document | None, tuple[Issue, ...]]:
        if parts is None:
            return parse_one(item)
        path = item[0]
        data, source, start, checked = parts
        doc = Document(path, data, files[path] if source is True else source, start)
        if checked is not None:
            doc.keep_checked(*checked)
        return (doc, ()) if memo is None else memo.parse(path, files[path], lambda p, c: (doc, ()))

    for (path, _), parsed in walk(paths, parse_one, lambda item: True, capture, adopt, lambda parsed: 0, 1 << 62):
        yield path, parsed


def _parse_changed(files: Mapping[str, bytes], out: Findings, memo: ValidateMemo,
                   since: tuple[Mapping[str, bytes], Mapping[str, bytes], tuple[str, ...]] | None = None,
                   ) -> dict[str, Document] | None:
    """`parse_all` of files whose paths are those of the memo's last snapshot: the last documents
    with the changed files' put in (issue 25: the loop over every path cost 0.39 s of a one-node
    commit to 100,000 nodes). None when the paths differ, or a file starts or stops giving a
    document (its place in the documents' path order would change): every path is then parsed.
    `since` (`ValidateMemo.since`), when made against the files parsed last: only its paths are
    looked at, not every path (~1 ms at 10,000 nodes)."""
    if memo.last_parse is None:
        return None
    before, docs_before, found_before = memo.last_parse
    if since is not None and since[0] is before:
        if any((path in files) != (path in before) for path in since[2]):
            return None  # a path added or removed
        changed = [path for path in since[2] if path in files
                   and (content := files[path]) is not before[path] and content != before[path]]
    elif len(files) != len(before) or files.keys() != before.keys():
        return None
    else:
        changed = [path for path, content in files.items() if content is not before[path] and content != before[path]]
    docs, found = dict(docs_before), dict(found_before)
    parsed: list[str] = []
    for path in changed:
        kind = kind_of(path)
        if kind is None or kind in _TEMPLATES:
            continue
        doc, issues = memo.parse(path, files[path], parse_json if path.endswith(".json") else parse_yaml)
        if (doc is None) != (path not in docs):
            return None
        if doc is not None:
            docs[path] = doc
            parsed.append(path)
        if issues:
            found[path] = tuple(issues)
        else:
            found.pop(path, None)
    for issues in found.values():
        out.extend(issues)
    memo.hits += len(docs) - len(parsed)
    memo.last_parse, memo.changed = (files if since is not None else dict(files), docs, found), parsed
    return docs


def _under(docs: Mapping[str, Document], prefix: str) -> list[tuple[str, Document]]:
    """The documents whose paths start with `prefix`. `docs` is `parse_all`'s, in path order
    (both its full pass and its patch of the last documents keep it so): found by bisection,
    without a look at each of the 100,000 node files of a large repository."""
    paths = list(docs)
    start = bisect.bisect_left(paths, prefix)
    end = bisect.bisect_left(paths, prefix[:-1] + chr(ord(prefix[-1]) + 1), start)  # "groups0": past "groups/..."
    return [(path, docs[path]) for path in paths[start:end]]


def _schema_ok(doc: Document, kind: str, out: Findings) -> bool:
    # kept on the document (only a mapping's are): one a ValidateMemo keeps is not checked again,
    # nor is its value looked at (a thinned one's is no longer all of it: `Document.thin`)
    issues = doc.checked(kind)
    if issues is None:
        if not isinstance(doc.data, dict):
            out.report("schema", doc.loc(), f"(document): expected a mapping, found {schema.describe_value(doc.data)}")
            return False
        issues = _check_ahead(doc, kind)
    out.extend(issues)
    return not any(i.is_error for i in issues)


def _check_ahead(doc: Document, kind: str) -> tuple[Issue, ...]:
    """The schema findings of `doc` (a mapping) as a document of `kind`, kept on it (`_schema_ok`
    reports them; `_parsed` checks node files as it parses them, in whichever process does)."""
    issues = doc.checked(kind)
    if issues is None and isinstance(doc.data, dict):
        # matchbox's own JSON files: a field its format does not have is ignored there, so a warning here.
        unknown = "matchbox-unknown-field" if doc.loc().file.endswith(".json") else "schema"
        issues = schema.check(doc, kind, unknown)
        doc.keep_checked(kind, issues)
    return issues or ()


# -- building values ---------------------------------------------------------------------------


# Integer fields go through int(): JSON Schema counts 600.0 as an integer, and written as is it
# broke dhcpd ("default-lease-time 600.0;"), Kea and dnsmasq, and URLs (":8080.0").


def sites(doc: Document | None, out: Findings) -> dict[str, Site]:
    """netboot.yaml's sites by name: {"": the one site} when it declares no `sites:`; else one per
    entry of `sites:`, that entry merged over the file's own keys (`merged`). Empty when the file
    fails its schema; a site whose merged settings fail is left out (its findings say why)."""
    if doc is None or not _schema_ok(doc, "site", out):
        return {}
    data: dict[str, Any] = doc.data
    if "sites" not in data:
        built = _site(data, doc.loc, "", out)
        return {"": built} if built is not None else {}
    shared = {key: value for key, value in data.items() if key != "sites"}
    found: dict[str, Site] = {}
    for name, own in data["sites"].items():
        loc = _site_locator(doc, name, own)
        merged_data = merged(shared, own)
        if "address" not in merged_data.get("server", {}):
            out.report("site-no-server", loc(("server",)),
                       f"site {name!r}: server.address is not set (in sites.{name}.server or in the shared server)")
            continue
        built = _site(merged_data, loc, name, out)
        if built is not None:
            found[name] = built
    return found


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged over `base`: mappings key by key, anything else (lists, values) replaced."""
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        out[key] = merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return out


def _site_locator(doc: Document, name: str, own: Mapping[str, Any]) -> Callable[[Path], Location]:
    """Where a merged site's value was written: under `sites.<name>` when the site sets it, else
    in the shared keys it inherits."""
    def loc(path: Path) -> Location:
        if _holds(own, path):
            return doc.loc(("sites", name, *path))
        return doc.loc(path) if path and path[0] in doc.data else doc.loc(("sites", name))
    return loc


def _holds(data: Any, path: Path) -> bool:
    """Whether `data` has a value at `path`."""
    for part in path:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not in_list and not (isinstance(data, Mapping) and part in data):
            return False
        data = data[part]
    return True


def _site(data: Mapping[str, Any], loc: Callable[[Path], Location], name: str, out: Findings) -> Site | None:
    server = data["server"]
    dhcp = data.get("dhcp", {})
    subnets: list[Subnet] = []
    for i, raw in enumerate(dhcp.get("subnets", [])):
        subnet_loc = loc(("dhcp", "subnets", i, "subnet"))
        try:
            network = IPv4Network(raw["subnet"], strict=True)
        except ValueError as exc:
            try:
                network = IPv4Network(raw["subnet"], strict=False)
            except ValueError:
                out.report("subnet-invalid", subnet_loc, f"dhcp.subnets[{i}].subnet: {exc}")
                continue
            # Host bits set: name the network meant, and check the rest against it.
            out.report("subnet-invalid", subnet_loc, f"dhcp.subnets[{i}].subnet: {exc}; did you mean {network}?")
        pool = None
        if "pool" in raw:
            start, end = (IPv4Address(a) for a in raw["pool"])
            pool = (start, end)
            pool_loc = loc(("dhcp", "subnets", i, "pool"))
            if start > end:
                out.report("pool-order", pool_loc, f"pool {start} - {end}: the first address is after the last")
            if start not in network or end not in network:
                out.report("pool-outside-subnet", pool_loc, f"pool {start} - {end} is not inside {network}")
            elif start == network.network_address or end == network.broadcast_address:
                out.report("pool-outside-subnet", pool_loc, "the pool holds the network or broadcast address")
            _check_pool_holds_no_host(pool, pool_loc, server["address"], raw, out)
        if raw.get("lease_time", 600) > raw.get("max_lease_time", 7200):
            out.report(
                "lease-time",
                loc(("dhcp", "subnets", i, "lease_time")),
                "lease_time is longer than max_lease_time",
            )
        for key in ("routers",):
            for j, addr in enumerate(raw.get(key, [])):
                if IPv4Address(addr) not in network:
                    out.report(
                        "router-outside-subnet",
                        loc(("dhcp", "subnets", i, key, j)),
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
                source=loc(("dhcp", "subnets", i)),
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
            uefi_ia32=files.get("uefi_ia32", defaults.uefi_ia32),
            shim_x64=files.get("shim_x64", defaults.shim_x64),
            grub_x64=files.get("grub_x64", defaults.grub_x64),
        ),
        source=loc(()),
        secure_boot=bool(data.get("secure_boot", False)),
        rollout=_rollout(data["rollout"]) if "rollout" in data else None,
        name=name,
    )


def _rollout(data: Mapping[str, Any]) -> RolloutPolicy:
    return RolloutPolicy(max_in_flight=int(data.get("max_in_flight", 1)),
                         on_failure="continue" if data.get("on_failure") == "continue" else "pause",
                         power=data.get("power") is True, reinstall_on_change=data.get("reinstall_on_change") is True)


def _check_pool_holds_no_host(
    pool: tuple[IPv4Address, IPv4Address], loc: Location, server: str, raw: Mapping[str, Any], out: Findings
) -> None:
    """The pool must not hold an address a host already uses: a DHCP server leases it to the next
    machine that asks (ours, Kea and dnsmasq do not ping first), and two hosts share it."""
    hosts = [("server.address", server)]
    hosts += [("router", a) for a in raw.get("routers", [])] + [("DNS server", a) for a in raw.get("dns_servers", [])]
    for what, addr in hosts:
        if pool[0] <= IPv4Address(addr) <= pool[1]:
            out.report("pool-holds-host", loc, f"pool {pool[0]} - {pool[1]} holds the {what} {addr}: "
                      "it would be leased to a machine; start or end the pool past it")


def assets(doc: Document | None, files: Mapping[str, bytes], out: Findings) -> tuple[Asset, ...] | None:
    if doc is None:
        return None
    if not _schema_ok(doc, "assets", out):
        return None  # its own errors say what is wrong; listing nothing would flag every asset
    assets: list[Asset] = []
    seen: dict[str, Location] = {}
    for i, raw in enumerate(doc.data["assets"]):
        loc = doc.loc(("assets", i))
        if raw["path"] in seen:
            first = seen[raw["path"]].line
            out.report("duplicate-asset", loc, f"{raw['path']} is listed twice (first at line {first})")
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


def secrets_file(doc: Document | None, out: Findings) -> SecretsFile | None:
    if doc is None or not _schema_ok(doc, "secrets", out):
        return None
    return secrets.parse(doc, out)


def cloud_init(snapshot: Snapshot, out: Findings) -> dict[str, CloudInitTemplate]:
    templates: dict[str, CloudInitTemplate] = {}
    for path in sorted(p for p in snapshot.files if p.startswith("cloud-init/")):
        if kind_of(path) != "cloud-init":
            continue
        name = stem(path)
        loc = Location(path, 1, 1)
        try:
            text = snapshot.files[path].decode("utf-8")
        except UnicodeDecodeError as exc:
            out.report("encoding", loc, f"not UTF-8: {exc.reason}")
            continue
        if name in templates:
            out.report(
                "duplicate-cloud-init", loc, f"cloud-init template {name!r} is also {templates[name].source.file}"
            )
            continue
        compiled = template.compile_template(text)
        if compiled.error is not None:
            out.report("template-syntax", Location(path, compiled.error.line, 0), compiled.error.message)
            continue
        templates[name] = CloudInitTemplate(name, text, loc)
    return templates


def profiles(docs: Mapping[str, Document], out: Findings) -> dict[str, Profile]:
    """The profiles of `parse_all`'s documents (in path order)."""
    profiles: dict[str, Profile] = {}
    for path, doc in _under(docs, "profiles/"):
        if kind_of(path) != "profile":
            continue
        is_json = path.endswith(".json")
        if not _schema_ok(doc, "profile-matchbox" if is_json else "profile", out):
            continue
        data = doc.data
        pid = stem(path)
        if "id" in data and data["id"] != pid:
            # Still built (under its file name, as matchbox looks profiles up) and checked for
            # the rest: one pass reports everything, and the commit is invalid already.
            out.report("profile-id-mismatch", doc.loc(("id",)), f"id {data['id']!r} differs from the file name {pid!r}")
        if pid.startswith(RESERVED_ID_PREFIX):
            out.report("reserved-id", doc.loc(), _reserved_id_message("profile", pid))
        if pid in profiles:
            out.report("duplicate-profile", doc.loc(), f"profile {pid!r} is also {profiles[pid].source.file}")
            continue
        boot = data.get("boot", {})
        args = tuple(boot.get("args", []))
        if is_json and data.get("cloud_id"):
            out.report(
                "matchbox-cloud-id",
                doc.loc(("cloud_id",)),
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
            secure_boot=data.get("secure_boot"),
        )
    return profiles


def groups(docs: Mapping[str, Document], out: Findings) -> list[Group]:
    """The groups of `parse_all`'s documents (in path order)."""
    groups: dict[str, Group] = {}
    for path, doc in _under(docs, "groups/"):
        if kind_of(path) != "group" or not _schema_ok(doc, "group", out):
            continue
        data = doc.data
        # matchbox reads a group's id from inside the file (storage/filestore.go GroupList ->
        # storagepb.ParseGroup); the file name is only where it is kept.
        gid = data.get("id") or stem(path)
        if gid != stem(path):
            out.report("group-id-differs", doc.loc(("id",)),
                       f"group id {gid!r} (inside the file, as matchbox reads it) differs from the file name "
                       f"{stem(path)!r}: the group is {gid!r}")
        if gid.startswith(RESERVED_ID_PREFIX):
            out.report("reserved-id", doc.loc(), _reserved_id_message("group", gid))
            continue
        if gid in groups:
            out.report("duplicate-group", doc.loc(), f"group {gid!r} is also {groups[gid].source.file}")
            continue
        selector: dict[str, str] = {}
        invalid = False
        for key, value in data.get("selector", {}).items():
            if key.lower() != "mac":
                selector[key] = value
                continue
            # `mac` in any case, normalised as matchbox's Group.Normalize does; kept as `mac`, the
            # key every iPXE bootstrap sends (`mac=${mac:hexhyp}`)
            mac = normalise_mac(value)
            if mac is None:
                out.report("mac-invalid", doc.loc(("selector", key)), f"selector.{key} {value!r} is not a MAC address")
                invalid = True
                continue
            selector["mac"] = mac
        if invalid:
            continue
        groups[gid] = Group(
            id=gid,
            name=data.get("name", gid),
            profile=sys.intern(data["profile"]) if type(data["profile"]) is str else data["profile"],
            selector=selector,
            metadata=data.get("metadata", {}),
            source=doc.loc(),
            site=data.get("site"),
        )
    return list(groups.values())


def nodes(docs: Mapping[str, Document], out: Findings, memo: ValidateMemo | None = None) -> list[Node]:
    """The node files' Nodes, of `parse_all`'s documents (in path order). `memo`: a file whose
    Document it kept gives the Node built last time, the same object, and the same findings; when
    `parse_all` knows which files changed and each changed node file stays a node of its own name,
    only those are looked at."""
    if memo is not None:
        patched = _nodes_changed(docs, out, memo)
        if patched is not None:
            return patched
    nodes: dict[str, Node] = {}
    found: dict[str, tuple[Issue, ...]] = {}
    names: dict[str, int] = {}
    for path, doc in _under(docs, "nodes/"):  # (the node files: the only documents under nodes/, kind_of)
        before, reaches, node, after = node_of(path, doc) if memo is None else memo.node(path, doc, node_of)
        emitted = list(before)
        name = stem(path)
        names[name] = names.get(name, 0) + 1
        if reaches and name in nodes:
            emitted.append(issue("duplicate-node", doc.loc(),
                                 f"node {name!r} is also defined in {nodes[name].source.file}"))
        elif reaches:
            emitted += after
            if node is not None:
                nodes[name] = node
        out.extend(emitted)
        if emitted:
            found[path] = tuple(emitted)
    built = list(nodes.values())
    if memo is not None:  # a copy: the caller adds to its list
        memo.last_nodes = (list(built), {node.name: i for i, node in enumerate(built) if names[node.name] == 1}, found)
    return built


def _nodes_changed(docs: Mapping[str, Document], out: Findings, memo: ValidateMemo) -> list[Node] | None:
    """`nodes` from the last outcome, when every node file `parse_all` parsed anew built a node
    before and builds one now, and is the only file of its name: the node takes the old one's
    place. None otherwise (every node file is then looked at)."""
    if memo.changed is None or memo.last_nodes is None:
        return None
    built, places, found_before = memo.last_nodes
    changed = [path for path in memo.changed if kind_of(path) == "node"]
    if not changed:
        for issues in found_before.values():
            out.extend(issues)
        return list(built)  # a copy: the caller adds to its list
    built, found = list(built), dict(found_before)
    for path in changed:
        name = stem(path)
        last = memo.built(path)
        if name not in places or last is None or not last[1] or last[2] is None:
            return None
        before, reaches, node, after = memo.node(path, docs[path], node_of)
        if not reaches or node is None:
            return None
        built[places[name]] = node
        if before or after:
            found[path] = (*before, *after)
        else:
            found.pop(path, None)
    for issues in found.values():
        out.extend(issues)
    memo.last_nodes = (built, places, found)
    return list(built)


def node_of(path: str, doc: Document) -> BuiltNode:
    """What one node file gives on its own, whatever the other files say (`docmemo.BuiltNode`)."""
    name = stem(path)
    found = Findings()
    if not valid_node_name(name):
        found.report("node-name", doc.loc(), f"node name {name!r} (the file name) must be a DNS label: a-z, 0-9, '-'")
        return tuple(found.issues), False, None, ()
    if name.startswith(RESERVED_NODE_PREFIX):
        found.report(
            "reserved-name",
            doc.loc(),
            f"node name {name!r}: names starting with {RESERVED_NODE_PREFIX!r} are reserved for the "
            "rendered files of repo groups (ipxe/group-<id>.ipxe)",
        )
        return tuple(found.issues), False, None, ()
    if not _schema_ok(doc, "node", found):
        return tuple(found.issues), False, None, ()
    before = tuple(found.issues)
    after = Findings()
    data = doc.data
    mac = normalise_mac(data["mac"])
    if mac is None:  # the schema pattern admits only MACs; kept for safety
        after.report("mac-invalid", doc.loc(("mac",)), f"{data['mac']!r} is not a MAC address")
        return before, True, None, tuple(after.issues)
    return before, True, Node(
        name=name,
        mac=mac,
        profile=sys.intern(data["profile"]) if type(data["profile"]) is str else data["profile"],
        hostname=data.get("hostname", name),
        ip=IPv4Address(data["ip"]) if "ip" in data else None,
        labels=_labels(data.get("labels", {})),
        metadata=data.get("metadata", {}),
        reinstall=int(data.get("reinstall", 0)),
        source=doc.loc(),
        site=data.get("site"),
    ), ()


def _labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """The document's own dict (a Node is never changed, nor is a parsed document): the validation
    memo keeps both, and a copy per node was ~18 MB of the worker at 100,000 nodes."""
    return labels if type(labels) is dict else dict(labels)


def _reserved_id_message(kind: str, ident: str) -> str:
    return (
        f"{kind} id {ident!r}: ids starting with {RESERVED_ID_PREFIX!r} are reserved for the per-node "
        "matchbox groups and profiles the renderer writes (groups/node.<name>.json)"
    )


def valid_node_name(name: str) -> bool:
    return re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name) is not None

