"""Lint of a profile as written: a cloud-init template attached but a static NoCloud seed URL.

Called by `core.validate` once per profile (the args as written, before rendering). The seed URL
must be `{{ cloud_init_url }}` (the node's own, pinned to the revision) for the profile's
`cloud_init` template to be fetched: a fixed URL (matchbox's way, `ds=nocloud;s=http://.../`)
points cloud-init somewhere else, and the template is never served to anyone.
"""

from __future__ import annotations

import re

from reconciler.core import template
from reconciler.core.codes import lint_issue as finding
from reconciler.core.locate import Locator
from reconciler.core.model import Issue, Profile

_SEED = re.compile(r"(?:^|;)(?:s|seedfrom)=")


def lint_static_seed(profile: Profile, where: Locator) -> list[Issue]:
    if profile.cloud_init is None:
        return []
    found: list[Issue] = []
    for i, arg in enumerate(profile.boot.args):
        if not arg.startswith(("ds=nocloud", "ds=nocloud-net")) or ";" not in arg:
            continue
        if not _SEED.search(arg.split(";", 1)[1]) or "cloud_init_url" in template.referenced_variables(arg):
            continue
        found.append(finding("cloud-init-seed-static", where.arg(profile, i),
                             f"profile {profile.id!r} attaches cloud-init {profile.cloud_init!r}, but {arg!r} "
                             "gives a fixed seed URL instead of {{ cloud_init_url }}"))
    return found
