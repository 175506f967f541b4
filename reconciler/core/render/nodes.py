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

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta

from reconciler.core import template
from reconciler.core.model import CloudInitTemplate, Node, Profile, Site
from reconciler.core.render import onepass
from reconciler.core.secrets import SecretValues


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
    report_endpoint: str = ""  # the autoinstall webhook URL (with the node's token when there is a secret)

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


_REVISION_VARIABLES = frozenset({"revision", "cloud_init_url", "report_token"})
_PARSER = jinja2.Environment(autoescape=False)  # noqa: S701 (parses only, never renders)


@functools.lru_cache(maxsize=4096)
def uses_revision(text: str) -> bool:
    """Whether a template's output can depend on the revision (it names a revision variable)."""
    if not template.is_template(text):
        return False
    try:
        names = jinja2.meta.find_undeclared_variables(_PARSER.parse(text))
    except jinja2.TemplateSyntaxError:
        return True
    return not names.isdisjoint(_REVISION_VARIABLES)


_Raw = tuple[str, tuple[str, ...], tuple[str, ...], str | None]


def _plan(
    profile: Profile, tpl: CloudInitTemplate | None, context: Mapping[str, Any], reuse: _Raw | None = None,
    user_data: str | None = None,
) -> _Raw:
    """The node's raw (unpinned) kernel, initrd entries, args and user-data rendered with
    `context` (`template.node_context` at some revision). With `reuse` (the same plan at another
    revision), templates that cannot depend on the revision are not rendered again: their output
    is the same. A template using `secrets` is (the instance-id pass gets fingerprints, not the values).
    `user_data`: the cloud-init template's output, already made (`render.onepass`)."""

    def one(text: str, previous: str | None) -> str:
        if reuse is not None and previous is not None and not uses_revision(text) \
                and not template.secret_references(text):
            return previous
        return template.render(text, context)

    boot = profile.boot
    kernel = one(boot.kernel, reuse[0] if reuse else None) if boot.kernel else ""
    initrd: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    if kernel:
        initrd = tuple(one(p, reuse[1][i] if reuse else None) for i, p in enumerate(boot.initrd))
        args = tuple(one(a, reuse[2][i] if reuse else None) for i, a in enumerate(boot.args))
    if user_data is None and tpl is not None:
        user_data = one(tpl.text, reuse[3] if reuse else None)
    return kernel, initrd, args, user_data


# The instance-id digest's JSON, made once (json.dumps given an option builds an encoder per call).
_DIGEST_JSON = json.JSONEncoder(separators=(",", ":"))


def plan_node(
    site: Site,
    node: Node,
    profiles: Mapping[str, Profile],
    cloud_init: Mapping[str, CloudInitTemplate],
    revision: str,
    report_secret: bytes | None = None,
    secrets: SecretValues | None = None,
) -> NodeBoot:
    """The node's boot plan. Validation rendered every template once for this node; a template
    that fails only here (on the instance-id pass with no revision, or on a branch validation did
    not take) raises TemplateFailure naming the node.

    `report_secret` (the daemon's) makes `report_token` the node's real token; without it, "".
    `secrets`: what `{{ secrets.NAME }}` renders to (the values, or placeholders); its `stable`
    fingerprints go into the instance-id, never the values.
    """
    profile = profiles[node.profile]
    tpl = cloud_init.get(profile.cloud_init) if profile.cloud_init else None
    values = secrets or SecretValues()
    token = template.report_token(report_secret, node.name, revision)
    context = template.node_context(site, node, revision, token, values.values)
    fixed_token = template.report_token(report_secret, node.name, "")
    both = onepass.render_both(tpl.text, context, site, node, (revision, token, values.values),
                               ("", fixed_token, values.stable)) if tpl is not None else None
    try:
        raw = _plan(profile, tpl, context, user_data=both[0] if both else None)
        fixed = _plan(profile, tpl, template.at_revision(context, site, node, "", fixed_token, values.stable),
                      reuse=raw, user_data=both[1] if both else None)
    except template.TemplateFailure as exc:
        where = f"profile {profile.id!r}" + (f", cloud-init {tpl.name!r}" if tpl is not None else "")
        raise template.TemplateFailure(f"{exc.message} (rendering node {node.name!r}: {where})", exc.line,
                                       node.source.file) from exc
    kernel, entries, args, user_data = raw
    named = [split_initrd(e) for e in entries]
    initrd = tuple(pin(site, revision, path) for _, path in named)
    digest = hashlib.sha256(
        _DIGEST_JSON.encode([fixed, node.hostname, node.profile, node.reinstall]).encode()
    ).hexdigest()
    pinned_kernel = pin(site, revision, kernel) if kernel else ""
    names = tuple(n for n, _ in named)
    endpoint = f"{site.server_url}/report/autoinstall/{node.mac}" + (f"?token={token}" if token else "")
    return NodeBoot(node, profile, pinned_kernel, initrd, names, args, user_data, f"iid-{digest[:20]}", endpoint)
