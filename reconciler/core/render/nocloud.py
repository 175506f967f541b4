"""NoCloud seeds: `cloud-init/<mac>/user-data`, `meta-data` and `vendor-data` per node.

Called by `render_generation` for each node whose profile attaches a cloud-init template.
user-data is the template rendered for the node (validation already rendered and linted it);
meta-data carries the instance-id (see `render.nodes` for why it ignores the revision) and the
hostname; vendor-data is empty, so cloud-init gets a 200 and stops asking.
"""

from __future__ import annotations

from reconciler.core.render.nodes import NodeBoot


def render_node(plan: NodeBoot) -> dict[str, bytes]:
    if plan.user_data is None:
        return {}
    base = f"cloud-init/{plan.node.mac}/"
    # instance-id is "iid-" + hex and the hostname an RFC 1123 label: plain YAML scalars.
    meta = f"instance-id: {plan.instance_id}\nlocal-hostname: {plan.node.hostname}\n"
    return {
        base + "user-data": plan.user_data.encode(),
        base + "meta-data": meta.encode(),
        base + "vendor-data": b"",
    }
