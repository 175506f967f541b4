"""The renderer: a validated DesiredState in, the generation's artifacts `{path: bytes}` out.

Called by the daemon's reconcile step (one generation per applied commit) and by the `render`
command. Pure and byte-for-byte deterministic: the same state gives the same bytes whatever
the order of its nodes, groups, profiles or mapping keys. The layout is docs/GENERATION.md;
each format lives in its own module, and all of them read one `NodeBoot` per node
(`render.nodes`), so they agree on what a node boots.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

from reconciler.core import places, secrets, template
from reconciler.core.bootfiles import other_chain_macs, profile_secure_boot, uses_secure_boot
from reconciler.core.codes import issue
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState, Group, Issue, MatchboxTemplate, Node
from reconciler.core.render import chunks, dhcpd, dnsmasq, fanout, grub, ipxe, kea, matchbox, nocloud, patch, reuse
from reconciler.core.render.files import Entry, RenderedFiles, Since, entry_size, spilled_in, stamped, stored
from reconciler.core.render.nodes import NodeBoot, pin, plan_node, split_initrd
from reconciler.core.render.reuse import NodeMemo
from reconciler.core.template import TemplateFailure

__all__ = ["GENERIC_DIR", "NodeMemo", "RenderedFiles", "render_generation", "render_served"]

GENERIC_DIR = "rendered-generic"  # generic/ holds the templates as committed (matchbox's layout)

_UNSAFE_TEXT = re.compile(r"[^A-Za-z0-9 ._:'()/-]")


def failure_issue(exc: TemplateFailure) -> Issue:
    """A template that failed as rendered for serving, as the finding that makes its commit
    invalid (the daemon, `diff`, `render`): it fails the same way every time."""
    return exc.findings[0]


def render_served(
    state: DesiredState, report_secret: bytes | None = None, decrypt: secrets.Decrypter | None = None,
    memo: NodeMemo | None = None,
) -> RenderedFiles:
    """The generation the daemon serves: secrets.yaml's values decrypted (in memory only) into
    the user-data that names them; InvalidRevision naming each value that does not decrypt, or
    each node whose cloud-config stops being YAML once the values are in (validation parsed it
    with placeholders; a value holding a quote or a newline can break it)."""
    held = memo if memo is not None else reuse.in_use()
    private = _private_paths(state, held)
    token = _CHECKED.set(private)  # where a forked child renders them, it also parses them (`_rendered`)
    try:
        files = render_generation(state, report_secret, secrets.reveal(state.secrets, decrypt), memo)
    finally:
        _CHECKED.reset(token)
    failing = _not_yaml(files, private, held.yaml_checked if held is not None else None)
    if held is not None:
        held.yaml_checked = (files.entries, private, failing)
    broken = [issue("secret-breaks-user-data", node.source,
                    f"node {node.name!r}: its user-data is not valid YAML once secrets.yaml's values are filled in "
                    "(a value holding a quote, a colon or a newline?): write {{ secrets.NAME | tojson }}")
              for node in (state.nodes if failing else ())
              if f"cloud-init/{node.mac}/user-data" in failing]
    if broken:
        raise InvalidRevision(f"{len(broken)} node(s) with user-data broken by a secret's value", tuple(broken))
    return files


def _private_paths(state: DesiredState, held: NodeMemo | None) -> frozenset[str]:
    """`secrets.private_paths(state)`; with a memo, made from the last state's by the nodes in
    places that hold other Node objects (issue 25: not a path made for each of 100,000 nodes per
    commit; the validation memo hands back unchanged nodes as the same objects)."""
    uses = secrets.secret_templates(state)
    if held is None or not uses:
        return secrets.private_paths(state)
    profiles = {pid: profile.cloud_init for pid, profile in state.profiles.items()}

    def path(node: Node) -> str | None:
        cloud_init = profiles.get(node.profile)
        return f"cloud-init/{node.mac}/user-data" if cloud_init is not None and cloud_init in uses else None
    nodes, last = state.nodes, held.private_of
    if last is None or last[1] != (uses, profiles) or len(last[0]) != len(nodes):
        counts = Counter(p for node in nodes if (p := path(node)) is not None)
        private = frozenset(counts)
    else:
        before, _, counts, private = last
        touched: set[str] = set()
        for was, node in [(before[i], nodes[i]) for i in places.moved(before, nodes)]:  # compared once (core.places)
            if (old := path(was)) is not None:
                counts[old] -= 1
                touched.add(old)
            if (new := path(node)) is not None:
                counts[new] += 1
                touched.add(new)
        gone = {p for p in touched if p in private and counts[p] <= 0}
        came = {p for p in touched if p not in private and counts[p] > 0}
        for p in gone:
            del counts[p]
        if gone or came:
            private = (private - gone) | came
    held.private_of = (nodes, (uses, profiles), counts, private)
    return private


def _not_yaml(files: RenderedFiles, private: frozenset[str],
              last: tuple[object, frozenset[str], frozenset[str]] | None) -> frozenset[str]:
    """The private paths whose user-data `_still_yaml` refuses. Given what the generation `files`
    was patched from gave (`last`: its entries, private paths and these), only the paths the
    patch touched are looked at (issue 25): elsewhere the entries are the same objects."""
    since = files.since
    if last is None or since is None or last[0] is not since.entries or (last[1] is not private and last[1] != private):
        return frozenset(p for p in private if not _still_yaml(files, p))
    touched = frozenset(since.paths)
    return (last[2] - touched) | {p for p in touched & private if not _still_yaml(files, p)}


def _still_yaml(files: RenderedFiles, path: str) -> bool:
    """`secrets.still_yaml` of the file served at `path`, remembered by its stored entry, so a
    node the memo keeps is parsed once, not at every commit (issue 25: at ~2.6 ms a parse, a
    one-node commit to 10,000 nodes whose user-data names a secret cost ~17 s). Exact: a kept
    entry differs from the served bytes only where the memo's stand-in revision and its token
    stand for the revision and the node's token, hex strings of the same lengths, and swapping
    hex digits for hex digits cannot make a text parse as YAML or stop it."""
    return _parses(files.raw(path))


_stored = stored  # (render.files; spilled bytes read back: daemon.spill)


_NAME = operator.attrgetter("name")
# A digest of stored user-data -> `secrets.still_yaml` of it (a digest: a key holding the bytes
# would keep those the daemon's worker spills, daemon.spill); on such an entry (`files.Spilled`)
# it is also noted, so that a whole generation's check reads none of them back.
_PARSED: dict[bytes, bool] = {}
_PARSED_MAX = 1 << 18
# The user-data paths `render_served` will parse: a forked render child parses its nodes' (render.fanout).
_CHECKED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("render_checked", default=frozenset())


def _parses(entry: Entry) -> bool:
    spilled = spilled_in(entry)
    if spilled is not None and (noted := spilled.parses) is not None:
        return noted
    data = _stored(entry)
    key = _digest(data)
    known = _PARSED.get(key)
    return _learn(entry, key, secrets.still_yaml(data) if known is None else known)


def _digest(user_data: bytes) -> bytes:
    return hashlib.blake2b(user_data, digest_size=16).digest()


def _learn(entry: Entry, key: bytes, parses: bool) -> bool:
    """Remember `parses` for `entry`, whose stored bytes' `_digest` is `key`."""
    spilled = spilled_in(entry)
    if spilled is not None:
        spilled.parses = parses
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()  # a site's worth many times over: what is still served is parsed again once
    _PARSED[key] = parses
    return parses


