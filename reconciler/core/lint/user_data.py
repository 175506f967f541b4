"""Lints of one node's rendered cloud-init user-data: what cloud-init and Subiquity drop or refuse.

Called by `core.bootcheck` through `core.lint`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import yaml

from reconciler.core.codes import lint_issue as finding
from reconciler.core.model import Issue, Location
from reconciler.core.yamldoc import compose, yaml_problem

# Subiquity's autoinstall keys that are not cloud-config keys: at the top level of user-data,
# cloud-init's schema check fails on them and Subiquity (24.04+) stops the install ("Misplaced
# autoinstall directives"; subiquity/server/server.py). Keys both know (apt, ssh, packages, ...)
# are valid cloud-config there. tests/unit/test_subiquity.py derives this set from Subiquity's
# autoinstall-schema.json and cloud-init's cloud-config schema.
AUTOINSTALL_ONLY_KEYS = frozenset({
    "active-directory", "codecs", "debconf-selections", "early-commands", "error-commands", "identity",
    "interactive-sections", "kernel", "kernel-crash-dumps", "late-commands", "network", "oem", "proxy",
    "refresh-installer", "shutdown", "snaps", "source", "storage", "ubuntu-advantage", "ubuntu-pro",
    "user-data", "version", "zdevs",
})


def lint_user_data(
    text: str, loc: Location, autoinstall: bool, line_of: Callable[[int], int] | None = None
) -> list[Issue]:
    """Lints of one rendered user-data document; `loc` is the template's location, `line_of` maps
    a rendered line to the template line it comes from (findings point at what was written)."""
    first = text.split("\n", 1)[0].rstrip()
    if first != "#cloud-config":
        return [finding("user-data-not-cloud-config", Location(loc.file, 1, 1), f"first line is {first!r}")]

    def at(rendered: int) -> Location:
        return Location(loc.file, line_of(rendered) if line_of is not None else rendered, 1)

    try:
        # The C composer alone: constructing Python values for every node's user-data costs 5x more.
        root = compose(text)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc, text)
        return [finding("user-data-yaml", at(line) if line else Location(loc.file), f"rendered line {line}: {problem}")]
    found: list[Issue] = [finding("user-data-duplicate-key", at(line), f"key {key!r} (rendered lines {first_line} and "
                                  f"{line}) is written twice") for key, first_line, line in _duplicate_keys(root)]
    section = _child(root, "autoinstall")
    if isinstance(section, yaml.MappingNode):
        version = _child(section, "version")
        if not (isinstance(version, yaml.ScalarNode) and version.value == "1" and version.tag.endswith(":int")):
            found.append(finding("autoinstall-version", loc))
        interactive = _child(section, "interactive-sections")
        if interactive is not None and not (isinstance(interactive, yaml.SequenceNode) and not interactive.value):
            line = interactive.start_mark.line + 1
            found.append(finding("autoinstall-interactive-reporting", at(line),
                                 f"'interactive-sections' (rendered line {line})"))
    if autoinstall or section is not None:
        for key, line in _top_keys(root):
            if key in AUTOINSTALL_ONLY_KEYS:
                found.append(finding("autoinstall-key-misplaced", at(line),
                                     f"top-level key {key!r} (rendered line {line}): move it under 'autoinstall:'"))
    if autoinstall and section is None:
        near = _key_like(root, "autoinstall")
        if near is not None:
            key, line = near
            found.append(finding("autoinstall-key-misspelt", at(line),
                                 f"key {key!r} (rendered line {line}): did you mean 'autoinstall'?"))
        else:
            found.append(finding("autoinstall-section-missing", loc))
    return found


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[str, int, int]]:
    """Keys written twice in one mapping, anywhere: (key, first rendered line, second rendered line).
    cloud-init keeps the last silently, so the first one's settings are lost."""
    found: list[tuple[str, int, int]] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        found.append((key.value, seen[key.value], line))
                    seen.setdefault(key.value, line)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return sorted(found, key=lambda f: f[2])


def _top_keys(node: yaml.Node | None) -> list[tuple[str, int]]:
    """The top-level keys of a mapping and the rendered lines they are on."""
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(k.value, k.start_mark.line + 1) for k, _ in node.value if isinstance(k, yaml.ScalarNode)]


def _key_like(node: yaml.Node | None, key: str) -> tuple[str, int] | None:
    """A top-level key spelt nearly as `key` (and the rendered line it is on), if any."""
    if not isinstance(node, yaml.MappingNode):
        return None
    keys = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    close = difflib.get_close_matches(key, [k for k in keys if isinstance(k, str)], n=1, cutoff=0.8)
    return (close[0], keys[close[0]]) if close else None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None
