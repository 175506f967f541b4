"""matchbox data directory: `groups/<id>.json`, `profiles/<id>.json`, `ignition/`, `generic/` and env files.

Called by `render_generation`. The JSON follows matchbox v0.10's storagepb field names (Group:
id, name, profile, selector, metadata; Profile: id, name, generic_id, ignition_id, boot.kernel,
boot.initrd[], boot.args[]), so `matchbox -data-path generations/<sha>` serves the tree.

Layout (docs/GENERATION.md):
- the repo's own profiles and groups, as written (templated args stay templates: matchbox does
  not expand them, and only label/default groups, which have no node to render for, use them);
- per node, a group `node.<name>` selecting the node's `mac` and a profile `node.<name>` with the
  node's rendered, revision-pinned boot values. Validation reserves the `node.` prefix, so these
  ids never meet a repo id. A mac selector is matchbox's most specific match in practice (the
  bootstrap query carries uuid, mac, domain, hostname, serial and arch, never node labels).

Node group metadata is the node's `metadata`, plus `name`, `hostname`, `mac`, `ip` and `labels`
where the node's own metadata does not already use those keys.

Env files follow matchbox's `/metadata` rendering (matchbox/http/metadata.go `renderAsEnvFile`):
keys upper-cased as written (`nest: {b-c: 1}` is `NEST_B-C=1`), nested mappings joined with `_`,
strings, booleans and numbers printed as Go's `%v` prints them (`1e+06`), lists and nulls left
out; sorted for determinism (matchbox's map order is random). A key character other than
`A-Za-z0-9_.-` becomes `_`, and a value holding a control character is written as a JSON
string, so neither can start a new line.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from reconciler.core import gotemplate
from reconciler.core.gotemplate import go_value
from reconciler.core.model import DesiredState, Group, MatchboxTemplate, Node, Profile
from reconciler.core.render.nodes import NodeBoot
from reconciler.core.template import TemplateFailure

NODE_PREFIX = "node."
_SEPARATORS = (", ", ": ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")  # kept as matchbox prints them (`NEST_B-C`); the rest is `_`


def plain(value: Any) -> Any:
    """`value` as JSON data: YAML's dates, sets, binary and non-string keys become JSON values."""
    # Exact types first: nearly every value is one, and the Mapping check below is an ABC's.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


# Made once: json.dumps given any option builds a new encoder per call (a third of a dump here).
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False, separators=_SEPARATORS)
_PLAIN_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=_SEPARATORS)


def _encode(value: Any) -> str:
    # One line with the C encoder (indent= would use the slow pure-Python one); plain() only
    # when the fast path meets a value JSON has no spelling for (dates, sets, NaN, mixed keys).
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError):
        return _PLAIN_ENCODER.encode(plain(value))


def dump(value: Mapping[str, Any]) -> bytes:
    return (_encode(value) + "\n").encode()


def boot_json(kernel: str, initrd: tuple[str, ...], args: tuple[str, ...]) -> dict[str, Any]:
    boot: dict[str, Any] = {}
    if kernel:
        boot["kernel"] = kernel
    if initrd:
        boot["initrd"] = list(initrd)
    if args:
        boot["args"] = list(args)
    return boot


