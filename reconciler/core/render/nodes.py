"""Per-node boot plans: a node's profile rendered for that node, with its URLs pinned to the revision.

Called by `render_generation` once per node; every output format (iPXE, GRUB, matchbox,
NoCloud) reads the same `NodeBoot`, so the formats cannot disagree about what a node boots.

Revision pinning: a kernel or initrd path on our own server (`/assets/x`, or a URL starting
with `server_url`) becomes `<server_url>/r/<sha>/assets/x`, so every request of one install
resolves against the generation that started it. Kernel arguments are rendered as written:
the NoCloud seed URL is already pinned by `cloud_init_url`.

instance-id: cloud-init re-runs when the NoCloud instance-id changes. It must change when what
the node is told changes, but NOT because an unrelated commit moved the revision. So it is a
digest over the node's boot plan rendered a second time with the revision held fixed (""):
kernel, initrds, args, user-data, hostname, profile and the `reinstall` counter. Rendering twice
(rather than hashing the served content with the sha cut out) stays right when a template uses
the revision in ways a text replacement cannot undo (`revision[:7]`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core import template
from reconciler.core.model import CloudInitTemplate, Node, Profile, Site


@dataclass(frozen=True)
class NodeBoot:
    """What one node boots at one revision, every value rendered and pinned."""

    node: Node
    profile: Profile
    kernel: str  # "" = boot from the local disk
    initrd: tuple[str, ...]  # URLs
    initrd_names: tuple[str | None, ...]  # matchbox's `--name X path` form names one; None: we name it
    args: tuple[str, ...]
    user_data: str | None  # None: the profile attaches no cloud-init
    instance_id: str

    @property
    def local_disk(self) -> bool:
        return not self.kernel


def pin(site: Site, revision: str, path: str) -> str:
    """A kernel/initrd reference as a URL pinned to `revision` when it lives on our server."""
    base = site.server_url
    if path.startswith(base + "/"):
        path = path[len(base) :]
    elif not path.startswith("/"):
        return path  # another server's URL: left as written
    if path.startswith("/r/"):
        return base + path  # already pinned by the author
    return f"{base}/r/{revision}{path}"


def split_initrd(entry: str) -> tuple[str | None, str]:
    """matchbox's initrd form `--name NAME PATH` -> (NAME, PATH); a plain path -> (None, PATH)."""
    words = entry.split()
    if len(words) == 3 and words[0] == "--name":
        return words[1], words[2]
    return None, entry


def _plan(
    site: Site, node: Node, profile: Profile, tpl: CloudInitTemplate | None, revision: str
) -> tuple[str, tuple[str, ...], tuple[str, ...], str | None]:
    context = template.node_context(site, node, revision)
    boot = profile.boot
    kernel = pin(site, revision, template.render(boot.kernel, context)) if boot.kernel else ""
    initrd = tuple(template.render(p, context) for p in boot.initrd) if kernel else ()
    args = tuple(template.render(a, context) for a in boot.args) if kernel else ()
    user_data = template.render(tpl.text, context) if tpl is not None else None
    return kernel, initrd, args, user_data


def plan_node(
    site: Site,
    node: Node,
    profiles: Mapping[str, Profile],
    cloud_init: Mapping[str, CloudInitTemplate],
    revision: str,
) -> NodeBoot:
    """The node's boot plan; templates were all rendered once by validation, so this cannot fail."""
    profile = profiles[node.profile]
    tpl = cloud_init.get(profile.cloud_init) if profile.cloud_init else None
    kernel, entries, args, user_data = _plan(site, node, profile, tpl, revision)
    named = [split_initrd(e) for e in entries]
    initrd = tuple(pin(site, revision, path) for _, path in named)
    fixed: Any = _plan(site, node, profile, tpl, "") if revision else (kernel, entries, args, user_data)
    digest = hashlib.sha256(
        json.dumps([fixed, node.hostname, node.profile, node.reinstall], separators=(",", ":")).encode()
    ).hexdigest()
    return NodeBoot(
        node, profile, kernel, initrd, tuple(n for n, _ in named), args, user_data, f"iid-{digest[:20]}"
    )