def render_generation(
    state: DesiredState, report_secret: bytes | None = None, values: secrets.SecretValues | None = None,
    memo: NodeMemo | None = None,
) -> RenderedFiles:
    """Every artifact of one generation, keyed by repo-style relative path, sorted by path.

    `report_secret`: the daemon's secret for boot-report tokens (`template.report_token`); the
    `render` command and the goldens render without one (tokens are then empty). Bounded: each
    template's output (`core.sandbox`), the CPU time of all of them (`template.commit_budget`)
    and the generation's size; InvalidRevision (a TemplateFailure or `generation-too-large`)
    when a bound is passed. `values`: what `{{ secrets.NAME }}` renders to; without them,
    placeholders (`<secret:NAME>`): only `render_served` and `render --age-identity` reveal.
    `memo`: nodes rendered at an earlier commit, reused where their inputs are unchanged
    (`render.reuse`; the bytes are the same as without it) and updated for the next commit;
    without one, the memo of an enclosing `reuse.using(memo)` block, if any. With a memo, the
    nodes it keeps and the DHCP configs are held at its stand-in revision and stamped when read
    (`render.files.RenderedFiles`)."""
    # The collector paused as in validation: a render makes hundreds of thousands of objects that
    # live until the generation is dropped, and next to no cycles. (Imported here: core.validate
    # imports core.crossref, which imports core.render.)
    from reconciler.core.validate import gc_paused

    with gc_paused(), template.commit_budget(nodes=len(state.nodes)):
        if values is None:
            values = secrets.placeholders(state.secrets.secrets if state.secrets is not None else ())
        return _render_generation(state, report_secret, values, memo if memo is not None else reuse.in_use())


