"""Cross-reference checks: what the built values say about each other.

Called by `core.validate` after `core.build`: references to profiles and cloud-init templates,
groups against nodes (ambiguity, conflicts, one default per site), nodes against each other and
against their site's subnets, a site's subnets against each other (across sites: `core.sites`).
"""

from __future__ import annotations

import difflib
import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address

from reconciler.core.codes import issue
from reconciler.core.collect import Findings
from reconciler.core.docmemo import CrossMemo
from reconciler.core.locate import Locator
from reconciler.core.model import Group, Issue, Node, Profile, Site
from reconciler.core.places import moved
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
    groups: list[Group], profiles: Mapping[str, object], nodes: Sequence[Node], where: Locator, out: Findings,
    memo: CrossMemo | None = None,
) -> None:
    """One default group per site, profiles named; each node against the groups selecting it
    (`memo`: a node checked at an earlier validation against the same groups is not checked again)."""
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
    if memo is None:
        for node in nodes:
            out.extend(_selected(node, selecting, where))
        return
    # the groups' locations come from their documents: a kept document is the same object
    key = [(g, where.document(g.source.file)) for g in groups]
    last = memo.groups_key
    if last is None or len(key) != len(last) or \
            any(a[0] != b[0] or a[1] is not b[1] for a, b in zip(key, last, strict=True)):
        memo.groups_key, memo.grouped, memo.grouped_listed = key, {}, None
    # (the nodes `grouped` was made for are `check_nodes`' of the last validation while both were
    # made for the same tuple: its id dict serves both, not one each, issue 25: ~60 bytes a node)
    went: list[Node]
    came: list[Node]
    if memo.grouped_listed is not None and memo.grouped_listed is memo.listed:
        moved = _moved(memo.listed, nodes, memo.nodes)
        if moved is None:
            current = {id(node): node for node in nodes}
            went = [memo.nodes[i] for i in memo.nodes if i not in current]
            came = [node for i, node in current.items() if i not in memo.nodes]
        else:
            went, came = moved
    else:
        memo.grouped, went, came = {}, [], list({id(node): node for node in nodes}.values())
    memo.grouped_listed = None  # until `grouped` is that of `nodes`
    for node in went:
        memo.grouped.pop(id(node), None)
    for node in came:
        found = _selected(node, selecting, where)
        if found:
            memo.grouped[id(node)] = found
    memo.grouped_listed = tuple(nodes)  # validation's tuple itself: check_nodes keeps the same (core.places)
    for found in memo.grouped.values():
        out.extend(found)


def _selected(node: Node, selecting: SelectorIndex, where: Locator) -> tuple[Issue, ...]:
    """A node against the groups that select it: a group naming another profile, groups tied."""
    out = Findings()
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
    return tuple(out.issues)


Unique = str | IPv4Address  # a value no two nodes may share (`_unique_values`)
_UNIQUE = (("mac", "duplicate-mac"), ("ip", "duplicate-ip"), ("hostname", "duplicate-hostname"))


def _unique_values(node: Node) -> list[tuple[str, Unique]]:
    """(field, value) of what no two nodes may share. A hostname already in lower case is the
    node's own string, an address the node's own IPv4Address (equal exactly when their texts
    are, and written as that text): the memo's index keeps one value per node and field, and a
    text of each address was ~6 MB of the worker at 100,000 nodes."""
    hostname = node.hostname.lower()
    values: list[tuple[str, Unique | None]] = [
        ("mac", node.mac), ("ip", node.ip), ("hostname", node.hostname if hostname == node.hostname else hostname)]
    return [(key, value) for key, value in values if value is not None]


def _hold(index: dict[Unique, Node | list[Node]], value: Unique, node: Node) -> None:
    """File `node` under `value` in one field's index of the memo (`CrossMemo.holders`): the node
    itself while it is the only holder, a list from the second on (issue 25: a list and a key
    tuple per node and field were ~45 MB of the worker at 100,000 nodes)."""
    held = index.get(value)
    if held is None:
        index[value] = node
    elif isinstance(held, list):
        held.append(node)
    else:
        index[value] = [held, node]


def _drop(index: dict[Unique, Node | list[Node]], value: Unique, node: Node) -> None:
    """Take `node` out from under `value` (`_hold`); a value nobody holds leaves the index."""
    held = index[value]
    if not isinstance(held, list):
        del index[value]
        return
    del held[next(at for at, other in enumerate(held) if other is node)]
    if not held:
        del index[value]


def _duplicate(node: Node, key: str, value: Unique, other: Node, where: Locator) -> Issue:
    code = dict(_UNIQUE)[key]
    return issue(code, where.field(node.source, key),
                 f"{key} {value} of node {node.name!r} is also used by node {other.name!r} ({other.source.file})")


