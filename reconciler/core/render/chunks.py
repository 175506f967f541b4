"""Each node's part of a site-wide DHCP config, rendered once per node and kept (issue 25).

Called by `render.dhcpd`, `render.kea` and `render.dnsmasq`; the cache is the render memo's
(`reuse.NodeMemo.chunks`), so a one-node commit renders one node's host lines and joins the rest
(at 100,000 nodes Kea's json.dumps alone took 2 s). A chunk is a function of its key only (the
format, the node's name, MAC, hostname and address, and the format's own layout argument), so a
kept one is right whatever else changed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Sequence

from reconciler.core.model import Node

Chunks = dict[tuple[Hashable, ...], str]
_NAME = operator.attrgetter("name")


def by_name(nodes: Sequence[Node]) -> list[Node]:
    """The nodes sorted by name (what the configs list them by; fast when they already are)."""
    return sorted(nodes, key=_NAME)


def per_node(cache: Chunks | None, kind: Hashable, nodes: Sequence[Node], render: Callable[[Node], str]) -> list[str]:
    """`render(node)` for each node, in order, taken from `cache` where it was rendered before."""
    if cache is None:
        return [render(node) for node in nodes]
    out = []
    for node in nodes:
        # The address as an int: hashing and unpickling an IPv4Address run Python code.
        key = (kind, node.name, node.mac, node.hostname, None if node.ip is None else int(node.ip))
        text = cache.get(key)
        if text is None:
            text = cache[key] = render(node)
        out.append(text)
    return out


def prune(cache: Chunks, nodes: int, kinds: int) -> None:
    """Bound the cache: once it holds twice what the site needs, start again (renamed and edited
    nodes leave chunks nothing asks for; the next commit renders every node's once)."""
    if len(cache) > 2 * nodes * kinds + 64:
        cache.clear()
