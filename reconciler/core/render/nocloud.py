"""NoCloud seeds: `cloud-init/<mac>/user-data`, `meta-data`, `vendor-data` and `network-config` per node.

Called by `render_generation` for each node whose profile attaches a cloud-init template.
user-data is the template rendered for the node (validation already rendered and linted it);
meta-data carries the instance-id (see `render.nodes` for why it ignores the revision) and the
hostname; vendor-data is empty, so cloud-init gets a 200 and stops asking.

network-config (cloud-init 24.3+ asks for it first, and retries a 404 for about 10 s) holds
only YAML comments: cloud-init reads it as "no network configuration from the datasource" and
configures the network exactly as without the file (its fallback: DHCP on the first NIC, or
what the image or the kernel command line says). Checked with cloud-init's own NoCloud code in
tests/integration/test_cloudinit_peers.py.

Boot reports (issue 8): user-data holding a block `autoinstall:` mapping gets our handler,
`netboot: {type: webhook, endpoint: <server>/report/autoinstall/<mac>?token=<token>}`, under
`reporting:`, inserted as text (the author's bytes stay as written), so Subiquity tells the
server how the install went. Without a `reporting:` key it is added right under `autoinstall:`;
with the author's own (block or flow mapping), ours joins theirs under its own name.
"""

from __future__ import annotations

import functools
import json
import re

from reconciler.core.render.nodes import NodeBoot

# Found where a line starts (`_line_head`, `_top_level`): a pattern opening with `^` is tried at
# every character, one opening with a literal is searched for it (a third of a node's NoCloud files).
_AUTOINSTALL = re.compile(r"autoinstall:[ \t]*(#.*)?$", re.M)
_CONTENT = re.compile(r"^([ \t]+)\S", re.M)
_TOP_LEVEL = re.compile(r"\n[^\s#]")


@functools.lru_cache(maxsize=64)
def _reporting_key(pad: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(pad)}reporting[ \t]*:[ \t]*(.*)$", re.M)


def with_reporting(user_data: str, endpoint: str) -> str:
    """`user_data` with our autoinstall reporting webhook added (see above)."""
    if not endpoint or "autoinstall" not in user_data:
        return user_data
    head = _line_head(user_data)
    if head is None:
        return user_data
    cut = head.end() + 1
    rest = user_data[cut:]
    # the autoinstall block: indented lines (and blank or comment lines) up to the next top-level key
    block = rest[: _top_level(rest)]
    first = next((ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), None)
    if first is None:
        return user_data
    indent = _CONTENT.match(first)
    if indent is None:
        return user_data
    pad = indent.group(1)
    own = _reporting_key(pad).search(block) if "reporting" in block else None
    if own is None:
        return user_data[:cut] + f"{pad}reporting:\n" + _handler("netboot", endpoint, pad * 2, pad) + rest
    return user_data[:cut] + _merged(block, own, endpoint, pad) + rest[len(block) :]


def _line_head(text: str) -> re.Match[str] | None:
    """The first `autoinstall:` line (`^autoinstall:[ \\t]*(#.*)?$` with re.M): a match of the
    pattern without `^` at a line's start (a match never spans lines, so none hides one)."""
    for match in _AUTOINSTALL.finditer(text):
        if match.start() == 0 or text[match.start() - 1] == "\n":
            return match
    return None


def _top_level(text: str) -> int:
    """Where the first line starting with neither white space nor `#` starts (`^[^\\s#]` with
    re.M); len(text) when none does."""
    if text and not (text[0].isspace() or text[0] == "#"):
        return 0
    found = _TOP_LEVEL.search(text)
    return found.start() + 1 if found else len(text)


def _handler(name: str, endpoint: str, indent: str, pad: str) -> str:
    """Our webhook handler as a block mapping entry at `indent`."""
    return f"{indent}{name}:\n{indent}{pad}type: webhook\n{indent}{pad}endpoint: {json.dumps(endpoint)}\n"


def _merged(block: str, own: re.Match[str], endpoint: str, pad: str) -> str:
    """The autoinstall block with our handler added to the author's own `reporting:` mapping.

    Subiquity sends its events to every handler of `reporting`, so theirs and ours both get them.
    Ours is named `netboot` (`netboot-reconcile` when the author already has a `netboot`).
    A `reporting:` value that is neither a block nor a flow mapping is left as written.
    """
    value = own.group(1)
    after = own.end() + 1
    if value.startswith("{"):
        name = "netboot-reconcile" if re.search(r"[{,]\s*netboot\s*:", value) else "netboot"
        entry = f"{name}: {{type: webhook, endpoint: {json.dumps(endpoint)}}}"
        at = own.start(1) + 1
        closes = re.match(r"\{\s*\}", value)
        return block[:at] + entry + ("" if closes else ", ") + block[at:]
    if value and not value.startswith("#"):
        return block
    children = [ln for ln in block[after:].splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    child = _CONTENT.match(children[0]) if children else None
    indent = child.group(1) if child is not None and len(child.group(1)) > len(pad) else pad * 2
    siblings = block[after:]
    nested = re.search(rf"^{re.escape(indent)}netboot[ \t]*:", siblings, re.M)
    name = "netboot-reconcile" if nested else "netboot"
    return block[:after] + _handler(name, endpoint, indent, pad) + block[after:]


NETWORK_CONFIG = (
    b"# netboot-reconcile: no network configuration is declared for this node.\n"
    b"# cloud-init reads this comment-only file as none and configures the network as it would without it.\n"
)


def render_node(plan: NodeBoot) -> dict[str, bytes]:
    if plan.user_data is None:
        return {}
    base = f"cloud-init/{plan.node.mac}/"
    # instance-id is "iid-" + hex and the hostname an RFC 1123 label: plain YAML scalars.
    meta = f"instance-id: {plan.instance_id}\nlocal-hostname: {plan.node.hostname}\n"
    return {
        base + "user-data": with_reporting(plan.user_data, plan.report_endpoint).encode(),
        base + "meta-data": meta.encode(),
        base + "vendor-data": b"",
        base + "network-config": NETWORK_CONFIG,
    }
