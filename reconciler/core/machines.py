"""Groups that describe one machine: a group whose only selector is a `mac` becomes a node.

Called by `core.validate` after the nodes and groups are built. A matchbox repository (the seed's
own, matchbox's examples) writes one group per machine, `{"selector": {"mac": ...}}`; such a
group gets everything a `nodes/<name>.yaml` gets: the node template values (`mac`,
`cloud_init_url`, `report_url`, `report_token`), its NoCloud seed, reports and outcomes,
install-once. The node is named after the group id (lowercased, anything but `a-z0-9-` made `-`),
has the group's profile, metadata and site, no labels and no reserved address, and findings about it
point at the group's file. The group itself is then not a repo group any more (its node's
`node.<name>` group selects the same MAC in the rendered data directory).

A group with a `mac` and other selectors stays a group (matchbox matches it only when the other
labels are in the query too), as does a group whose MAC a node file already declares (the node
file is that machine; `crossref` checks that they agree).
"""

from __future__ import annotations

import re

from reconciler.core.build import RESERVED_NODE_PREFIX, valid_node_name
from reconciler.core.collect import Findings
from reconciler.core.model import Group, Node

_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


def node_name(group_id: str) -> str:
    """The node name of a group describing one machine: its id as a DNS label."""
    return _NOT_LABEL.sub("-", group_id.lower()).strip("-")[:63].rstrip("-")


def nodes_of_groups(groups: list[Group], nodes: list[Node], out: Findings) -> tuple[list[Group], list[Node]]:
    """(the groups that stay groups, the nodes the one-machine groups describe)."""
    if not any(len(g.selector) == 1 and "mac" in g.selector for g in groups):
        return sorted(groups, key=lambda g: g.id), []  # no one-machine group: no pass over the nodes
    macs = {node.mac for node in nodes}
    names = {node.name: node for node in nodes}
    kept: list[Group] = []
    made: list[Node] = []
    for group in sorted(groups, key=lambda g: g.id):
        mac = group.selector.get("mac")
        if mac is None or len(group.selector) != 1 or mac in macs:
            kept.append(group)
            continue
        name = node_name(group.id)
        if not valid_node_name(name) or name.startswith(RESERVED_NODE_PREFIX):
            out.report("node-name", group.source,
                       f"group {group.id!r} selects one machine (mac {mac}), which becomes node {name!r}: a node "
                       f"name must be a DNS label not starting with {RESERVED_NODE_PREFIX!r}; rename the group")
            continue
        if name in names:
            other = names[name]
            out.report("duplicate-node", group.source,
                       f"group {group.id!r} selects one machine (mac {mac}), which becomes node {name!r}, "
                       f"the name of node {other.mac} in {other.source.file}")
            continue
        node = Node(name=name, mac=mac, profile=group.profile, hostname=name, metadata=group.metadata,
                    source=group.source, site=group.site)
        names[name] = node
        macs.add(mac)
        made.append(node)
    return kept, made
