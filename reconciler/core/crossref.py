"""Cross-reference checks: what the built values say about each other.

Called by `core.validate` after `core.build`: references to profiles and cloud-init templates,
groups against nodes (ambiguity, conflicts, one default per site), nodes against each other and
against their site's subnets, a site's subnets against each other (across sites: `core.sites`).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Mapping

from reconciler.core.collect import Findings
from reconciler.core.locate import Locator
from reconciler.core.model import Group, Node, Profile, Site
from reconciler.core.render import dnsmasq
from reconciler.core.select import SelectorIndex


def check_profile_refs(
    profiles: Mapping[str, Profile], cloud_init: Mapping[str, object], where: Locator, out: Findings
) -> None:
    for profile in profiles.values():
        if profile.cloud_init is not None and profile.cloud_init not in cloud_init:
            out.report(
                "ref-cloud-init",
                where.field(profile.source, "cloud_init"),
                f"profile {profile.id!r} names cloud-init {profile.cloud_init!r}, "
                f"but cloud-init/{profile.cloud_init}.yaml does not exist",
            )


def check_groups(
    groups: list[Group], profiles: Mapping[str, object], nodes: list[Node], where: Locator, out: Findings
) -> None:
    defaults = sorted((g for g in groups if g.is_default), key=lambda g: g.id)
    for i, extra in enumerate(defaults):
        # with sites, one default per site: defaults kept to different sites (`site:`) do not meet
        clash = next((d for d in defaults[:i] if d.site is None or extra.site is None or d.site == extra.site), None)
        if clash is not None:
            out.report(
                "duplicate-default-group",
                extra.source,
                f"group {extra.id!r} has no selector, like {clash.id!r}: only one default group"
                + (" per site" if clash.site or extra.site else ""),
            )
    for group in groups:
        if group.profile not in profiles:
            out.report(
                "ref-profile",
                where.field(group.source, "profile"),
                f"group {group.id!r} names profile {group.profile!r}, which does not exist"
                + _suggest(group.profile, profiles),
            )
    selecting = SelectorIndex([g for g in groups if not g.is_default])
    for node in nodes:
        labels = {**node.labels, "mac": node.mac}
        hits = [g for g in selecting.matching(labels) if g.site is None or g.site == node.site]
        by_count: dict[int, list[Group]] = defaultdict(list)
        for g in hits:
            by_count[len(g.selector)].append(g)
            if g.profile != node.profile:
                out.report(
                    "group-conflicts-node",
                    where.field(g.source, "profile"),
                    f"group {g.id!r} selects node {node.name!r} ({node.source.file}) with profile {g.profile!r}, "
                    f"but the node names profile {node.profile!r}",
                )
        for count, tied in by_count.items():
            if len(tied) > 1 and len({g.profile for g in tied}) > 1:
                ids = ", ".join(sorted(g.id for g in tied))
                first = min(tied, key=lambda g: g.source.file)
                out.report(
                    "group-ambiguous",
                    where.field(first.source, "selector"),
                    f"groups {ids} all have {count} selector(s) and all match node {node.name!r}: "
                    "matchbox would pick one silently",
                )


def check_nodes(
    nodes: list[Node], profiles: Mapping[str, object], sites: Mapping[str, Site], where: Locator, out: Findings
) -> None:
    """Profiles named, addresses and names unique across the repository (every site), a fixed
    ip inside its own site's subnets (`sites` by name, "" for a repository without sites)."""
    seen: dict[str, dict[str, Node]] = {"mac": {}, "ip": {}, "hostname": {}}
    for node in sorted(nodes, key=lambda n: n.source.file):
        if node.profile not in profiles:
            out.report(
                "ref-profile",
                where.field(node.source, "profile"),
                f"node {node.name!r} names profile {node.profile!r}, which does not exist"
                + _suggest(node.profile, profiles),
            )
        for key, code, value in (
            ("mac", "duplicate-mac", node.mac),
            ("ip", "duplicate-ip", str(node.ip) if node.ip else None),
            ("hostname", "duplicate-hostname", node.hostname.lower()),
        ):
            if value is None:
                continue
            other = seen[key].get(value)
            if other is not None:
                out.report(
                    code,
                    where.field(node.source, key),
                    f"{key} {value} of node {node.name!r} is also used by node {other.name!r} ({other.source.file})",
                )
            else:
                seen[key][value] = node
        if dnsmasq.reads_as_keyword(node.hostname):
            out.report(
                "dnsmasq-hostname",
                where.field(node.source, "hostname"),
                f"hostname {node.hostname!r} of node {node.name!r} reads to dnsmasq as a keyword or lease time: "
                "dnsmasq.conf gives the machine no name (set `hostname:` to a name with a letter)",
            )
        site = sites.get(node.site or "")
        if site is not None and node.ip is not None:
            subnet = site.subnet_for(node.ip)
            if subnet is None:
                declared = ", ".join(str(s.network) for s in site.subnets) or "none"
                at = f" of site {site.name!r}" if site.name else ""
                elsewhere = next((o.name for o in sites.values() if o is not site and o.subnet_for(node.ip)), None)
                hint = f"; it is in a subnet of site {elsewhere!r}" if elsewhere else ""
                out.report(
                    "ip-outside-subnet",
                    where.field(node.source, "ip"),
                    f"ip {node.ip} of node {node.name!r} is in no declared subnet{at} (declared: {declared}){hint}",
                )
            elif node.ip == site.server_address or node.ip in subnet.routers:
                what = "server.address" if node.ip == site.server_address else "a router"
                out.report(
                    "ip-conflict",
                    where.field(node.source, "ip"),
                    f"ip {node.ip} of node {node.name!r} is {what} in netboot.yaml: two hosts would answer it",
                )
            elif subnet.in_pool(node.ip):
                assert subnet.pool is not None
                out.report(
                    "ip-in-pool",
                    where.field(node.source, "ip"),
                    f"ip {node.ip} of node {node.name!r} is inside the pool "
                    f"{subnet.pool[0]} - {subnet.pool[1]}: "
                    "it could be leased to another machine",
                )
            elif node.ip in (subnet.network.network_address, subnet.network.broadcast_address):
                out.report(
                    "ip-outside-subnet",
                    where.field(node.source, "ip"),
                    f"ip {node.ip} is the network or broadcast address of {subnet.network}",
                )


def check_subnets(site: Site, out: Findings) -> None:
    for i, a in enumerate(site.subnets):
        for b in site.subnets[i + 1 :]:
            if a.network.overlaps(b.network):
                out.report("subnet-overlap", b.source, f"subnet {b.network} overlaps {a.network}")


def _suggest(name: str, known: Mapping[str, object]) -> str:
    """' (did you mean ...?)': the nearest names by spelling, else those holding the name (or held
    by it) in any case; else the names there are."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=2)
    if not close:
        folded = name.lower()
        close = [k for k in names if folded and (folded in k.lower() or k.lower() in folded)][:3]
    if close:
        return f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    if names:
        more = f", ... ({len(names)} in all)" if len(names) > 5 else ""
        return f" (profiles: {', '.join(names[:5])}{more})"
    return " (there are no profiles)"

