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

Boot reports (issue 8): user-data holding a block `autoinstall:` mapping without a `reporting:`
key gets one, `reporting: {netboot: {type: webhook, endpoint: <server>/report/autoinstall/<mac>
?token=<token>}}`, inserted as text right under `autoinstall:` (the author's bytes stay as
written), so Subiquity tells the server how the install went. A template with its own
`reporting:` is left alone.
"""

from __future__ import annotations

import json
import re

from reconciler.core.render.nodes import NodeBoot

_AUTOINSTALL = re.compile(r"^autoinstall:[ \t]*(#.*)?$", re.M)
_CONTENT = re.compile(r"^([ \t]+)\S", re.M)


def with_reporting(user_data: str, endpoint: str) -> str:
    """`user_data` with the autoinstall reporting webhook added, when it has none (see above)."""
    if not endpoint or "autoinstall" not in user_data:
        return user_data
    head = _AUTOINSTALL.search(user_data)
    if head is None:
        return user_data
    rest = user_data[head.end() + 1 :]
    # the autoinstall block: indented lines (and blank or comment lines) up to the next top-level key
    block_end = re.search(r"^[^\s#]", rest, re.M)
    block = rest[: block_end.start()] if block_end else rest
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return user_data
    indent = _CONTENT.match(lines[0])
    if indent is None:
        return user_data
    pad = indent.group(1)
    if any(re.match(rf"{re.escape(pad)}reporting\s*:", ln) for ln in lines):
        return user_data
    insert = (
        f"{pad}reporting:\n"
        f"{pad}{pad}netboot:\n"
        f"{pad}{pad}{pad}type: webhook\n"
        f"{pad}{pad}{pad}endpoint: {json.dumps(endpoint)}\n"
    )
    cut = head.end() + 1
    return user_data[:cut] + insert + user_data[cut:]


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