def profile_json(profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {"id": profile.id, "name": profile.name}
    boot = boot_json(profile.boot.kernel, profile.boot.initrd, profile.boot.args)
    if boot:
        out["boot"] = boot
    if profile.generic_id:
        out["generic_id"] = profile.generic_id
    if profile.ignition_id:
        out["ignition_id"] = profile.ignition_id
    return out


def group_json(group: Group) -> dict[str, Any]:
    out: dict[str, Any] = {"id": group.id, "name": group.name, "profile": group.profile}
    if group.selector:
        out["selector"] = dict(group.selector)
    if group.metadata:
        out["metadata"] = dict(group.metadata)
    return out


def node_metadata(plan: NodeBoot) -> dict[str, Any]:
    return node_values(plan.node)


def node_values(node: Node) -> dict[str, Any]:
    """A node's group metadata: its `metadata`, plus name, hostname, mac, ip and labels where
    the metadata does not use those keys itself."""
    meta: dict[str, Any] = {
        "name": node.name,
        "hostname": node.hostname,
        "mac": node.mac,
        "ip": str(node.ip) if node.ip is not None else "",
        "labels": dict(node.labels),
    }
    meta.update(node.metadata)
    return meta


def node_files(plan: NodeBoot) -> dict[str, bytes]:
    node = plan.node
    nid = NODE_PREFIX + node.name
    profile: dict[str, Any] = {"id": nid, "name": f"{plan.profile.name} ({node.name})"}
    initrd = tuple(
        f"--name {name} {url}" if name else url for name, url in zip(plan.initrd_names, plan.initrd, strict=True)
    )
    boot = boot_json(plan.kernel, initrd, plan.args)
    if boot:
        profile["boot"] = boot
    if plan.profile.generic_id:
        profile["generic_id"] = plan.profile.generic_id
    if plan.profile.ignition_id:
        profile["ignition_id"] = plan.profile.ignition_id
    metadata = node_metadata(plan)
    group = {
        "id": nid,
        "name": f"node {node.name}",
        "profile": nid,
        "selector": {"mac": node.mac},
        "metadata": metadata,
    }
    return {
        f"groups/{nid}.json": dump(group),
        f"profiles/{nid}.json": dump(profile),
        f"metadata/{node.name}.env": env_file(variables(metadata, {"mac": node.mac})),
    }


@functools.lru_cache(maxsize=4096)
def _env_name(prefix: str, key: str) -> str:
    return _KEY_UNSAFE.sub("_", (prefix + key).upper())


def _env_lines(prefix: str, data: Mapping[str, Any], out: list[str]) -> None:
    # matchbox `renderAsEnvFile`: strings, booleans and numbers are printed with `%v`, mappings
    # are descended into, anything else (lists, null) is left out. `data` is plain()'s: str keys.
    for key in sorted(data, key=str):
        name = _env_name(prefix, str(key))
        value = data[key]
        if type(value) is str:  # most values: go_value would return it as it is
            out.append(f"{name}={json.dumps(value, ensure_ascii=False)}" if _CONTROL.search(value) else
                       f"{name}={value}")
            continue
        if type(value) is dict or isinstance(value, Mapping):
            _env_lines(name + "_", value, out)
            continue
        if value is None or not isinstance(value, str | bool | int | float):
            continue
        text = go_value(value)
        if _CONTROL.search(text):
            text = json.dumps(text, ensure_ascii=False)
        out.append(f"{name}={text}")


def env_file(data: Mapping[str, Any]) -> bytes:
    lines: list[str] = []
    _env_lines("", plain(data), lines)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def variables(metadata: Mapping[str, Any], selector: Mapping[str, str]) -> dict[str, Any]:
    """matchbox `collectVariables` without the request: the group's metadata, then its selectors
    under lowercased keys (a `MAC` selector is `mac`). `request` is the request's own (added per
    request), never the metadata's."""
    data = {k: v for k, v in metadata.items() if k != "request"}
    data.update({key.lower(): value for key, value in selector.items()})
    return data


def template_files(state: DesiredState) -> dict[str, bytes]:
    """`ignition/<name>` and `generic/<name>` as committed: matchbox's own data-dir layout."""
    files = {f"ignition/{t.name}": t.text.encode() for t in state.ignition.values()}
    files.update({f"generic/{t.name}": t.text.encode() for t in state.generic.values()})
    return files


def generic_data(metadata: Mapping[str, Any], selector: Mapping[str, str]) -> dict[str, Any]:
    """What a generic template sees: matchbox `collectVariables`; its `request` fields are
    deferred (the generation renders the template once per node or group; `/generic` fills in
    `request.query.<label>` and `request.raw_query` per request)."""
    data: dict[str, Any] = plain(variables(metadata, selector))
    return data


def render_generic(tpl: MatchboxTemplate, metadata: Mapping[str, Any], selector: Mapping[str, str]) -> bytes:
    """A generic template rendered as matchbox renders it (Go text/template, missingkey=error);
    TemplateFailure naming the template's file when it does not render."""
    try:
        return gotemplate.render(tpl.text, generic_data(metadata, selector), deferred="request").encode()
    except TemplateFailure as exc:
        raise TemplateFailure(exc.message, exc.line, tpl.source.file) from None


def group_env(group: Group) -> bytes:
    return env_file(variables(group.metadata, group.selector))