def check_nodes(
    nodes: Sequence[Node], profiles: Mapping[str, object], sites: Mapping[str, Site], where: Locator, out: Findings,
    memo: CrossMemo | None = None,
) -> None:
    """Profiles named, addresses and names unique across the repository (every site), a fixed
    ip inside its own site's subnets (`sites` by name, "" for a repository without sites).
    `memo`: what an earlier validation found for the same Node objects is reused while the
    profile names and sites are the same, and the duplicates come from an index updated by the
    nodes that came and went (issue 25); the findings are the same as without it."""
    if memo is not None and _check_nodes_reusing(nodes, profiles, sites, where, out, memo):
        return
    seen: dict[str, dict[Unique, Node]] = {"mac": {}, "ip": {}, "hostname": {}}
    for node in sorted(nodes, key=lambda n: n.source.file):
        out.extend(_own(node, profiles, sites, where))
        for key, value in _unique_values(node):
            other = seen[key].get(value)
            if other is not None:
                out.add(_duplicate(node, key, value, other, where))
            else:
                seen[key][value] = node


def _check_nodes_reusing(nodes: Sequence[Node], profiles: Mapping[str, object], sites: Mapping[str, Site],
                         where: Locator, out: Findings, memo: CrossMemo) -> bool:
    """`check_nodes` with `memo`; False (the memo emptied) when two nodes from one file hold the
    same value: which of them is first then depends on their order in `nodes`, which the index
    does not keep (looked for among the holders of the values that changed: no count of each
    file's nodes, issue 25)."""
    moved = _moved(memo.listed, nodes, memo.nodes)
    if moved is None:
        current = {id(node): node for node in nodes}
        if len(current) != len(nodes):
            memo.reset()
            return False
        went = [memo.nodes[i] for i in memo.nodes if i not in current]
        came = [node for i, node in current.items() if i not in memo.nodes]
    else:
        went, came = moved
    memo.listed = None  # until the index is updated to `nodes`
    key = (frozenset(profiles), dict(sites))
    if key != memo.key:
        memo.key, memo.own = key, {}
        for i, node in memo.nodes.items():
            found = _own(node, profiles, sites, where)
            if found:
                memo.own[i] = found
    touched: set[tuple[str, Unique]] = set()
    for node in went:
        i = id(node)
        del memo.nodes[i]
        memo.own.pop(i, None)
        memo.dups.pop(i, None)
        for pair in _unique_values(node):
            _drop(memo.holders[pair[0]], pair[1], node)
            touched.add(pair)
    added = came
    for node in added:
        memo.nodes[id(node)] = node
        found = _own(node, profiles, sites, where)
        if found:
            memo.own[id(node)] = found
        for pair in _unique_values(node):
            _hold(memo.holders.setdefault(pair[0], {}), pair[1], node)
            touched.add(pair)
    for pair in touched:
        held = memo.holders[pair[0]].get(pair[1])
        if held is None:
            continue
        holders = held if isinstance(held, list) else [held]
        holders.sort(key=lambda n: n.source.file)
        if len(holders) > 1 and any(a.source.file == b.source.file for a, b in itertools.pairwise(holders)):
            memo.reset()  # (a value no two holders of one file held before: else the memo was emptied then)
            return False
        first = holders[0]
        for node in holders:
            dups = memo.dups.get(id(node))
            if node is first:
                if dups is not None:
                    dups.pop(pair[0], None)
                    if not dups:
                        del memo.dups[id(node)]
            else:
                memo.dups.setdefault(id(node), {})[pair[0]] = _duplicate(node, pair[0], pair[1], first, where)
    for found in memo.own.values():
        out.extend(found)
    for dups in memo.dups.values():
        out.extend(dups.values())
    memo.listed = tuple(nodes)
    return True


def _moved(before: Sequence[Node] | None, nodes: Sequence[Node],
           held: Mapping[int, Node]) -> tuple[list[Node], list[Node]] | None:
    """The nodes that left `held` (by id: the nodes of `before`, the last validation's list) and
    those that came, found by comparing the two lists place by place (issue 25: no dict of every
    node per commit; `check_groups` and `check_nodes` compare the same two tuples, once: core.places);
    None when that cannot say (another length, or a node twice in `nodes`)."""
    if before is None or len(before) != len(nodes):
        return None
    places = moved(before, nodes)
    if not places:
        return [], []
    left = {id(before[i]): before[i] for i in places}
    arrived = {id(nodes[i]): nodes[i] for i in places}
    if len(arrived) != len(places):
        return None  # one object in two places
    went = [node for i, node in left.items() if i not in arrived]
    came = [node for i, node in arrived.items() if i not in left]
    if any(id(node) in held for node in came):
        return None  # also at a place where it was before: twice in `nodes`
    return went, came


def _own(node: Node, profiles: Mapping[str, object], sites: Mapping[str, Site], where: Locator) -> tuple[Issue, ...]:
    """A node's findings of its own: its profile, its hostname to dnsmasq, its ip in its site."""
    out = Findings()
    if node.profile not in profiles:
        out.report(
            "ref-profile",
            where.field(node.source, "profile"),
            f"node {node.name!r} names profile {node.profile!r}, which does not exist"
            + _suggest(node.profile, profiles),
        )
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
    return tuple(out.issues)


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

