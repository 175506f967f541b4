"""What a commit changes for the machines: two validated revisions in, a `Plan` value out.

Called by the `diff` command (`reconciler.commands.diff`), which reads both commits from git,
validates them and hands each over as a `Side`; `reconciler.core.plan_format` prints the Plan
as a pull-request comment (markdown) or JSON. Pure: no I/O.

Both sides are rendered with the same placeholder revision (`PLACEHOLDER`) instead of their
commit shas. Rendered files carry the revision (URLs pinned to `/r/<sha>/...`, the NoCloud
seed URL, file headers), so rendering with the real shas would show every node changed on
every commit; with one placeholder only real changes remain.

What a machine boots is read from the rendered generation (docs/GENERATION.md):
`profiles/node.<name>.json` (kernel, initrds, kernel arguments, all rendered and pinned) and
`cloud-init/<mac>/user-data`; its DHCP reservation and `reinstall` counter from the node value.

Reinstall rule (install-once, implemented by the results store: after a reported success the
node boots its local disk until its `reinstall` counter changes):
- HEAD profile `install_once: true` and the `reinstall` counter changed: WILL REINSTALL at the
  next netboot, whatever else changed.
- HEAD profile `install_once: true`, boot plan (profile, kernel, initrd, args, user-data)
  changed, counter not bumped: an installed machine does NOT reinstall (it keeps booting its
  local disk); only a machine that has not reported a successful install yet gets the new plan.
- HEAD profile without `install_once`, with a kernel, boot plan changed: the machine boots the
  new plan at its next netboot (every netboot runs the profile).
- HEAD profile without a kernel: the machine boots its local disk.
- Added node: installs (or boots its profile) at its first netboot.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.core.assets import spec_key
from reconciler.core.bootfiles import profile_secure_boot
from reconciler.core.model import CloudInitTemplate, DesiredState, Group, Issue, Location, Node, Profile, Site
from reconciler.core.render import failure_issue, render_generation
from reconciler.core.secrets import placeholders
from reconciler.core.select import matches
from reconciler.core.template import TemplateFailure

PLACEHOLDER = "REVISION"
DHCP_CONFIGS = ("dhcpd.conf", "kea-dhcp4.conf", "dnsmasq.conf")

NodeStatus = Literal["added", "removed", "changed"]
Verdict = Literal["will-reinstall", "first-install", "next-netboot", "not-installed-only", "installed-keeps-disk",
                  "local-disk", "no"]
SourceKind = Literal["site", "profile", "cloud-init", "group", "assets"]


@dataclass(frozen=True)
class Side:
    """One revision as the diff sees it: its findings, and when valid its state and rendered files."""

    revision: str
    issues: tuple[Issue, ...]
    state: DesiredState | None
    files: Mapping[str, bytes]  # rendered with PLACEHOLDER as the revision; empty when invalid

    @property
    def valid(self) -> bool:
        return self.state is not None


def side(revision: str, state: DesiredState | None, issues: Sequence[Issue],
         changed_secrets: Collection[str] = ()) -> Side:
    """A Side for a validated revision: renders `state` with the placeholder revision, and
    placeholders for secrets, marked `:changed` for the names in `changed_secrets`
    (`core.secrets.changed_names`): a diff shows that a value changed, never what it holds."""
    files: Mapping[str, bytes] = {}
    if state is not None:
        names = state.secrets.secrets if state.secrets is not None else ()
        try:
            files = render_generation(dataclasses.replace(state, revision=PLACEHOLDER), None,
                                      placeholders(names, changed_secrets))
        except TemplateFailure as exc:  # the daemon would refuse it too
            return Side(revision, (*issues, failure_issue(exc)), None, {})
    return Side(revision, tuple(issues), state, files)


@dataclass(frozen=True)
class Change:
    """One value of a node that changes: `what` names it (profile, kernel, ip, ...)."""

    what: str
    before: str
    after: str


@dataclass(frozen=True)
class ArgsChange:
    """Kernel arguments compared one by one: `key=a` -> `key=b` is a change of `key`."""

    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    changed: tuple[tuple[str, str], ...] = ()  # (before, after) for the same key
    reordered: bool = False

    def __bool__(self) -> bool:
        return bool(self.removed or self.added or self.changed or self.reordered)


@dataclass(frozen=True)
class Reinstall:
    verdict: Verdict
    reason: str

    @property
    def will_reinstall(self) -> bool:
        return self.verdict == "will-reinstall"


@dataclass(frozen=True)
class NodePlan:
    """What changes for one machine."""

    name: str
    status: NodeStatus
    mac: str
    profile: str  # HEAD's profile (BASE's for a removed node)
    changes: tuple[Change, ...]
    args: ArgsChange
    user_data_diff: str  # unified diff of the rendered user-data, "" when unchanged
    files: tuple[str, ...]  # rendered files of this node that differ
    reinstall: Reinstall
    reached_by: tuple[str, ...]  # changed sources that reach it ("profile x", "node file")

    @property
    def what(self) -> tuple[str, ...]:
        """Short names of what changes, for a summary table."""
        if self.status == "added":
            return ("new machine",)
        if self.status == "removed":
            return ("no longer declared",)
        out = [c.what for c in self.changes]
        if self.args:
            out.append("kernel args")
        if self.user_data_diff:
            out.append("user-data")
        if not out and self.files:
            out.append("rendered files")
        return tuple(out)


@dataclass(frozen=True)
class SourceChange:
    """A changed profile, group, cloud-init template, site or assets manifest, and whom it reaches."""

    kind: SourceKind
    name: str
    status: NodeStatus
    reaches: tuple[str, ...]  # node names that use it (in HEAD or BASE)
    changed_nodes: tuple[str, ...]  # those of them that boot or are served differently
    note: str = ""


@dataclass(frozen=True)
class FileDiff:
    path: str
    diff: str
    added: int
    removed: int


@dataclass(frozen=True)
class Plan:
    """Everything a reviewer should see about BASE -> HEAD."""

    base: Side
    head: Side
    nodes: tuple[NodePlan, ...]
    sources: tuple[SourceChange, ...]
    dhcp: tuple[FileDiff, ...]
    other_files: tuple[FileDiff, ...]
    placeholder: str = PLACEHOLDER
    installs_known: bool = False  # verdicts refined by the machines' reported installs (`with_installs`)

    def by_status(self, status: NodeStatus) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.status == status)

    @property
    def reinstalls(self) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.reinstall.will_reinstall)

    @property
    def changed(self) -> bool:
        """Whether the commit changes what is served (an invalid HEAD counts: a broken change)."""
        if not self.head.valid:
            return True
        assets = any(s.kind == "assets" for s in self.sources)
        return bool(self.nodes or self.dhcp or self.other_files or assets)


# -- building the plan -----------------------------------------------------------------------------


def compare(base: Side, head: Side) -> Plan:
    """The Plan of BASE -> HEAD. An invalid HEAD is never served: no node changes are computed.

    An invalid BASE has no state: HEAD is compared against an empty repository (every node new).
    """
    if head.state is None:
        return Plan(base, head, (), (), (), ())
    old = base.state
    new = head.state
    old_nodes = {n.name: n for n in old.nodes} if old is not None else {}
    new_nodes = {n.name: n for n in new.nodes}
    sources = _source_changes(old, new) if old is not None else ()  # against nothing, everything is new

    nodes: list[NodePlan] = []
    owned: set[str] = set()
    for name in sorted(old_nodes.keys() | new_nodes.keys()):
        before, after = old_nodes.get(name), new_nodes.get(name)
        paths = _node_paths(before) | _node_paths(after)
        owned |= paths
        plan = _node_plan(name, before, after, old, new, base.files, head.files, paths, sources)
        if plan is not None:
            nodes.append(plan)
    changed_names = {n.name for n in nodes}
    sources = tuple(
        dataclasses.replace(s, changed_nodes=tuple(n for n in s.reaches if n in changed_names)) for s in sources
    )
    dhcp = tuple(d for p in DHCP_CONFIGS if (d := file_diff(p, base.files.get(p), head.files.get(p))) is not None)
    other = tuple(
        d
        for p in sorted(base.files.keys() | head.files.keys())
        if p not in owned and p not in DHCP_CONFIGS
        if (d := file_diff(p, base.files.get(p), head.files.get(p))) is not None
    )
    return Plan(base, head, tuple(nodes), sources, dhcp, other)


def _node_paths(node: Node | None) -> set[str]:
    if node is None:
        return set()
    n, mac = node.name, node.mac
    return {
        f"ipxe/{n}.ipxe",
        f"grub/{n}.cfg",
        f"metadata/{n}.env",
        f"profiles/node.{n}.json",
        f"groups/node.{n}.json",
        f"cloud-init/{mac}/user-data",
        f"cloud-init/{mac}/meta-data",
        f"cloud-init/{mac}/vendor-data",
        f"cloud-init/{mac}/network-config",
        f"tftp/grub/grub.cfg-{mac}",
    }


def boot_chain(site: Site, profile: Profile) -> str:
    """How a UEFI x64 PXE machine booting `profile` gets its kernel."""
    return "shim + signed GRUB (Secure Boot)" if profile_secure_boot(site, profile) else "iPXE"


@dataclass(frozen=True)
class _Boot:
    """What a node boots, read back from the rendered generation."""

    kernel: str
    initrd: tuple[str, ...]
    args: tuple[str, ...]
    user_data: str | None


def _boot(files: Mapping[str, bytes], node: Node) -> _Boot:
    raw = files.get(f"profiles/node.{node.name}.json")
    boot: Mapping[str, Any] = json.loads(raw).get("boot", {}) if raw is not None else {}
    user_data = files.get(f"cloud-init/{node.mac}/user-data")
    return _Boot(
        kernel=str(boot.get("kernel", "")),
        initrd=tuple(str(x) for x in boot.get("initrd", ())),
        args=tuple(str(x) for x in boot.get("args", ())),
        user_data=user_data.decode(errors="replace") if user_data is not None else None,
    )


def _node_plan(
    name: str,
    before: Node | None,
    after: Node | None,
    old: DesiredState | None,
    new: DesiredState,
    old_files: Mapping[str, bytes],
    new_files: Mapping[str, bytes],
    paths: set[str],
    sources: Sequence[SourceChange],
) -> NodePlan | None:
    files = tuple(sorted(p for p in paths if old_files.get(p) != new_files.get(p)))
    if (
        before is not None
        and after is not None
        and old is not None
        and not files
        and _plain(before) == _plain(after)
        and old.profiles[before.profile].install_once == new.profiles[after.profile].install_once
        and boot_chain(old.site, old.profiles[before.profile]) == boot_chain(new.site, new.profiles[after.profile])
    ):
        return None
    reached_by = tuple(f"{s.kind} {s.name}" for s in sources if name in s.reaches)
    if after is None:
        assert before is not None
        unknown = "ignored by DHCP" if new.site.unknown_clients == "ignore" else "gets the default group's profile"
        return NodePlan(
            name, "removed", before.mac, before.profile, (), ArgsChange(), "", files,
            Reinstall("no", f"no longer a known machine: at its next netboot it is an unknown MAC ({unknown})"),
            reached_by,
        )  # fmt: skip
    new_profile = new.profiles[after.profile]
    head_boot = _boot(new_files, after)
    if before is None:
        added = (
            Change("profile", "", after.profile),
            Change("kernel", "", head_boot.kernel or "(local disk)"),
            Change("ip", "", str(after.ip or "(pool)")),
            Change("hostname", "", after.hostname),
        )
        if not head_boot.kernel:
            verdict = Reinstall("local-disk", "new machine: its profile boots the local disk")
        elif new_profile.install_once:
            verdict = Reinstall("first-install", "new machine: installs at its first netboot")
        else:
            verdict = Reinstall("next-netboot", "new machine: boots its profile at every netboot")
        diff = unified(f"{name}/user-data", "", head_boot.user_data or "") if head_boot.user_data else ""
        return NodePlan(name, "added", after.mac, after.profile, added, ArgsChange(), diff, files, verdict, reached_by)

    assert old is not None
    old_profile = old.profiles[before.profile]
    base_boot = _boot(old_files, before)
    changes: list[Change] = []

    def note(what: str, a: object, b: object) -> None:
        if a != b:
            changes.append(Change(what, str(a), str(b)))

    note("profile", before.profile, after.profile)
    note("kernel", base_boot.kernel or "(local disk)", head_boot.kernel or "(local disk)")
    note("initrd", " ".join(base_boot.initrd) or "(none)", " ".join(head_boot.initrd) or "(none)")
    note("install-once", _on(old_profile.install_once), _on(new_profile.install_once))
    note("boot chain (UEFI PXE)", boot_chain(old.site, old_profile), boot_chain(new.site, new_profile))
    note("mac", before.mac, after.mac)
    note("ip", before.ip or "(pool)", after.ip or "(pool)")
    note("hostname", before.hostname, after.hostname)
    note("reinstall counter", before.reinstall, after.reinstall)
    note("labels", _labels(before.labels), _labels(after.labels))
    if dict(before.metadata) != dict(after.metadata):
        changes.append(Change("metadata", "", ""))
    args = args_change(base_boot.args, head_boot.args)
    ud_diff = ""
    if base_boot.user_data != head_boot.user_data:
        ud_diff = unified(f"{name}/user-data", base_boot.user_data or "", head_boot.user_data or "")
        if not ud_diff:  # present on one side only, both empty
            ud_diff = "(user-data attached or removed)\n"
    plan_changed = bool(
        before.profile != after.profile
        or base_boot.kernel != head_boot.kernel
        or base_boot.initrd != head_boot.initrd
        or args
        or ud_diff
    )
    verdict = reinstall_verdict(
        install_once=new_profile.install_once,
        boots_kernel=bool(head_boot.kernel),
        counter_changed=before.reinstall != after.reinstall,
        plan_changed=plan_changed,
    )
    return NodePlan(
        name, "changed", after.mac, after.profile, tuple(changes), args, ud_diff, files, verdict,
        reached_by or ("node file",),
    )  # fmt: skip


def reinstall_verdict(
    *, install_once: bool, boots_kernel: bool, counter_changed: bool, plan_changed: bool
) -> Reinstall:
    """The reinstall rule of the module docstring, for a node present on both sides."""
    if install_once and counter_changed:
        return Reinstall("will-reinstall", "`reinstall` counter changed: installs again at its next netboot")
    if not boots_kernel:
        if plan_changed:
            return Reinstall("local-disk", "boots its local disk from now on")
        return Reinstall("no", "boots its local disk")
    if not plan_changed:
        return Reinstall("no", "what it boots does not change")
    if install_once:
        return Reinstall(
            "not-installed-only",
            "install-once: an installed machine keeps booting its local disk; bump `reinstall` to apply this",
        )
    return Reinstall("next-netboot", "not install-once: boots the new plan at its next netboot")


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(none)"


def _plain(value: Any) -> Any:
    """A value with its source locations blanked, so moving a line is not a change; and a node's
    site, which the diff of a repository with sites groups by (a node moving site is removed at
    one and added at the other)."""
    if isinstance(value, Node):
        return dataclasses.replace(value, source=Location(""), site=None)
    if isinstance(value, Profile | Group | Site | CloudInitTemplate):
        return dataclasses.replace(value, source=Location(""))
    return value


def args_change(before: Sequence[str], after: Sequence[str]) -> ArgsChange:
    """Kernel arguments compared argument by argument (a `key=value` keeps its key across a change)."""
    if tuple(before) == tuple(after):
        return ArgsChange()
    removed = [a for a in before if a not in after]
    added = [a for a in after if a not in before]
    changed: list[tuple[str, str]] = []
    for a in list(removed):
        key = a.split("=", 1)[0]
        if "=" not in a:
            continue
        same_key = [b for b in added if "=" in b and b.split("=", 1)[0] == key]
        if len(same_key) == 1 and sum(1 for r in removed if r.split("=", 1)[0] == key) == 1:
            changed.append((a, same_key[0]))
            removed.remove(a)
            added.remove(same_key[0])
    reordered = not removed and not added and not changed and sorted(before) == sorted(after)
    return ArgsChange(tuple(removed), tuple(added), tuple(changed), reordered)


def unified(name: str, before: str, after: str) -> str:
    """A unified diff of two texts ("" when equal), labelled base/ and head/."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"base/{name}", f"head/{name}"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def readable(path: str, data: bytes | None) -> str:
    """A rendered file as text for a diff; JSON (matchbox's, written on one line) one value a line."""
    if data is None:
        return ""
    text = data.decode(errors="replace")
    if path.endswith(".json"):
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
        except ValueError:
            return text
    return text


