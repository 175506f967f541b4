"""A node's boot plan as a digest: what the machine boots, independent of the commit that serves it.

Called by the daemon when it activates a generation (`targets`: the nodes it declares, each
with its plan digest, stored by `adapters.store.record_revision`) and read back by
`core.outcomes`: a node's outcome carries over from one commit to the next as long as its plan
digest is the same, so a comment-only commit or a revert changes nobody's state.

The digest covers what `diff` (`core.plan`) compares: the kernel, initrds and kernel arguments
(`profiles/node.<name>.json`, with the revision pinned into URLs cut out), the NoCloud seed
through its instance-id (itself a digest of the node's plan rendered with the revision held
fixed: kernel, initrds, args, user-data, hostname, profile, `reinstall`; see `render.nodes`),
the profile, install-once, the `reinstall` counter, and the boot chain (`diff`'s "boot chain
(UEFI PXE)"): a machine handed shim and signed GRUB instead of iPXE boots something else. The
iPXE chain adds nothing to the digest, so plans recorded before the chain was part of it stay
equal to today's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from reconciler.core.bootfiles import profile_secure_boot
from reconciler.core.model import DesiredState, Node
from reconciler.core.outcomes import Target

_ID = b"instance-id:"
# What str.splitlines splits at or str.strip strips besides b"\n" and the space, in ASCII.
_ODD = re.compile(rb"[\r\x0b\x0c\x1c-\x1f\t]")
_ENCODE = json.JSONEncoder(sort_keys=True).encode  # json.dumps(..., sort_keys=True), made once


def _instance_id(meta: bytes | None) -> str:
    if meta is not None and meta.startswith(_ID):  # the renderer's seed: its first line, plain ASCII
        end = meta.find(b"\n")
        first = meta[len(_ID):end] if end >= 0 else meta[len(_ID):]
        if first.isascii() and not _ODD.search(first):
            return first.decode().strip(" ")
    for line in (meta or b"").decode(errors="replace").splitlines():
        if line.startswith("instance-id:"):
            return line.split(":", 1)[1].strip()
    return ""


def plan_digest(files: Mapping[str, bytes], node: Node, revision: str, install_once: bool = False,
                secure_boot: bool = False) -> str:
    """16 hex digits naming what `node` boots in the generation `files` rendered for `revision`
    (`secure_boot`: its UEFI PXE boot chain is shim and signed GRUB)."""
    raw = files.get(f"profiles/node.{node.name}.json")
    boot = json.loads(raw).get("boot", {}) if raw is not None else {}
    seed = _instance_id(files.get(f"cloud-init/{node.mac}/meta-data"))
    parts: list[object] = [boot, seed, node.profile, install_once, node.reinstall]
    if secure_boot:
        parts.append("chain:shim+grub")
    text = _ENCODE(parts)
    if revision:
        text = text.replace(revision, "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def targets(state: DesiredState, files: Mapping[str, bytes]) -> tuple[Target, ...]:
    """The nodes a generation declares (with a known profile), each with its plan digest."""
    out = []
    for n in state.nodes:
        profile = state.profiles.get(n.profile)
        if profile is None:
            continue
        out.append(Target(n.name, n.mac, n.profile, profile.install_once, n.reinstall,
                          plan_digest(files, n, state.revision, profile.install_once,
                                      profile_secure_boot(state.site, profile))))
    return tuple(out)
