"""The nodes a served generation targets, each with its plan digest, reusing the last commit's
digest for every node whose inputs are the same.

Called by the daemon after each activation (daemon.loop, `_record_targets`; the results store
and the rollouts read them). `core.bootplan.targets` parses the JSON of every node's boot plan,
dumps and hashes it (10,000 nodes: ~0.3 s of the loop thread per commit, holding the GIL the
servers need, and delaying the next commit); a one-node commit changes one digest.

A digest is reused when the node's fields it reads (name, MAC, profile, reinstall), its
profile's install-once and Secure Boot, and the stored entries of its `profiles/node.<name>.json`
and NoCloud `meta-data` (`RenderedFiles.raw`) are the same as last time, the entries as the very
objects the render memo keeps (core.render.reuse): plain bytes, or bytes at the memo's stand-in
revision without a report token. Exact: the served bytes then differ from last time's only by
the revision in place of the stand-in, which `plan_digest` cuts out of what it hashes (the
revision cannot occur elsewhere in them: committed text cannot hold its own commit's id). A
token (which depends on the revision), files that are not a `RenderedFiles`, or another stand-in
or secret: every digest is computed. `verify` (--verify-incremental) computes them all as well
and says where the reused ones differ.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.bootfiles import profile_secure_boot
from reconciler.core.bootplan import plan_digest
from reconciler.core.model import DesiredState
from reconciler.core.outcomes import Target
from reconciler.core.render.files import Entry, RenderedFiles

# What a target was computed from, and the target: the node's MAC, profile and reinstall, its
# profile's install-once and Secure Boot, the two stored entries (compared as objects).
_Kept = tuple[str, str, int, bool, bool, Entry | None, Entry | None, Target]


class TargetMemo:
    """The last commit's targets and what each was computed from."""

    def __init__(self) -> None:
        self._last: dict[str, _Kept] = {}
        self._stamps: tuple[str, bytes | None] | None = None  # the stand-in and secret the entries are at
        self.reused = 0  # targets taken from the last commit by the last `targets`

    def targets(self, state: DesiredState, files: Mapping[str, bytes],
                verify: bool = False) -> tuple[tuple[Target, ...], tuple[str, ...]]:
        """`bootplan.targets(state, files)`, and with `verify` the nodes whose reused digest differs
        from the one computed (those computed are used)."""
        stored = files if isinstance(files, RenderedFiles) else None
        stamps = (stored.sentinel, stored.secret) if stored is not None else None
        last = self._last if stamps is not None and stamps == self._stamps else {}
        entries = stored.entries if stored is not None else {}
        modes = {name: (p.install_once, profile_secure_boot(state.site, p)) for name, p in state.profiles.items()}
        out: list[Target] = []
        memo: dict[str, _Kept] = {}
        wrong: list[str] = []
        reused = 0
        for n in state.nodes:
            mode = modes.get(n.profile)
            if mode is None:
                continue
            install_once, secure = mode
            plan_json = entries.get(f"profiles/node.{n.name}.json")
            meta = entries.get(f"cloud-init/{n.mac}/meta-data")
            was = last.get(n.name)
            if was is not None and was[5] is plan_json and was[6] is meta and was[0] == n.mac \
                    and was[1] == n.profile and was[2] == n.reinstall and was[3] == install_once and was[4] == secure:
                reused += 1
                target = was[7]
                if verify:
                    computed = plan_digest(files, n, state.revision, install_once, secure)
                    if computed != target.plan:
                        wrong.append(n.name)
                        target = Target(n.name, n.mac, n.profile, install_once, n.reinstall, computed)
                memo[n.name] = was if target is was[7] else (*was[:7], target)
                out.append(target)
                continue
            target = Target(n.name, n.mac, n.profile, install_once, n.reinstall,
                            plan_digest(files, n, state.revision, install_once, secure))
            if stored is not None and _reusable(plan_json) and _reusable(meta):
                memo[n.name] = (n.mac, n.profile, n.reinstall, install_once, secure, plan_json, meta, target)
            out.append(target)
        self._last, self._stamps, self.reused = memo, stamps, reused
        return tuple(out), tuple(wrong)


def _reusable(entry: Entry | None) -> bool:
    """Served the same at any revision but for the revision itself: no report token in it."""
    return entry is None or isinstance(entry, bytes) or not entry[2]