def _by_name(listed: tuple[Node, ...], last: object) -> Sequence[Node]:
    """`listed` sorted by name: `listed` itself when it is the last render's nodes (sorted) with
    other objects in a few places that keep the order (issue 25: no sort of every node per commit;
    the places were found by the boot check already, core.places). A tuple handed on is compared
    by identity in the next commit's patch."""
    before = last.listed if isinstance(last, patch.Last) else ()
    if type(listed) is tuple and type(before) is tuple and before and len(before) == len(listed):
        changed = places.moved(before, listed)
        if len(changed) <= _SORTED_CHECKS and all(
                (i == 0 or listed[i - 1].name <= listed[i].name)
                and (i + 1 == len(listed) or listed[i].name <= listed[i + 1].name) for i in changed):
            return listed  # every other neighbour pair is the last one's, which was in order
    return tuple(sorted(listed, key=_NAME))


_SORTED_CHECKS = 64  # changed places past this: sorted anyway (as cheap, and each check is Python)


def _render_generation(
    state: DesiredState, report_secret: bytes | None, values: secrets.SecretValues, memo: NodeMemo | None
) -> RenderedFiles:
    site, revision = state.site, state.revision
    nodes = _by_name(state.nodes, memo.previous if memo is not None else None)
    groups = sorted(state.groups, key=lambda g: g.id)
    profiles = dict(sorted(state.profiles.items()))
    files: dict[str, Entry] = {}

    boot = ipxe.render_bootstrap(site)
    files["boot.ipxe"] = boot
    files["tftp/" + site.boot_files.ipxe_script] = boot

    files.update(matchbox.template_files(state))
    for profile in profiles.values():
        files[f"profiles/{profile.id}.json"] = matchbox.dump(matchbox.profile_json(profile))
    for group in groups:
        files[f"groups/{group.id}.json"] = matchbox.dump(matchbox.group_json(group))
        files.update(_group_scripts(state, group))

    # Under Secure Boot every known machine has its own GRUB config, also one whose profile keeps
    # iPXE: an external DHCP server hands the shim to all, and a known machine must never fall
    # through to the default group's config.
    secure: dict[str, NodeBoot] = {}  # node name -> its boot plan, kept in node order by the loop
    secure_boot = uses_secure_boot(state)
    sentinel = memo.sentinel_for(revision) if memo is not None and not secure_boot else None
    if memo is not None:
        memo.hits = memo.misses = 0
    site_key = reuse.part_key((site, report_secret)) + reuse.secrets_key(values) if sentinel is not None else b""
    # Each profile's part of its nodes' render key (`reuse.node_key`), None where they are not kept.
    shared_of: dict[str, bytes | None] = {}
    for profile in profiles.values():
        tpl = state.cloud_init.get(profile.cloud_init) if profile.cloud_init else None
        generic = state.generic.get(profile.generic_id or "")
        shared_of[profile.id] = site_key + reuse.part_key(profile) + reuse.part_key(tpl) + reuse.part_key(generic) \
            if sentinel is not None and reuse.reusable(profile, tpl) else None

    def render_node(node: Node) -> Mapping[str, Entry]:
        profile = profiles[node.profile]
        generic = state.generic.get(profile.generic_id or "")

        def render_at(rev: str) -> dict[str, bytes]:
            plan = plan_node(site, node, profiles, state.cloud_init, rev, report_secret, values)
            if secure_boot:
                secure[node.name] = plan
            return _node_files(plan, rev, generic)
        shared = shared_of[node.profile]
        if memo is not None and sentinel is not None and shared is not None:
            return reuse.render_node_reusing(memo, shared, node, sentinel, report_secret, render_at).entries
        if memo is not None:  # not kept (the full loop forgets it too)
            memo.entries.pop(node.name, None)
            memo.last.pop(node.name, None)
        return render_at(revision)

    # Under a memo the site-wide DHCP configs are at the stand-in too: stored equal from commit to
    # commit until a node's DHCP fields change (`RenderedFiles.changed_since` leaves them out).
    at = sentinel if sentinel is not None else revision
    cache = memo.chunks if memo is not None else None
    if cache is not None:
        chunks.prune(cache, len(nodes), 3)

    def render_dhcp() -> dict[str, Entry]:
        # Without Secure Boot in use, every profile boots the site's chain: no machine takes the other.
        other = other_chain_macs(state) if secure_boot else ()
        return {path: conf if sentinel is None else stamped(conf, "", b"")
                for path, conf in (("dhcpd.conf", dhcpd.render(site, nodes, at, other, cache)),
                                   ("kea-dhcp4.conf", kea.render(site, nodes, at, other, cache)),
                                   ("dnsmasq.conf", dnsmasq.render(site, nodes, at, other, cache)))}

    last = memo.previous if memo is not None else None
    if memo is not None and sentinel is not None and isinstance(last, patch.Last) and last.sentinel == sentinel \
            and last.site_key == site_key and last.kept == (len(memo.entries), len(memo.chunks)):
        patched = patch.patch(last, nodes, shared_of, files, _spilling(render_node), (site, at), render_dhcp,
                              template.MAX_GENERATION_BYTES)
        if patched is not None:
            memo.hits += patched.reused
            memo.previous = dataclasses.replace(patched.last, kept=(len(memo.entries), len(memo.chunks)))
            return RenderedFiles(patched.entries, revision, sentinel, report_secret,
                                 Since(last.entries, patched.touched))
    if memo is not None:
        memo.hits = memo.misses = 0
        memo.previous = None  # until this render is made

    others = dict(files)
    total = sum(map(len, files.values()))
    sizes: dict[str, int] = {}
    paths: dict[str, tuple[str, ...]] = {}
    with fanout.meanwhile(render_dhcp) as dhcp_configs:  # while a forked child renders its share
        for node, own in _rendered(nodes, render_node, memo, shared_of if sentinel is not None else None, secure):
            size = sizes[node.name] = sum(map(entry_size, own.values()))
            paths[node.name] = tuple(own)
            total += size
            if total > template.MAX_GENERATION_BYTES:
                finding = issue("generation-too-large", node.source, template.generation_too_large(node.name))
                raise InvalidRevision(finding.message, (finding,))
            files.update(own)
    if memo is not None:
        names = {node.name for node in nodes}
        for gone in memo.entries.keys() - names:
            del memo.entries[gone]
        for gone in memo.last.keys() - names:
            del memo.last[gone]
    if secure_boot:
        files.update(grub.secure_boot_files(site, [secure[n.name] for n in nodes if n.name in secure], revision))
    dhcp = dhcp_configs.result()
    files.update(dhcp)
    entries = {path: files[path] for path in sorted(files)}
    if memo is not None and sentinel is not None:
        memo.previous = patch.Last(sentinel, site_key, shared_of, {node.name: node for node in nodes}, sizes, paths,
                                   frozenset(others), ((site, at), dhcp), entries, sum(sizes.values()),
                                   (len(memo.entries), len(memo.chunks)), tuple(nodes))
    return RenderedFiles(entries, revision, sentinel or "", report_secret)


