"""matchbox group selection: which group (and so which profile) a machine's labels select.

Called by validation (ambiguity checks), the renderer and the HTTP server. Semantics follow
matchbox: every query parameter is a label, `mac` in any spelling is normalised, groups are
tried from most selectors to fewest, ties are broken as matchbox breaks them (its
`sort.Reverse(ByReqs)`: the `k=v,k=v` selector string, descending; then the id, so identical
selectors are deterministic too), and a group with no selector is the default group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from reconciler.core.model import Group

_HEX = re.compile(r"[0-9a-f]{12}")
_NORMAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")  # already the form normalise_mac returns
_SEPARATORS = re.compile(r"[:\-.]")


def normalise_mac(text: str) -> str | None:
    """Lowercase colon form of a MAC in any common spelling, or None when it is not one."""
    if _NORMAL.fullmatch(text):
        return text
    digits = _SEPARATORS.sub("", text.strip().lower())
    if not _HEX.fullmatch(digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalise_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels as matchbox compares them: `mac` normalised when it is a MAC."""
    out = dict(labels)
    if "mac" in out:
        out["mac"] = normalise_mac(out["mac"]) or out["mac"]
    return out


def selector_string(selector: Mapping[str, str]) -> str:
    """matchbox's canonical selector string: `k=v` pairs sorted by key, joined by commas."""
    return ",".join(f"{key}={selector[key]}" for key in sorted(selector))


def sort_groups(groups: Iterable[Group]) -> tuple[Group, ...]:
    """Groups in matchbox's trial order: most selectors first, ties by selector string, descending."""
    return tuple(sorted(groups, key=lambda g: (len(g.selector), selector_string(g.selector), g.id), reverse=True))


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def select_group(sorted_groups: Iterable[Group], labels: Mapping[str, str]) -> Group | None:
    """The first group (in `sort_groups` order) whose selector the labels satisfy."""
    for group in sorted_groups:
        if matches(group.selector, labels):
            return group
    return None


class SelectorIndex:
    """The groups whose selectors a set of labels satisfies, in the groups' own order, without
    trying every group for every node: each group is filed under one (key, value) of its selector,
    and only the groups filed under one of the labels are tried. Validation asks this for every
    node (`core.crossref`); a site of 100 racks has 100 rack groups and 100,000 nodes."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self._groups = groups
        self._order = {id(g): i for i, g in enumerate(groups)}
        self._filed: dict[tuple[str, str], list[Group]] = {}
        self._everywhere = [g for g in groups if not g.selector]
        # a value that is not text (the schemas admit none) is compared by trying every group
        self._linear = any(not isinstance(v, str) for g in groups for v in g.selector.values())
        for group in groups:
            if group.selector:
                self._filed.setdefault(next(iter(group.selector.items())), []).append(group)

    def matching(self, labels: Mapping[str, str]) -> list[Group]:
        """The groups `matches` says the labels satisfy, in the order given."""
        if self._linear:
            return [g for g in self._groups if matches(g.selector, labels)]
        tried = [g for item in labels.items() if isinstance(item[1], str) for g in self._filed.get(item, ())]
        tried += self._everywhere
        tried.sort(key=lambda g: self._order[id(g)])
        return [g for g in tried if matches(g.selector, labels)]
