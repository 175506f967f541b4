"""Each node's `bmc:`: its own fields over those of the most specific group selecting it.

Called by `core.validate` once nodes and groups are built. A group's `bmc:` gives fields (say
`driver` and `credentials`) to every node its selector matches (the node's labels and mac, tried
in matchbox's order, `select.sort_groups`); the node's own `bmc:` fields win. A node whose merged
fields lack one of driver, address, credentials is an error (`bmc-incomplete`) at the node's
`bmc:` (or its file), naming the missing field and where the others came from. A group that
selects one machine by mac and so becomes a node (`core.machines`) gives it its own `bmc:`.
`verify_ca` (Redfish's certificate check: true, false or a CA bundle's path) is inherited the same
way and is optional (true when neither gives it).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from reconciler.core.collect import Findings
from reconciler.core.docmemo import BmcMemo
from reconciler.core.model import Bmc, BmcDriver, Group, Location, Node
from reconciler.core.select import SelectorIndex, normalise_labels, sort_groups
from reconciler.core.yamldoc import Document

FIELDS = ("driver", "address", "credentials")  # required, once merged
OPTIONAL = ("verify_ca",)


def _given(doc: Document | None) -> dict[str, Any]:
    data: Any = doc.data if doc is not None else None
    bmc = data.get("bmc") if isinstance(data, dict) else None
    return {k: v for k, v in bmc.items() if k in FIELDS + OPTIONAL} if isinstance(bmc, dict) else {}


def resolve(nodes: list[Node], groups: list[Group], docs: Mapping[str, Document], out: Findings,
            memo: BmcMemo | None = None) -> list[Node]:
    """The nodes with `bmc` set from their own and their groups' fields (None where neither gives any).
    `memo`: a node resolved at an earlier validation, the same Node object (which the validation
    memo hands back only for the same document), is taken as it was while the groups giving
    `bmc:` and their documents are the same (issue 25)."""
    giving = [g for g in sort_groups(groups) if _given(docs.get(g.source.file))]
    if memo is None:
        return _resolve(nodes, giving, docs, out)
    key = [(g, docs.get(g.source.file)) for g in giving]
    last = memo.key
    if last is None or len(key) != len(last) or \
            any(a[0] != b[0] or a[1] is not b[1] for a, b in zip(key, last, strict=True)):
        memo.key, memo.nodes, memo.resolved, memo.found = key, [], [], {}
    before, outcome, found_before = memo.nodes, memo.resolved, memo.found
    if len(nodes) == len(before):
        # The same list but where build.nodes put a changed node's (a node object handed back
        # unchanged comes from the very document it was resolved from): found in C, no Python pass.
        changed = list(itertools.compress(range(len(nodes)), map(operator.is_not, nodes, before)))
        resolved, found = list(outcome), dict(found_before)
    else:
        at = {id(node): i for i, node in enumerate(before)}
        resolved, found, changed = [], {}, []
        for i, node in enumerate(nodes):
            j = at.get(id(node))
            if j is None or before[j] is not node:
                changed.append(i)
                resolved.append(node)
            else:
                resolved.append(outcome[j])
                if j in found_before:
                    found[i] = found_before[j]
    for i in changed:
        made = Findings()
        resolved[i] = _resolve([nodes[i]], giving, docs, made)[0]
        if made.issues:
            found[i] = tuple(made.issues)
        else:
            found.pop(i, None)
    for i in sorted(found):
        out.extend(found[i])
    memo.nodes, memo.resolved, memo.found = list(nodes), resolved, found
    return list(resolved)


def _resolve(nodes: list[Node], giving: list[Group], docs: Mapping[str, Document], out: Findings) -> list[Node]:
    index = SelectorIndex(giving)  # in matchbox's order: the first match is the most specific
    resolved = []
    for node in nodes:
        doc = docs.get(node.source.file)
        own = _given(doc)
        group = None
        if giving:
            labels = normalise_labels({**node.labels, "mac": node.mac})
            group = next(iter(index.matching(labels)), None)
        inherited = _given(docs.get(group.source.file)) if group is not None else {}
        merged = {**inherited, **own}
        if not merged:
            resolved.append(node if node.bmc is None else replace(node, bmc=None))
            continue
        # positions looked up only for a finding: each composes the node file's YAML again (core.yamldoc)
        def where(doc: Document | None = doc, own: dict[str, Any] = own, node: Node = node) -> Location:
            return doc.loc(("bmc",)) if doc is not None and own else node.source

        missing = [f for f in FIELDS if f not in merged]
        if missing:
            parts = []
            if own:
                parts.append(f"{', '.join(sorted(own))} from {node.source.file}")
            if inherited and group is not None:
                parts.append(f"{', '.join(sorted(set(inherited) - set(own)) or '-')} from group {group.id!r} "
                             f"({group.source.file})")
            out.report("bmc-incomplete", where(),
                       f"node {node.name!r}: bmc has no {' or '.join(missing)} (it has {'; '.join(parts)}): "
                       f"add bmc.{missing[0]} to {node.source.file} or to a group selecting it")
            resolved.append(replace(node, bmc=None))
            continue
        address_from = doc if "address" in own or group is None else docs.get(group.source.file)

        def address_loc(address_from: Document | None = address_from,
                        where: Callable[[], Location] = where) -> Location:
            return address_from.loc(("bmc", "address")) if address_from is not None else where()

        resolved.append(replace(node, bmc=_bmc(merged, address_loc, out)))
    return resolved


def _bmc(fields: Mapping[str, Any], loc: Callable[[], Location], out: Findings) -> Bmc | None:
    """HOST[:PORT] split and the port checked; a bracketed IPv6 host keeps its brackets out of `host`."""
    address = fields["address"]
    host, port = address, None
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] or None
    elif ":" in address:
        host, port = address.rsplit(":", 1)
    if port is not None and not 0 < int(port) < 65536:
        out.report("schema", loc(), f"bmc.address {address!r}: port {port} is not 1-65535")
        return None
    driver: BmcDriver = "redfish" if fields["driver"] == "redfish" else "ipmi"  # the schema admits these two
    verify_ca = fields.get("verify_ca", True)  # the schema admits a boolean or an absolute path
    return Bmc(driver=driver, host=host, port=int(port) if port else None, credentials=fields["credentials"],
               verify_ca=verify_ca if isinstance(verify_ca, (bool, str)) else True)