def _spilling(render_node: Callable[[Node], Mapping[str, Entry]]) -> Callable[[Node], Mapping[str, Entry]]:
    """`render_node` whose entries go to the enclosing spiller as the full loop's do (`_rendered`):
    the patch's nodes rendered again (a one-node commit's) keep their bytes on disk too."""
    def rendered(node: Node) -> Mapping[str, Entry]:
        own = render_node(node)
        reuse.spill(own)
        return own
    return rendered


def _rendered(
    nodes: Sequence[Node], render_node: Callable[[Node], Mapping[str, Entry]], memo: NodeMemo | None,
    shared_of: Mapping[str, bytes | None] | None, secure: dict[str, NodeBoot],
) -> Iterator[tuple[Node, Mapping[str, Entry]]]:
    """The full loop's nodes with their entries, in order, walked by the walker the caller
    installed (`render.fanout`; the daemon's worker forks for half of them). `shared_of` (None:
    the memo keeps no node): what a node kept in the memo was last rendered with; such a node
    needs no rendering. What a rendering leaves besides its entries (the memo's entry and counts,
    the Secure Boot plan) travels with them from a child."""
    counts = [memo.hits, memo.misses] if memo is not None else [0, 0]

    def fresh(node: Node) -> bool:
        if memo is None or shared_of is None or shared_of[node.profile] is None:
            return True
        last = memo.last.get(node.name)
        return last is None or last[0] is not node or last[1] != shared_of[node.profile]

    checked = _CHECKED.get()

    def render(node: Node) -> Mapping[str, Entry]:
        # The user-data `render_served` will parse, parsed here: in whichever process renders the
        # node, while the other renders its share (after the loop, on one CPU, the worker's half
        # took a sixth of a forked render's time). Only a yes is kept: a no may be this deeper
        # stack's RecursionError; `render_served` decides it again at its own depth.
        own = render_node(node)
        path, key, known = "", b"", None
        if checked:
            path = f"cloud-init/{node.mac}/user-data"
            entry = own.get(path)
            spilled = spilled_in(entry) if entry is not None else None
            if path in checked and entry is not None and not (spilled is not None and spilled.parses is not None):
                data = _stored(entry)  # not a kept node's spilled user-data whose answer is noted on it
                known = _PARSED.get(key := _digest(data))
                if known is None and secrets.still_yaml(data):
                    known = True
        reuse.spill(own)  # the worker's memo keeps its bytes on disk (daemon.spill)
        if known is not None:
            _learn(own[path], key, known)  # after it: noted on a spilled entry too
        return own

    def capture(node: Node, own: Mapping[str, Entry]) -> object:
        path = f"cloud-init/{node.mac}/user-data"
        # Only a yes travels (`render`): the parent decides a no.
        key = _digest(_stored(own[path])) if path in checked and path in own else b""
        parsed = key if key and _PARSED.get(key) else None  # its digest, for the parent
        if memo is None:
            return own, None, None, (0, 0), secure.pop(node.name, None), parsed
        last = memo.last.get(node.name)
        done = (memo.hits - counts[0], memo.misses - counts[1])
        counts[:] = [memo.hits, memo.misses]
        return (own, memo.entries.get(node.name), last[1] if last is not None and last[0] is node else None, done,
                secure.pop(node.name, None), parsed)

    def adopt(node: Node, captured: Any) -> Mapping[str, Entry]:
        own, kept, shared, (hits, misses), plan, parsed = captured
        if parsed is not None:
            _learn(own[f"cloud-init/{node.mac}/user-data"], parsed, True)  # spilled already, maybe (`arrived`)
        if memo is not None:
            memo.hits, memo.misses = memo.hits + hits, memo.misses + misses
            if kept is None:
                memo.entries.pop(node.name, None)
            else:
                memo.entries[node.name] = kept
            if shared is None:
                memo.last.pop(node.name, None)
            else:  # the parent's own object where equal: not one copy a node
                same = shared_of.get(node.profile) if shared_of is not None else None
                memo.last[node.name] = (node, same if same is not None and same == shared else shared)
        if plan is not None:
            secure[node.name] = plan
        reuse.spill(own)
        return cast(Mapping[str, Entry], own)

    spiller = reuse.spiller()

    def arrived(captured: Any) -> None:  # on the thread that receives a forked child's nodes
        if spiller is not None and type(captured[0]) is dict:
            spiller(captured[0])

    with fanout.arriving(arrived if spiller is not None else None):
        yield from fanout.walker()(nodes, render, fresh, capture, adopt,
                                   lambda own: sum(map(entry_size, own.values())), template.MAX_GENERATION_BYTES)


