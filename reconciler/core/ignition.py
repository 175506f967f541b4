"""matchbox's template directories: `ignition/<name>` and `generic/<name>` read and checked.

Called by validation once per commit. What matchbox does with them (matchbox/http/ignition.go,
generic.go) decides what is checked here:
- `ignition/*.ign`, `*.ignition`: Ignition JSON, served as committed. It must parse as JSON, be
  an object, and declare an `ignition.version` Ignition knows; a 3.x config is checked against
  the vendored spec schema (`schemas/ignition/`), each finding at its field's line,
  and a key its declared spec does not have (`ADDED_IN`: newer fields) is a warning.
  Ignition refuses a config that fails these, and the machine stops in its initramfs.
- any other name under `ignition/`: a Butane config (matchbox templates it and translates it
  with Butane). Without a translator it cannot be served: a finding says so, and `/ignition`
  answers 404 with the reason.
- `generic/<name>`: any text; rendered per node and group with Go's text/template (the
  renderer, `core.gotemplate`), and here once for each of them (`check_references`), so a
  missing key is a finding at the template's line, not a 404 at boot.
- a profile's `ignition_id` / `generic_id` must name a file there (matchbox answers 404).
"""

from __future__ import annotations

import difflib
import functools
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from reconciler.core.codes import issue
from reconciler.core.collect import Findings
from reconciler.core.locate import Locator
from reconciler.core.model import Group, Issue, Location, MatchboxTemplate, Node, Profile
from reconciler.core.render.matchbox import node_values, render_generic
from reconciler.core.schema import schemas_dir
from reconciler.core.template import TemplateFailure
from reconciler.core.yamldoc import parse_json

# Spec versions Ignition releases accept (2.x: only Flatcar's Ignition still reads them).
SPEC_2 = ("2.0.0", "2.1.0", "2.2.0", "2.3.0")
SPEC_3 = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0")
_EXPERIMENTAL = re.compile(r"3\.\d+\.0-experimental")
_TOP_LEVEL_2 = ("ignition", "storage", "systemd", "networkd", "passwd")

# Fields of the vendored 3.4 schema that earlier 3.x specs do not have, and the spec that added
# them (`*`: every item of a list). Read off Ignition's own validator: Ignition warns "Unused key"
# for each of them in a config declaring an earlier version (tests/integration/test_ignition_peer.py
# checks every entry against `ignition-validate`).
ADDED_IN: dict[tuple[str, ...], str] = {
    ("ignition", "config", "merge", "*", "compression"): "3.1.0",
    ("ignition", "config", "merge", "*", "httpHeaders"): "3.1.0",
    ("ignition", "config", "replace", "compression"): "3.1.0",
    ("ignition", "config", "replace", "httpHeaders"): "3.1.0",
    ("ignition", "security", "tls", "certificateAuthorities", "*", "compression"): "3.1.0",
    ("ignition", "security", "tls", "certificateAuthorities", "*", "httpHeaders"): "3.1.0",
    ("ignition", "proxy"): "3.1.0",
    ("storage", "filesystems", "*", "mountOptions"): "3.1.0",
    ("storage", "files", "*", "contents", "httpHeaders"): "3.1.0",
    ("storage", "files", "*", "append", "*", "httpHeaders"): "3.1.0",
    ("storage", "disks", "*", "partitions", "*", "resize"): "3.2.0",
    ("storage", "luks"): "3.2.0",
    ("passwd", "users", "*", "shouldExist"): "3.2.0",
    ("passwd", "groups", "*", "shouldExist"): "3.2.0",
    ("kernelArguments",): "3.3.0",
    ("storage", "luks", "*", "clevis", "tang", "*", "advertisement"): "3.4.0",
    ("storage", "luks", "*", "discard"): "3.4.0",
    ("storage", "luks", "*", "openOptions"): "3.4.0",
}


def _spec_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-", maxsplit=1)[0].split("."))


def is_ignition_json(name: str) -> bool:
    """matchbox `isIgnition`: `.ign` and `.ignition` are Ignition JSON; any other name is Butane."""
    return name.endswith((".ign", ".ignition"))


@functools.cache
def _schema_doc() -> dict[str, Any]:
    text = schemas_dir().joinpath("ignition", "v3_4.schema.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@functools.cache
def _schema_3() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_schema_doc())


def read_templates(
    files: Mapping[str, bytes], directory: str
) -> tuple[dict[str, MatchboxTemplate], list[Issue]]:
    """The templates under `directory/` (`ignition` or `generic`), by file name, and what is wrong."""
    out: dict[str, MatchboxTemplate] = {}
    issues: list[Issue] = []
    prefix = directory + "/"
    # startswith first: posixpath on each of 100,000 node files cost 0.37 s of a one-node commit (issue 25)
    for path in sorted(p for p in files if p.startswith(prefix) and posixpath.dirname(p) == directory):
        loc = Location(path, 1, 1)
        try:
            text = files[path].decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(issue("encoding", loc, f"not UTF-8: {exc.reason}"))
            continue
        name = posixpath.basename(path)
        if "\x00" in text:
            issues.append(issue("encoding", loc, "holds a NUL character: a template is text"))
            continue
        out[name] = MatchboxTemplate(name, text, loc)
        if directory == "ignition":
            issues.extend(check_ignition(path, files[path]))
    return out, issues


