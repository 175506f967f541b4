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

Given the worker's `Change` (daemon.resident: the nodes and stored paths a commit changed against
the result these targets were computed from, the node order kept), only the changed nodes are
looked at: the others' targets are the last ones, in place (a one-node commit at 10,000 nodes:
one node instead of a pass over all of them, ~20 ms of the loop's thread). Whenever the change
does not name every node it touched (a node added, removed or renamed, a profile's install-once
or Secure Boot changed, a node's entries changed without the node, a node holding a token), every
node is looked at as above.

A whole result (a fresh worker: the first commit) reuses nothing here; the worker computes its
nodes' digests itself once it has sent the result (`plan_digests`, daemon.resident), beside this
process's activation, and `targets(planned=...)` takes them (100,000 nodes, nice 19, load 2-3.5:
the loop's thread spent 2.9 s on them before /status named the commit, now 0.3, of which 0.03
waiting for the worker's). What the next commit reuses is made by `settle`, once the commit is
concluded (or first thing at the next `targets`).
`verify` computes them here as well, and names the nodes whose digest the worker got wrong.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from reconciler.core.bootfiles import profile_secure_boot
from reconciler.core.bootplan import plan_digest
from reconciler.core.model import DesiredState, Node
from reconciler.core.outcomes import Target
from reconciler.core.render.files import Entry, RenderedFiles

# What a target was computed from, and the target: the node's MAC, profile and reinstall, its
# profile's install-once and Secure Boot, the two stored entries (compared as objects).
_Kept = tuple[str, str, int, bool, bool, Entry | None, Entry | None, Target]


class Change(NamedTuple):
    """What one result changed against the one before it (`base`, its files object), as the
    worker sent it (daemon.resident)."""

    base: Mapping[str, bytes]
    nodes: Mapping[str, Node]  # by name: the nodes that are new or differ
    was: Mapping[str, Node]  # by name: what those of them the result before had were there
    paths: Collection[str]  # stored entries that are new, differ or are gone
    order_kept: bool  # the same node names in the same order


# What the worker's digests were computed at: the revision and the files' stand-in and secret.
Stamps = tuple[str, str, bytes | None]


def stamps_of(state: DesiredState, files: Mapping[str, bytes]) -> Stamps:
    return (state.revision, *((files.sentinel, files.secret) if isinstance(files, RenderedFiles) else ("", None)))


def plan_digests(state: DesiredState, files: Mapping[str, bytes]) -> list[str | None]:
    """Each node's plan digest in `state.nodes` order, None for a node no target names (its profile
    is unknown): what `targets` would compute for `files` (the worker's, daemon.resident)."""
    modes = _modes(state)
    out: list[str | None] = []
    view = files
    for i, n in enumerate(state.nodes):
        if i % 4096 == 0 and isinstance(files, RenderedFiles):
            # A view of its own every few thousand nodes: the report tokens it stamps with are
            # cached in it, and the worker keeps `files` (100,000 tokens would stay with them).
            view = RenderedFiles(files.entries, files.revision, files.sentinel, files.secret)
        mode = modes.get(n.profile)
        out.append(None if mode is None else plan_digest(view, n, state.revision, *mode))
    return out


def _modes(state: DesiredState) -> dict[str, tuple[bool, bool]]:
    """Each profile's install-once and Secure Boot."""
    return {name: (p.install_once, profile_secure_boot(state.site, p)) for name, p in state.profiles.items()}


class TargetMemo:
    """The last commit's targets and what each was computed from."""

    def __init__(self) -> None:
        self._last: dict[str, _Kept] = {}
        self._stamps: tuple[str, bytes | None] | None = None  # the stand-in and secret the entries are at
        self._files: Mapping[str, bytes] | None = None  # the files the last targets were computed from
        self._modes: dict[str, tuple[bool, bool]] = {}  # each profile's install-once and Secure Boot then
        self._out: tuple[Target, ...] = ()  # the last targets
        self._index: dict[str, int] = {}  # node -> its place in them
        self.reused = 0  # targets taken from the last commit by the last `targets`
        self._unsettled: tuple[DesiredState, RenderedFiles] | None = None  # `_last` to be made of (`settle`)

    def targets(self, state: DesiredState, files: Mapping[str, bytes], verify: bool = False,
                change: Change | None = None, planned: Sequence[str | None] | None = None,
                ) -> tuple[tuple[Target, ...], tuple[str, ...]]:
        """`bootplan.targets(state, files)`, and with `verify` the nodes whose reused digest (or the
        worker's) differs from the one computed (those computed are used). `change`: what `files`
        changed against the files of the last call, when the worker said so; `planned`: the
        worker's `plan_digests(state, files)` (module docstring)."""
        self.settle()
        stored = files if isinstance(files, RenderedFiles) else None
        stamps = (stored.sentinel, stored.secret) if stored is not None else None
        last = self._last if stamps is not None and stamps == self._stamps else {}
        entries = stored.entries if stored is not None else {}
        modes = _modes(state)
        if planned is not None and len(planned) != len(state.nodes):
            planned = None
        if planned is not None and not verify:
            taken = self._planned(state, files, stamps, modes, planned)
            if taken is not None:
                return taken, ()
            planned = None
        if change is not None and not verify and last and stored is not None:
            patched = self._patched(state, stored, change, modes)
            if patched is not None:
                return patched, ()
        out: list[Target] = []
        memo: dict[str, _Kept] = {}
        wrong: list[str] = []
        reused = 0
        for i, n in enumerate(state.nodes):
            mode = modes.get(n.profile)
            if mode is None:
                continue
            install_once, secure = mode
            plan_json, meta = _stored(entries, n)
            was = last.get(n.name)
            if was is not None and was[5] is plan_json and was[6] is meta and was[0] == n.mac \
                    and was[1] == n.profile and was[2] == n.reinstall and was[3] == install_once and was[4] == secure:
                reused += 1
                target = was[7]
                if verify:
                    computed = plan_digest(files, n, state.revision, install_once, secure)
                    if computed != target.plan or (planned is not None and planned[i] != computed):
                        wrong.append(n.name)
                    if computed != target.plan:
                        target = Target(n.name, n.mac, n.profile, install_once, n.reinstall, computed)
                memo[n.name] = was if target is was[7] else (*was[:7], target)
                out.append(target)
                continue
            target = Target(n.name, n.mac, n.profile, install_once, n.reinstall,
                            plan_digest(files, n, state.revision, install_once, secure))
            if planned is not None and planned[i] != target.plan:
                wrong.append(n.name)
            if stored is not None and _reusable(plan_json) and _reusable(meta):
                memo[n.name] = (n.mac, n.profile, n.reinstall, install_once, secure, plan_json, meta, target)
            out.append(target)
        self._last, self._stamps, self.reused = memo, stamps, reused
        self._files, self._modes, self._out = files, modes, tuple(out)
        self._index = {t.node: i for i, t in enumerate(out)}
        return self._out, tuple(wrong)

    def _planned(self, state: DesiredState, files: Mapping[str, bytes], stamps: tuple[str, bytes | None] | None,
                 modes: dict[str, tuple[bool, bool]], planned: Sequence[str | None]) -> tuple[Target, ...] | None:
        """The targets with the worker's digests (None: they do not name the nodes targets do);
        what the next call reuses is made by `settle`."""
        out = tuple(Target(n.name, n.mac, n.profile, mode[0], n.reinstall, digest)
                    for n, digest in zip(state.nodes, planned, strict=True)
                    if (mode := modes.get(n.profile)) is not None and digest is not None)
        if len(out) != sum(1 for n in state.nodes if n.profile in modes):
            return None
        self._last, self._stamps, self.reused = {}, stamps, 0
        self._files, self._modes, self._out = files, modes, out
        self._index = {}
        if isinstance(files, RenderedFiles):
            self._unsettled = (state, files)
        return out

    def settle(self) -> None:
        """Make what the next commit reuses of targets taken from the worker (`planned`): off the
        commit's path (the daemon calls it once the commit is concluded)."""
        if self._unsettled is None:
            return
        (state, stored), self._unsettled = self._unsettled, None
        entries, modes = stored.entries, self._modes
        memo: dict[str, _Kept] = {}
        by_name = {t.node: t for t in self._out}
        for n in state.nodes:
            target = by_name.get(n.name)
            if target is None:
                continue
            plan_json, meta = _stored(entries, n)
            if _reusable(plan_json) and _reusable(meta):
                install_once, secure = modes[n.profile]
                memo[n.name] = (n.mac, n.profile, n.reinstall, install_once, secure, plan_json, meta, target)
        self._last = memo
        self._index = {t.node: i for i, t in enumerate(self._out)}

    def _patched(self, state: DesiredState, stored: RenderedFiles, change: Change,
                 modes: dict[str, tuple[bool, bool]]) -> tuple[Target, ...] | None:
        """The last targets with the changed nodes' put in their places; None when `change` may not
        name every node whose target differs (then every node is looked at)."""
        last, index = self._last, self._index
        if change.base is not self._files or not change.order_kept or modes != self._modes \
                or len(last) != len(self._out) or not change.nodes.keys() <= index.keys():
            return None
        names = change.nodes.keys()
        macs = {n.mac for n in change.nodes.values()} | {last[name][0] for name in names}
        for path in change.paths:  # every changed entry a target reads must be a changed node's
            if path.startswith("profiles/node.") and path.endswith(".json"):
                if path[len("profiles/node."):-len(".json")] not in names:
                    return None
            elif path.startswith("cloud-init/") and path.endswith("/meta-data") \
                    and path[len("cloud-init/"):-len("/meta-data")] not in macs:
                return None
        entries = stored.entries
        out = list(self._out)
        computed: dict[str, _Kept] = {}
        for name, n in change.nodes.items():
            mode = modes.get(n.profile)
            if mode is None:
                return None  # a node no longer targeted: the places move
            install_once, secure = mode
            plan_json, meta = _stored(entries, n)
            if not (_reusable(plan_json) and _reusable(meta)):
                return None
            was = last[name]
            if was[5] is plan_json and was[6] is meta and was[0] == n.mac and was[1] == n.profile \
                    and was[2] == n.reinstall and was[3] == install_once and was[4] == secure:
                continue  # its fields that count are the same: the target stays
            target = Target(name, n.mac, n.profile, install_once, n.reinstall,
                            plan_digest(stored, n, state.revision, install_once, secure))
            computed[name] = (n.mac, n.profile, n.reinstall, install_once, secure, plan_json, meta, target)
            out[index[name]] = target
        last.update(computed)
        self.reused = len(out) - len(computed)
        self._files, self._out = stored, tuple(out)
        return self._out


def _stored(entries: Mapping[str, Entry], node: Node) -> tuple[Entry | None, Entry | None]:
    """The two stored entries a node's digest reads: its `profiles/node.<name>.json` and meta-data."""
    return entries.get(f"profiles/node.{node.name}.json"), entries.get(f"cloud-init/{node.mac}/meta-data")


def _reusable(entry: Entry | None) -> bool:
    """Served the same at any revision but for the revision itself: no report token in it."""
    return entry is None or isinstance(entry, bytes) or not entry[2]