def file_diff(path: str, before: bytes | None, after: bytes | None) -> FileDiff | None:
    if before == after:
        return None
    diff = unified(path, readable(path, before), readable(path, after))
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++"))]
    return FileDiff(
        path,
        diff,
        sum(1 for line in body if line.startswith("+")),
        sum(1 for line in body if line.startswith("-")),
    )


# -- sources and their reach ---------------------------------------------------------------------


def _source_changes(old: DesiredState | None, new: DesiredState) -> tuple[SourceChange, ...]:
    out: list[SourceChange] = []
    old_nodes = old.nodes if old is not None else ()
    both = (*old_nodes, *new.nodes)

    def status(a: object, b: object) -> NodeStatus | None:
        if a is None and b is None:
            return None
        if a is None:
            return "added"
        if b is None:
            return "removed"
        return None if _plain(a) == _plain(b) else "changed"

    def names(nodes: Iterable[Node]) -> tuple[str, ...]:
        return tuple(sorted({n.name for n in nodes}))

    if old is not None and _plain(old.site) != _plain(new.site):
        out.append(SourceChange("site", "netboot.yaml", "changed", names(both), ()))

    old_profiles = old.profiles if old is not None else {}
    for pid in sorted(old_profiles.keys() | new.profiles.keys()):
        st = status(old_profiles.get(pid), new.profiles.get(pid))
        if st is not None:
            groups = sorted({g.id for g in (*(old.groups if old else ()), *new.groups) if g.profile == pid})
            note = f"groups using it: {', '.join(groups)}" if groups else ""
            out.append(SourceChange("profile", pid, st, names(n for n in both if n.profile == pid), (), note))

    old_ci = old.cloud_init if old is not None else {}
    for tid in sorted(old_ci.keys() | new.cloud_init.keys()):
        a, b = old_ci.get(tid), new.cloud_init.get(tid)
        st = status(a, b) if a is None or b is None else (None if a.text == b.text else "changed")
        if st is not None:
            users = {
                n.name
                for state in (old, new)
                if state is not None
                for n in state.nodes
                if state.profiles[n.profile].cloud_init == tid
            }
            out.append(SourceChange("cloud-init", tid, st, tuple(sorted(users)), ()))

    old_groups = {g.id: g for g in old.groups} if old is not None else {}
    new_groups = {g.id: g for g in new.groups}
    for gid in sorted(old_groups.keys() | new_groups.keys()):
        ga, gb = old_groups.get(gid), new_groups.get(gid)
        st = status(ga, gb)
        if st is None:
            continue
        # A declared node is always answered from its own node file, never through a repo group:
        # a group reaches machines without a node file only (unknown MACs, label selectors).
        selected: set[str] = set()
        default = False
        for group, state in ((ga, old), (gb, new)):
            if group is None or state is None:
                continue
            default = default or group.is_default
            selected |= {n.name for n in state.nodes if matches(group.selector, {**n.labels, "mac": n.mac})}
        if default:
            note = "the default group: serves machines with no node file and no more specific group"
        else:
            note = "serves machines with no node file that its selector matches"
        if selected:
            note += f" (declared nodes it also selects boot from their node files: {', '.join(sorted(selected))})"
        out.append(SourceChange("group", gid, st, (), (), note))

    if old is not None and _assets(old) != _assets(new):
        before, after = _assets(old), _assets(new)
        touched = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
        # a file read out of a changed image changes with it
        touched |= {a.path for state in (old, new) for a in state.assets or () if a.from_path in touched}
        users = {n.name for state in (old, new) for n in state.nodes if _uses_assets(state, n, touched)}
        note = "changed entries: " + ", ".join(sorted(touched))
        out.append(SourceChange("assets", "assets.yaml", "changed", tuple(sorted(users)), (), note))
    return tuple(out)