def check_ignition(path: str, content: bytes) -> list[Issue]:
    """What Ignition (or the lack of Butane) would refuse in one `ignition/` file."""
    name = posixpath.basename(path)
    if not is_ignition_json(name):
        return [
            issue("ignition-butane", Location(path, 1, 1),
                  f"{name} is a Butane config (not .ign or .ignition): matchbox translates it, but no "
                  "butane binary translates it here, so /ignition answers 404 for it; commit the "
                  f"translated Ignition JSON instead (butane --strict {name} > {posixpath.splitext(name)[0]}.ign)")
        ]
    doc, issues = parse_json(path, content)
    if doc is None:
        return list(issues)
    data: Any = doc.data
    if not isinstance(data, dict):
        return [issue("ignition-invalid", doc.loc(), "an Ignition config is a JSON object")]
    ignition = data.get("ignition")
    version = ignition.get("version") if isinstance(ignition, dict) else None
    if not isinstance(version, str):
        return [issue("ignition-version", doc.loc(("ignition",) if ignition is not None else ()),
                      "ignition.version is missing: Ignition refuses a config that declares no spec version")]
    where = doc.loc(("ignition", "version"))
    if version in SPEC_2:
        spec2 = issue("ignition-spec-2", where, f"ignition.version {version!r}: Ignition 2.x (Fedora CoreOS, Debian's "
                      "ignition) refuses spec 2 configs as unsupported; only Flatcar's Ignition still translates them")
        return [spec2] + [
            issue("ignition-invalid", doc.loc((key,)), f"{key}: must be an object (Ignition spec {version})")
            for key in _TOP_LEVEL_2
            if key in data and not isinstance(data[key], dict)
        ]
    if _EXPERIMENTAL.fullmatch(version):
        return [issue("ignition-experimental", where, f"ignition.version {version!r} is an experimental spec: "
                      "only an Ignition built with it accepts the config")]
    if version not in SPEC_3:
        known = ", ".join((*SPEC_2, *SPEC_3))
        return [issue("ignition-version", where, f"ignition.version {version!r} is not an Ignition spec "
                      f"version (known: {known})")]
    found: list[Issue] = []
    schema = _schema_doc()
    for field_path in _unknown_keys(data, schema, schema, (), _spec_key(version)):
        shown = ".".join(str(p) for p in field_path)
        found.append(issue("ignition-unknown-key", doc.loc(field_path),
                           f"{shown}: not a field of Ignition spec {version} (Ignition warns 'Unused key')"))
    for error in sorted(_schema_3().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        field_path = tuple(error.absolute_path)
        shown = ".".join(str(p) for p in field_path) or "(document)"
        found.append(issue("ignition-invalid", doc.loc(field_path),
                           f"{shown}: {error.message} (Ignition spec {version})"))
    return found


def check_references(
    profiles: Mapping[str, Profile],
    nodes: Sequence[Node],
    groups: Sequence[Group],
    ignition: Mapping[str, MatchboxTemplate],
    generic: Mapping[str, MatchboxTemplate],
    where: Locator,
    out: Findings,
) -> None:
    """Every `ignition_id` and `generic_id` names a file, and every generic template renders
    for every node and group that boots its profile (matchbox answers 404 otherwise)."""
    for profile in profiles.values():
        for key, code, directory, known in (("ignition_id", "ref-ignition", "ignition", ignition),
                                            ("generic_id", "ref-generic", "generic", generic)):
            name = getattr(profile, key)
            if name and name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                out.report(code, where.field(profile.source, key),
                           f"profile {profile.id!r} names {directory}/{name}, which does not exist{hint}")
    def template_of(profile_id: str) -> MatchboxTemplate | None:
        booted = profiles.get(profile_id)
        return generic.get(booted.generic_id or "") if booted is not None else None

    # a node's values are made only for a node whose profile has a generic template (few do)
    # (and none is looked at when no profile has one: a one-node commit to 100,000 nodes, issue 25)
    targets: list[tuple[str, MatchboxTemplate, Mapping[str, Any], Mapping[str, str]]] = [
        (f"node {n.name!r}", tpl, node_values(n), {"mac": n.mac}) for n in nodes
        if (tpl := template_of(n.profile)) is not None
    ] if any(template_of(pid) is not None for pid in profiles) else []
    targets += [(f"group {g.id!r}", tpl, g.metadata, g.selector) for g in groups
                if (tpl := template_of(g.profile)) is not None]
    for subject, tpl, metadata, selector in targets:
        try:
            render_generic(tpl, metadata, selector)
        except TemplateFailure as exc:
            out.template_failure(Location(tpl.source.file, exc.line, 0), exc, subject)


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _properties(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields a schema node allows (the union over `allOf`), or None when it names none."""
    node = _resolve(node, root)
    if "allOf" in node:
        merged: dict[str, Any] = {}
        for branch in node["allOf"]:
            merged.update(_properties(branch, root) or {})
        return merged
    props = node.get("properties")
    return dict(props) if isinstance(props, dict) else None


def _unknown_keys(
    value: Any, node: Mapping[str, Any], root: Mapping[str, Any], path: tuple[str | int, ...], spec: tuple[int, ...]
) -> list[tuple[str | int, ...]]:
    """Paths of the object keys spec `spec` does not have (Ignition's "Unused key" warnings)."""
    node = _resolve(node, root)
    found: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        props = _properties(node, root)
        if props is None:
            return found
        for key, item in value.items():
            here = (*path, key)
            added = ADDED_IN.get(tuple("*" if isinstance(p, int) else p for p in here))
            if key not in props or (added is not None and _spec_key(added) > spec):
                found.append(here)
            else:
                found.extend(_unknown_keys(item, props[key], root, here, spec))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            found.extend(_unknown_keys(item, node["items"], root, (*path, i), spec))
    return found
