"""Validation: a Snapshot in, a DesiredState or every finding out, in one pass.

Called by the `validate` and `render` commands, `diff`, and the daemon's reconcile step.
Order: parse (YAML/JSON, safe) -> JSON Schema per document -> build values (`core.build`) ->
cross references (`core.crossref`, `core.sites`) -> every template rendered for every node as
its site serves it, checked and linted (`core.bootcheck`, `core.lint`). Later stages run on
whatever earlier ones could build, so one pass reports as much as it can. Codes and severities: `core.codes`; locations:
`core.locate`.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import operator
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

from reconciler.core import bmcinherit, build, crossref, places, secrets, securecheck, sites, template
from reconciler.core.bootcheck import BootPlanChecker
from reconciler.core.collect import Findings
from reconciler.core.docmemo import BootMemo, ValidateMemo
from reconciler.core.ignition import check_references, read_templates
from reconciler.core.lint.static_seed import lint_static_seed
from reconciler.core.locate import Locator
from reconciler.core.machines import nodes_of_groups
from reconciler.core.model import DesiredState, Issue, Node
from reconciler.core.snapshot import ASSETS_FILE, SECRETS_FILE, SITE_FILE, Snapshot, kind_of


@dataclass(frozen=True)
class Validation:
    """The outcome of validating one snapshot: all findings, and when there is no error what
    each site serves (`sites`, by name). `state`: what a repository without `sites:` serves (its
    one site, named ""); None for a repository with sites, whose states are in `sites` only."""

    state: DesiredState | None
    issues: tuple[Issue, ...]
    sites: Mapping[str, DesiredState] = field(default_factory=dict)

    def for_site(self, site: str | None) -> DesiredState:
        """What `site` serves (None: a repository without sites); InvalidRevision when the commit is
        invalid or has no such site (`core.sites.select`)."""
        states = self.sites or ({sites.IMPLICIT: self.state} if self.state is not None else {})
        return sites.select(states, self.issues, site)

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.is_error)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if not i.is_error)


def validate(snapshot: Snapshot, decrypt: secrets.Decrypter | None = None, memo: ValidateMemo | None = None
             ) -> Validation:
    """Validate a whole repository snapshot, its templates' CPU time bounded as a whole.
    `decrypt` (`--age-identity`): each secrets.yaml value must decrypt with it; without it
    only their structure and the names templates use are checked (`secrets.NOT_CHECKED`).
    Templates are rendered with placeholders for the values either way. `memo` (a long-lived
    process's, `core.docmemo`): files whose bytes it has seen are not parsed or schema-checked
    again; the outcome is the same as without it."""
    with template.commit_budget(nodes=len(snapshot.files)), gc_paused():
        return _validate(snapshot, decrypt, memo)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as it was before, after it). A validation
    makes millions of objects that live until it ends and next to no cycles (386 unreachable
    objects after 10,000 nodes), so each collection walked the growing heap for nothing: with it
    on, 100,000 nodes took 41.3 s of CPU instead of 24.4 s. Reference counting still frees what
    other threads drop meanwhile; only their cycles wait for the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_NAME = operator.attrgetter("name")
_TEMPLATE_DIRS = ("cloud-init/", "ignition/", "generic/")  # what build.cloud_init and read_templates read


def _validate(snapshot: Snapshot, decrypt: secrets.Decrypter | None, memo: ValidateMemo | None) -> Validation:
    out = Findings()
    out.extend(snapshot.refused)
    out.extend(snapshot.unread)
    docs = build.parse_all(snapshot, out, memo)

    site_doc = docs.get(SITE_FILE)
    by_name = build.sites(site_doc, out)
    site_names = sorted(site_doc.data.get("sites") or ()) if site_doc is not None and isinstance(site_doc.data, dict) \
        else []
    assets = build.assets(docs.get(ASSETS_FILE), snapshot.files, out)
    secrets_file = build.secrets_file(docs.get(SECRETS_FILE), out)
    if secrets_file is not None and decrypt is not None:
        out.extend(secrets.check_decrypt(secrets_file, decrypt))
    # (with a memo, the templates' paths are picked out of every path only when the paths differ
    # from the last snapshot's: a look at each of 100,000 node paths three times per commit)
    templated = snapshot
    if memo is not None:
        if memo.templates is None or memo.templates[0] != memo.paths:
            memo.templates = (memo.paths, tuple(p for p in snapshot.files if p.startswith(_TEMPLATE_DIRS)))
        templated = dataclasses.replace(snapshot, files={p: snapshot.files[p] for p in memo.templates[1]})
    cloud_init = build.cloud_init(templated, out)
    ignition_files, ignition_findings = read_templates(templated.files, "ignition")
    generic_files, generic_findings = read_templates(templated.files, "generic")
    out.extend(ignition_findings + generic_findings)
    profiles = build.profiles(docs, out)
    groups = build.groups(docs, out)
    nodes = build.nodes(docs, out, memo)
    groups, machines = nodes_of_groups(groups, nodes, out)
    nodes += machines
    nodes = bmcinherit.resolve(nodes, groups, docs, out, memo.bmc if memo is not None else None)

    where = Locator(docs)
    # A reference to a file that exists but failed (its own errors say why) is not a second
    # error: "profile X does not exist, did you mean Y" would send the user the wrong way.
    # (the prefix first: kind_of on each of 100,000 node files was a tenth of a one-node commit's validation)
    # (with a memo, made again only when the paths differ from the last snapshot's)
    of_paths = memo.of_paths if memo is not None else None
    if of_paths is not None and memo is not None and of_paths[0] == memo.paths:
        declared = cast(dict[str, set[str]], of_paths[1])
    else:
        declared = {
            kind: {build.stem(p) for p in snapshot.files if p.startswith(prefix) and kind_of(p) == kind}
            for kind, prefix in (("profile", "profiles/"), ("cloud-init", "cloud-init/"))
        }
        if memo is not None:
            memo.of_paths = (memo.paths, declared)
    known_profiles = {**dict.fromkeys(declared["profile"]), **profiles}
    crossref.check_profile_refs(profiles, {**dict.fromkeys(declared["cloud-init"]), **cloud_init}, where, out)
    sites.check_members(nodes, groups, site_names, where, out)
    # (tuples: crossref's two checks and the next commit's compare them by identity, core.places)
    listed = tuple(nodes)
    crossref.check_groups(groups, known_profiles, listed, where, out, memo.crossref if memo is not None else None)
    for profile in profiles.values():
        out.extend(lint_static_seed(profile, where))
    check_references(profiles, nodes, groups, ignition_files, generic_files, where, out)
    crossref.check_nodes(listed, known_profiles, by_name, where, out, memo.crossref if memo is not None else None)
    used_secrets = secrets.check_references(secrets_file, profiles, cloud_init, where, out,
                                            failed=secrets_file is None and SECRETS_FILE in snapshot.files)
    by_name_nodes = _sorted_by_name(listed, memo)  # the state's nodes, this very tuple (core.places)
    if by_name:
        for site in by_name.values():
            crossref.check_subnets(site, out)
        sites.check_subnets(by_name, out)
        names = {*used_secrets, *(secrets_file.secrets if secrets_file is not None else ())}
        # each node checked as its site serves it; a group at every site serving it; an unused
        # profile once (rendered for a sample node of the first site)
        checkers = {name: BootPlanChecker(snapshot.revision, site, profiles, assets, out, where,
                                          secrets.placeholders(names).values,
                                          memo.boot.setdefault(name, BootMemo()) if memo is not None else None)
                    for name, site in by_name.items()}
        at_site = _at_site(by_name_nodes, memo)  # (sites.site_of)
        if len(checkers) == 1:  # each node its site's: (sites.site_of, inlined) one site's nodes in turn
            (only, checker), = checkers.items()
            checker.check_nodes(by_name_nodes if all(at == only for at, _ in at_site) else
                                (n for n in by_name_nodes if (n.site or sites.IMPLICIT) == only), cloud_init)
        else:
            for node in by_name_nodes:
                node_checker = checkers.get(node.site or sites.IMPLICIT)
                if node_checker is not None:
                    node_checker.check_node(node, cloud_init)
        for checker in checkers.values():
            checker.finish()
        for group in sorted(groups, key=lambda g: g.id):
            for name, checker in checkers.items():
                if sites.serves(group, name):
                    checker.check_group(group)
        for name, site in by_name.items():
            used = {pid for at, pid in at_site if at == name}
            securecheck.check_profiles(site, profiles, used | {g.profile for g in groups if sites.serves(g, name)},
                                       where, out)
        used = {pid for _, pid in at_site} | {g.profile for g in groups}
        for pid in sorted(set(profiles) - used):
            checkers[min(checkers)].check_unused(profiles[pid], cloud_init)

    issues = tuple(sorted(out.issues, key=lambda i: (i.file, i.line, i.column, i.code, i.message)))
    if not by_name or any(i.is_error for i in issues):
        return Validation(None, issues)
    state = DesiredState(
        revision=snapshot.revision,
        site=by_name[min(by_name)],
        nodes=by_name_nodes,
        profiles=dict(sorted(profiles.items())),
        groups=tuple(sorted(groups, key=lambda g: g.id)),
        cloud_init=dict(sorted(cloud_init.items())),
        assets=assets,
        ignition=ignition_files,
        generic=generic_files,
        secrets=secrets_file,
    )
    if not site_names:
        return Validation(state, issues, {sites.IMPLICIT: state})
    return Validation(None, issues, sites.split(state, by_name))


_SHORTCUT_PLACES = 64  # places changed past this: the nodes sorted and counted whole (as cheap)


def _sorted_by_name(listed: tuple[Node, ...], memo: ValidateMemo | None) -> tuple[Node, ...]:
    """`listed` sorted by name (stable). With `memo`: when `listed` is the last validation's
    build-order tuple with nodes of the same names in a few places, the last sorted tuple with
    those put in theirs (found by bisection), not a sort of every node (issue 25)."""
    last = memo.by_name if memo is not None else None
    out: tuple[Node, ...] | None = None
    if last is not None and len(last[0]) == len(listed):
        before, ordered = last
        changed = places.moved(before, listed)  # crossref's two checks compared these already
        if len(changed) <= _SHORTCUT_PLACES:
            patched = list(ordered)
            at: list[int] = []
            for i in changed:
                name = listed[i].name
                j = bisect.bisect_left(ordered, name, key=_NAME)
                # the same name in the same place, and only once: its sorted place is the old one's
                if before[i].name != name or j == len(ordered) or ordered[j] is not before[i] \
                        or (j + 1 < len(ordered) and ordered[j + 1].name == name):
                    break
                patched[j] = listed[i]
                at.append(j)
            else:
                out = tuple(patched)
                places.note(ordered, out, tuple(sorted(at)))  # the boot check, render and worker compare these
    if out is None:
        out = tuple(sorted(listed, key=_NAME))
    if memo is not None:
        memo.by_name = (listed, out)
    return out


def _at_site(nodes: tuple[Node, ...], memo: ValidateMemo | None) -> set[tuple[str, str]]:
    """The (site, profile) pairs of `nodes`; with `memo`, counted from the last validation's
    sorted nodes by the places that hold other objects (issue 25: no pass over every node)."""
    last = memo.at_site if memo is not None else None
    if memo is not None:
        memo.at_site = None  # until the count is that of `nodes`
    if last is not None and len(last[0]) == len(nodes) and len(changed := places.moved(last[0], nodes)) \
            <= _SHORTCUT_PLACES:
        before, counts = last
        for i in changed:
            was, now = (before[i].site or sites.IMPLICIT, before[i].profile), (nodes[i].site or sites.IMPLICIT,
                                                                             nodes[i].profile)
            if was != now:
                counts[was] -= 1
                counts[now] = counts.get(now, 0) + 1
                if not counts[was]:
                    del counts[was]
    else:
        counts = dict(Counter((n.site or sites.IMPLICIT, n.profile) for n in nodes))
    if memo is not None:
        memo.at_site = (nodes, counts)
    return set(counts)