def _node_files(plan: NodeBoot, revision: str, generic: MatchboxTemplate | None) -> dict[str, bytes]:
    """One node's own files: iPXE, GRUB, matchbox group/profile/env, NoCloud seed, generic."""
    node = plan.node
    own = {f"ipxe/{node.name}.ipxe": ipxe.render_node(plan, revision),
           f"grub/{node.name}.cfg": grub.render_node(plan, revision),
           **matchbox.node_files(plan), **nocloud.render_node(plan)}
    if generic is not None:
        own[f"{GENERIC_DIR}/{node.name}"] = matchbox.render_generic(
            generic, matchbox.node_metadata(plan), {"mac": node.mac}
        )
    return own


def _group_scripts(state: DesiredState, group: Group) -> dict[str, bytes]:
    """iPXE, GRUB and env files for a repo group (unknown machines, label selectors)."""
    site, revision = state.site, state.revision
    profile = state.profiles[group.profile]
    title = f"group {group.id} profile {group.profile}"
    out = {f"metadata/group-{group.id}.env": matchbox.group_env(group)}
    generic = state.generic.get(profile.generic_id or "")
    if generic is not None:
        out[f"{GENERIC_DIR}/group-{group.id}"] = matchbox.render_generic(generic, group.metadata, group.selector)
    context = template.group_context(site, group, revision)
    try:
        kernel = pin(site, revision, template.render(profile.boot.kernel, context)) if profile.boot.kernel else ""
        entries = [split_initrd(template.render(p, context)) for p in profile.boot.initrd] if kernel else []
        args = tuple(template.render(a, context) for a in profile.boot.args) if kernel else ()
    except template.TemplateFailure as exc:
        reason = _UNSAFE_TEXT.sub("_", f"profile needs a known node ({exc.message})")
        out[f"ipxe/group-{group.id}.ipxe"] = ipxe.render_unrenderable(title, reason, revision)
        out[f"grub/group-{group.id}.cfg"] = grub.render_unrenderable(title, reason, revision)
        return out
    initrd = tuple(pin(site, revision, path) for _, path in entries)
    names = tuple(name for name, _ in entries)
    out[f"ipxe/group-{group.id}.ipxe"] = ipxe.script(title, kernel, initrd, names, args, revision).encode()
    out[f"grub/group-{group.id}.cfg"] = grub.script(title, kernel, initrd, args, revision).encode()
    if group.is_default and profile_secure_boot(site, profile):
        out[grub.SECURE_DEFAULT] = grub.secure_boot_script(site, title, kernel, initrd, args, revision, "default")
    return out
