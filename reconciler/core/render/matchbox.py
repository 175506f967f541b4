"""matchbox data directory: `groups/<id>.json`, `profiles/<id>.json` and `/metadata` env files.

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

Env files follow matchbox's `/metadata` rendering: keys upper-cased, nested mappings joined
with `_`, sorted for determinism (matchbox's map order is random). A value holding a control
character is written as a JSON string so it cannot start a new line.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from reconciler.core.model import Group, Profile
from reconciler.core.render.nodes import NodeBoot

NODE_PREFIX = "node."
_SEPARATORS = (", ", ": ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def plain(value: Any) -> Any:
    """`value` as JSON data: YAML's dates, sets, binary and non-string keys become JSON values."""
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


def _encode(value: Any) -> str:
    # One line with the C encoder (indent= would use the slow pure-Python one); plain() only
    # when the fast path meets a value JSON has no spelling for (dates, sets, NaN, mixed keys).
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=_SEPARATORS)
    except (TypeError, ValueError):
        return json.dumps(plain(value), sort_keys=True, ensure_ascii=False, separators=_SEPARATORS)


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
    node = plan.node
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
        f"metadata/{node.name}.env": env_file({**metadata, "mac": node.mac}),
    }


def _go_value(value: Any) -> str:
    """A value as Go's `%v` prints it (matchbox writes env values with `%v`)."""
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    if isinstance(value, set | frozenset):
        return "[" + " ".join(sorted(_go_value(v) for v in value)) + "]"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_value(value[k])}" for k in sorted(value, key=str)) + "]"
    return str(value)


def _env_lines(prefix: str, data: Mapping[str, Any], out: list[str]) -> None:
    for key in sorted(data, key=str):
        name = _KEY_UNSAFE.sub("_", (prefix + str(key)).upper())
        value = data[key]
        if isinstance(value, Mapping):
            _env_lines(name + "_", value, out)
            continue
        text = _go_value(value)
        if _CONTROL.search(text):
            text = json.dumps(text, ensure_ascii=False)
        out.append(f"{name}={text}")


def env_file(data: Mapping[str, Any]) -> bytes:
    lines: list[str] = []
    _env_lines("", data, lines)
    return "".join(line + "\n" for line in lines).encode()


def group_env(group: Group) -> bytes:
    return env_file({**group.metadata, **group.selector})
