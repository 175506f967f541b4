"""The last generation a render memo made, and the next one made from it by rendering only what
changed (issue 25: at 100,000 nodes, walking every node, copying ~500,000 entries into a new dict,
sorting it and joining the DHCP configs cost ~2 s of every one-node commit).

Called by `render_generation` when it has a memo and a stand-in revision (`render.reuse`). The
patched generation is the one the full loop makes, entry for entry: a node is taken as it was when
it is the very Node object of the last generation and its profile's shared digest (`reuse`) is
unchanged (then its entries are what `render_node_reusing` would hand back), and every other node
is rendered as the full loop renders it. When the commit adds, removes or renames a node or a
file, changes what a node's files are called, or passes the generation's size bound, None: the
caller runs the full loop (it also names the node at which the bound is passed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.core.model import Node
from reconciler.core.places import moved
from reconciler.core.render.files import Copy, Entry, entry_size


@dataclass(frozen=True)
class Last:
    """What a patch needs of the last generation. `entries` is the generation's own dict, never
    mutated (copied before a patch); `nodes` and `sizes` are this Last's alone, and a patch
    updates them in place for the Last it makes (the one before it is then dropped)."""

    sentinel: str
    site_key: bytes
    shared: Mapping[str, bytes | None]  # profile id -> its nodes' shared digest (None: not kept)
    nodes: dict[str, Node]  # name -> the Node rendered
    sizes: dict[str, int]  # name -> the size of its files
    paths: Mapping[str, tuple[str, ...]]  # name -> its files' paths
    others: frozenset[str]  # the paths of the files that are no node's own
    dhcp: tuple[object, Mapping[str, Entry]]  # what the DHCP configs were rendered from, and them
    entries: Mapping[str, Entry]  # the whole generation as stored, in path order
    node_bytes: int  # sum of `sizes`
    kept: tuple[int, int]  # the memo's entries and chunks once made: a memo cleared since is not patched
    listed: Sequence[Node] = ()  # the nodes rendered, in name order (the state's tuple itself when it was so)
    # `entries` copied ahead (`copy_ahead`), for the next patch to fill instead of copying then.
    ahead: list[Copy] = field(default_factory=list, compare=False, repr=False)

    def copy_ahead(self) -> None:
        """Copy `entries` now, off the next commit's path (the daemon's worker, once a result is
        sent: 10,000 nodes, ~1.5 ms of each one-node commit's render; the daemon does the same
        with its own, `RenderedFiles.copy_entries`). Costs a dict of the generation's size until
        the next patch takes it."""
        if not self.ahead:
            self.ahead.append(Copy(self.entries, dict(self.entries)))

    def _entries_copy(self) -> dict[str, Entry]:
        copy = self.ahead.pop() if self.ahead else None
        return copy.entries if copy is not None and copy.of is self.entries else dict(self.entries)


@dataclass
class Patched:
    """A generation made from `Last`, and the `Last` it becomes."""

    entries: dict[str, Entry]
    last: Last
    reused: int  # nodes taken from `last` without a look at the memo
    touched: tuple[str, ...] = ()  # the only paths whose entries may differ from `last`'s

def dhcp_fields(node: Node) -> tuple[object, ...]:
    """What a node's part of the DHCP configs is made of (`render.chunks`)."""
    return node.name, node.mac, node.hostname, node.ip


def patch(
    last: Last,
    nodes: Sequence[Node],
    shared: Mapping[str, bytes | None],
    others: Mapping[str, Entry],
    render: Callable[[Node], Mapping[str, Entry]],
    dhcp_key: object,
    render_dhcp: Callable[[], Mapping[str, Entry]],
    max_bytes: int,
) -> Patched | None:
    """The generation of `nodes` (sorted by name) patched from `last`; `render(node)`: a changed
    node's entries, `render_dhcp()`: the three DHCP configs, called only when a node's DHCP fields
    or `dhcp_key` changed. None: the full loop must run (module docstring)."""
    if len(nodes) != len(last.nodes) or others.keys() != last.others:
        return None
    same = {pid for pid, digest in shared.items() if digest is not None and last.shared.get(pid) == digest}
    before = last.nodes.get
    if len(last.listed) == len(nodes) and len(same) == len(shared):
        # every profile as it was: the nodes in places holding other objects (issue 25: no lookup
        # of each of 100,000 names; a node moved to another place is rendered again, the same;
        # the state's tuple was compared with the last one already by the boot check: core.places)
        changed = [nodes[i] for i in moved(last.listed, nodes)]
    else:
        changed = [node for node in nodes if before(node.name) is not node or node.profile not in same]
    if any(node.name not in last.nodes for node in changed):
        return None  # a new name with as many nodes: one is gone
    node_bytes = last.node_bytes
    own: dict[str, Mapping[str, Entry]] = {}
    for node in changed:
        files = own[node.name] = render(node)
        if tuple(files) != last.paths[node.name]:
            return None
        node_bytes += sum(map(entry_size, files.values())) - last.sizes[node.name]
    if node_bytes + sum(map(entry_size, others.values())) > max_bytes:
        return None
    dhcp = last.dhcp
    if dhcp[0] != dhcp_key or any(dhcp_fields(node) != dhcp_fields(last.nodes[node.name]) for node in changed):
        dhcp = (dhcp_key, render_dhcp())
    # Nothing fails past here: `last`'s node and size dicts become the new Last's, updated in place
    # (the memo holds only the Last this returns; a copy of each was ~0.4 ms at 10,000 nodes).
    # The entries are copied (or were, ahead): they are the last generation's, which is still served.
    entries = last._entries_copy()
    entries.update(others)
    nodes_now, sizes = last.nodes, last.sizes
    for node in changed:
        entries.update(own[node.name])
        nodes_now[node.name] = node
        sizes[node.name] = sum(map(entry_size, own[node.name].values()))
    entries.update(dhcp[1])
    touched = (*others, *dhcp[1], *(path for node in changed for path in own[node.name]))
    return Patched(entries, Last(last.sentinel, last.site_key, dict(shared), nodes_now, sizes, last.paths,
                                 last.others, dhcp, entries, node_bytes, last.kept, tuple(nodes)),
                   len(nodes) - len(changed), touched)