def _assets(state: DesiredState) -> dict[str, tuple[str, int | None]]:
    """Each entry by what names its bytes: every source field (url, digest, checksums, signature,
    keyring, from, file: `core.assets.spec_key`) and its size."""
    return {a.path: (spec_key(a), a.size) for a in state.assets or ()}


def _uses_assets(state: DesiredState, node: Node, paths: set[str]) -> bool:
    boot = state.profiles[node.profile].boot
    refs = (boot.kernel, *boot.initrd, *boot.args)
    return any(p in ref for ref in refs for p in paths)


def with_installs(plan: Plan, installed: Collection[tuple[str, str, int]]) -> Plan:
    """The plan's reinstall verdicts knowing which machines reported a successful install
    ((node, mac, reinstall counter) as the results store keeps them: `diff --state-dir`).

    Install-once decides per machine: a changed plan without a counter bump reaches a machine
    that has not installed yet at its next netboot, and never one that has (it keeps booting its
    disk until `reinstall` is bumped); a bumped counter reinstalls only a machine that installed."""
    nodes = []
    for n in plan.nodes:
        key = (n.name, n.mac, _counter(plan, n.name))
        verdict = n.reinstall
        if verdict.verdict == "not-installed-only":
            verdict = Reinstall("installed-keeps-disk", "installed (reported): keeps booting its local disk; bump "
                                "`reinstall` to apply this") if key in installed else \
                Reinstall("next-netboot", "install-once, but no install reported yet: gets the change at its next "
                          "netboot")
        elif verdict.will_reinstall and not any((name, mac) == (n.name, n.mac) for name, mac, _ in installed):
            verdict = Reinstall("first-install", "no install reported yet: installs at its next netboot")
        nodes.append(dataclasses.replace(n, reinstall=verdict))
    return dataclasses.replace(plan, nodes=tuple(nodes), installs_known=True)


def _counter(plan: Plan, name: str) -> int:
    """The node's `reinstall` counter at BASE (what an install reported so far was made with)."""
    state = plan.base.state
    node = next((n for n in state.nodes if n.name == name), None) if state is not None else None
    return node.reinstall if node is not None else 0
