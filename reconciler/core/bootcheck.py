"""Boot templates checked as they will be served: every profile rendered for every node (and
for every repo group), each rendered kernel, initrd and argument checked and linted.

Called by `core.validate` after the cross references.
"""

from __future__ import annotations

import itertools
import re
import secrets as _random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from reconciler.core import bootpass, lint, template
from reconciler.core.collect import Findings
from reconciler.core.docmemo import BootMemo
from reconciler.core.lint.clean_shape import CleanShape
from reconciler.core.locate import Locator
from reconciler.core.model import Asset, CloudInitTemplate, Group, Issue, Location, Node, Profile, Site
from reconciler.core.render import fanout
from reconciler.core.render.reuse import reusable

UserDataKey = tuple[str, str, bool]  # a user-data lint's key: template name, rendered text, autoinstall
Trace = tuple[tuple[object, ...], ...]  # what the memo keeps of a node's check (`_Traced`), replayed
_SAMPLE_MAC = "52:54:00:00:00:00"  # the sample node an unused profile is rendered for
VALIDATION_SECRET = b"validation"  # stands in for the daemon's report secret when templates render


# What would break out of its place in a rendered boot script: iPXE ends a command at a word
# that is `||`, `&&` or `;` and drops everything from a word starting with `#`; quotes and
# backslashes reach the kernel as written from iPXE but escaped from GRUB, so the same profile
# would boot differently. (White space in args is the `arg-whitespace` lint.)
_IPXE_OPERATORS = frozenset({"||", "&&", ";"})
_QUOTES = re.compile(r"[\"'\\]")
_WHITESPACE = re.compile(r"[\s\x00-\x1f\x7f]")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def unsafe_boot_value(value: str, *, allow_initrd_name: bool = False) -> str | None:
    """Why `value` (a rendered kernel path, initrd entry or argument) cannot go into a boot
    script as one word, or None when it can."""
    words = value.split()
    if allow_initrd_name and len(words) == 3 and words[0] == "--name":
        value = words[1] + words[2]
        words = [words[1], words[2]]
    if not value:
        return "it is empty"
    if _QUOTES.search(value):
        return "it holds a quote or a backslash, which iPXE passes on as is and GRUB escapes"
    for word in words:
        if word in _IPXE_OPERATORS:
            return f"the word {word!r} is an iPXE command separator"
        if word.startswith("#"):
            return f"the word {word!r} starts an iPXE comment"
    if allow_initrd_name and _WHITESPACE.search(value):
        return "it holds white space (only matchbox's '--name NAME PATH' form may)"
    return None


class BootPlanChecker:
    """Renders every boot template for every node, and for every repo group (the machines no node
    file declares), as the renderer will; lints what comes out. Each distinct result is linted once."""

    def __init__(
        self,
        revision: str,
        site: Site,
        profiles: Mapping[str, Profile],
        assets: tuple[Asset, ...] | None,
        out: Findings,
        where: Locator,
        secrets: Mapping[str, str] | None = None,
        memo: BootMemo | None = None,
    ) -> None:
        self.revision, self.site, self.profiles, self.out, self.where = revision, site, profiles, out, where
        self.secrets = secrets or {}  # placeholders (core.secrets): no finding may quote a value
        self.memo = memo
        if memo is not None and (memo.site != site or memo.secrets != self.secrets):
            memo.site, memo.secrets, memo.profiles, memo.kept = site, dict(self.secrets), {}, {}
        self.generation: dict[str, int | None] = {}  # by profile id: its memo generation (None: not kept)
        self.kept_generation: dict[str, int | None] = {}  # by profile id, for `check_node`'s first steps
        self.checked: set[str] = set()
        # Names a replayed pass counts as checked in runs (core.bootpass), not put in `checked`
        # yet: (names, start, end) each (`settled`); and with runs, the names that pass stepped
        # through one by one (every other place was in a run), for `finish` (None: not so).
        self.runs: list[tuple[Sequence[str], int, int]] = []
        self.stepped: list[str] | None = None
        self.after_finish = False  # this checker's pass follows one that reached `finish`
        self.listed = {a.path for a in assets} if assets is not None else None
        if memo is not None and memo.listed != self.listed:  # an asset-not-listed finding is in a trace
            memo.listed = self.listed  # (a new dict: the last pass's index is not for it, core.bootpass)
            memo.kept = {name: (k[0], k[1], None) if type(k[2]) is tuple else k for name, k in memo.kept.items()}
        # The memo's stand-in for the revision (None: none, every render at the revision), as
        # core.render.reuse has for rendering: random, spelt like the revision, so no committed
        # text holds it; a profile naming the revision only as whole `{{ revision }}` or
        # `{{ cloud_init_url }}` outputs renders at it and is kept (`at_stand_in`, by profile id).
        self.stand_in: str | None = None
        if memo is not None and _HEX.fullmatch(revision):
            if len(memo.stand_in) != len(revision):
                memo.stand_in = _random.token_hex((len(revision) + 1) // 2)[:len(revision)]
                memo.profiles, memo.kept = {}, {}
            self.stand_in = memo.stand_in
        self.at_stand_in: set[str] = set()
        self.linted_args: set[tuple[str, tuple[str, ...]]] = set()
        # a user-data text by (template, text, autoinstall): the lint depends on `autoinstall` (a
        # text linted for a plain profile is linted again for an autoinstall one)
        self.linted_user_data: set[UserDataKey] = set()
        # the same, as replays at the stand-in add them: their texts with the stand-in, not the
        # revision (taken to the revision only when asked about: `_args_linted`, `_user_data_linted`)
        self.linted_args_at_stand_in: set[tuple[str, tuple[str, ...]]] = set()
        self.linted_user_data_at_stand_in: set[UserDataKey] = set()
        # per (template, autoinstall): the first render that linted clean, to compare the next with
        self.clean_user_data: dict[tuple[str, bool], CleanShape | None] = {}
        self.uses_token: dict[str, bool] = {}  # by profile id
        self.rendered_bytes = 0  # of every node's user-data: most of what the generation will hold
        self.too_large = False
        self.first_rendered: dict[tuple[str, ...], tuple[str, ...]] = {}  # `_render_many`'s, by texts
        self.bytes_ops: dict[tuple[int, int], tuple[str, int, Location]] = {}  # by size and id of the op's Location
        self.shared_traces: dict[object, Trace] = {}  # `_shared`'s, by args key
        self._tracing = False  # `_check_traced`: every check_node records its trace into `_traced`
        self._traced: list[tuple[object, ...]] | None = None

    def check_nodes(self, nodes: Iterable[Node], cloud_init: Mapping[str, CloudInitTemplate]) -> None:
        """`check_node` of each node in turn; with a memo, the most common case, a kept node whose
        trace is one args lint that another node ran first, done here in a few steps (issue 25:
        the loop over every node is most of what a one-node commit's boot check costs). With no
        node kept (a first validation) and a walker installed (`render.fanout`: the daemon's worker
        and the commands fork), the nodes are checked by it: `_walk`."""
        memo = self.memo
        index = None  # the last pass (core.bootpass), valid while nothing else changed the memo
        if memo is not None:
            index, memo.index = memo.index, None
            self.after_finish = not memo.unfinished  # (False: the last pass ended before its `finish`)
            memo.unfinished = True
        walk = fanout.walker()
        if walk is not fanout.one_by_one and (memo is None or not memo.kept):
            self._walk(walk, list(nodes), cloud_init)
            return
        if memo is None:
            for node in nodes:
                self.check_node(node, cloud_init)
            return
        kept_of, generations = memo.kept.get, self.kept_generation
        linted, checked, at_stand_in = self.linted_args, self.checked, self.at_stand_in

        def step(node: Node) -> bool:  # True: replayed
            kept = kept_of(node.name)
            if kept is not None and kept[0] is node:
                generation = generations.get(node.profile, -1)
                if generation == -1:
                    generation = generations[node.profile] = self._kept_generation(node.profile, cloud_init)
                done = kept[2] if generation is not None and kept[1] == generation and type(kept[2]) is tuple else None
                if done is not None:
                    op = done[0] if len(done) == 1 else None
                    if op is not None and op[0] == "args" and op[2] is None and op[1] in linted \
                            and node.profile not in at_stand_in:
                        checked.add(node.name)  # `_replay` of it: nothing to do
                        return True
                    if self._replay(done, self.profiles[node.profile], cloud_init, node.name):
                        checked.add(node.name)
                        return True
            self.check_node(node, cloud_init)
            return False

        if isinstance(nodes, (list, tuple)):  # the nodes that did not change in runs, not one by one (core.bootpass)
            done, memo.index = bootpass.replay(self, nodes, bootpass.ready(index, self, nodes), cloud_init, step)
            if done:
                return
        # (not after a first pass, which keeps nothing to replay yet: one look at each node spared)
        listed = nodes if isinstance(nodes, (list, tuple)) and memo.kept else None
        replayed = 0
        for node in nodes:
            replayed += step(node)
        memo.hits += replayed
        memo.replayed += replayed
        if listed is not None:  # the index made when the process is idle, or at the next pass
            memo.index = bootpass.Pending(self, listed, cloud_init, memo.kept)

    def _walk(self, walk: fanout.Walker, nodes: list[Node], cloud_init: Mapping[str, CloudInitTemplate]) -> None:
        """`check_node` of each node in turn, by `walk`, which may check some in a forked child
        (issue 25: 100,000 nodes took ~5 s here on one CPU). The child sends each node's trace
        (`_Traced`: the findings it added, the once-per-validation lints with theirs, its bytes)
        and this process adopts them in node order (`_adopt`), so that the findings, their order,
        which node a lint or the size bound is charged to, and the memo are one process's. A
        node the child could not trace (a template failure, whose finding names the first node
        to meet it) is checked here when its turn comes."""
        for pid in dict.fromkeys(n.profile for n in nodes):  # the memo's generations numbered as here, before the fork
            self._kept_generation(pid, cloud_init)

        def check(node: Node) -> list[tuple[object, ...]] | None:
            return self._check_traced(node, cloud_init)

        def capture(node: Node, trace: list[tuple[object, ...]] | None) -> object:
            memo = self.memo
            if trace is None or memo is None or node.name not in self.checked:
                return trace, None
            kept = memo.kept.get(node.name)
            return trace, (kept[1:] if kept is not None and kept[0] is node else None,)

        def adopt(node: Node, captured: Any) -> None:
            trace, kept = captured
            if trace is None or not self._adopt(trace, node.name):
                self.check_node(node, cloud_init)
                return
            if kept is not None and self.memo is not None:
                self.checked.add(node.name)
                record, = kept
                if record is not None:
                    generation, made = record
                    self.memo.kept[node.name] = (node, generation, self._shared(made) if type(made) is tuple else made)
                else:  # (no trace of it kept)
                    last = self.memo.kept.get(node.name)
                    if last is not None and type(last[2]) is tuple:
                        self.memo.kept[node.name] = (last[0], last[1], None)

        for _ in walk(nodes, check, lambda node: True, capture, adopt, lambda result: 0, 1 << 62):
            pass

    def _check_traced(self, node: Node, cloud_init: Mapping[str, CloudInitTemplate]
                      ) -> list[tuple[object, ...]] | None:
        """`check_node`, and what it did (`_Traced`), or None when that is no trace to adopt
        elsewhere: a template failed, or the node was not checked afresh."""
        self._tracing, self._traced = True, None
        try:
            self.check_node(node, cloud_init)
        finally:
            self._tracing = False
        return self._traced

    def _adopt(self, trace: Sequence[tuple[object, ...]], node: str) -> bool:
        """What checking a node did elsewhere (`_walk`), done here as that check would have done it
        here: elsewhere, where fewer nodes had been checked, a lint another node had run here may
        have run again, and a user-data been compared with another clean one (compared here with
        this one's). False, having done nothing, when it names args or a user-data as linted that are
        not linted here: the caller checks the node."""
        # (a user-data linted there by an earlier node whose text was like this process's first clean
        # one is only compared here: this node is then checked here, as one process checks it)
        if self._leans_on_unlinted(trace):
            return False
        for op in trace:
            kind = op[0]
            if kind == "add":
                self.out.add(cast(Issue, op[1]))
            elif kind == "args":
                key = cast(tuple[str, tuple[str, ...]], op[1])
                if op[2] is not None and not self._args_linted(key):
                    self.linted_args.add(key)
                    self.out.extend(cast(tuple[Issue, ...], op[2]))
            elif kind == "bytes":
                self._count_bytes(cast(int, op[1]), cast(Location, op[2]), node)
            elif op[3] is not None:  # None: linted here too (above)
                # `_check_machine`'s steps with the lint's findings known: which texts count as
                # linted, and the first clean one, are what one process's would be
                text_key, autoinstall = cast(UserDataKey, op[1]), cast(bool, op[2])
                found = cast(tuple[Issue, ...], op[3])
                clean = self.clean_user_data.get((text_key[0], autoinstall))
                if not found and clean is not None and clean.same(text_key[1]):
                    continue  # (a text with findings is never like a clean one)
                if self._user_data_linted(text_key):
                    continue
                self.linted_user_data.add(text_key)
                self.out.extend(found)
                if not found and (text_key[0], autoinstall) not in self.clean_user_data:
                    self.clean_user_data[text_key[0], autoinstall] = CleanShape.of(text_key[1])
        return True

    def check_node(self, node: Node, cloud_init: Mapping[str, CloudInitTemplate]) -> None:
        memo = self.memo
        if memo is not None:  # the common case first, in few steps: a kept node replayed (issue 25)
            memo.index = None  # it may change what the last pass kept (`check_nodes` sets it again)
            kept = memo.kept.get(node.name)
            if kept is not None and kept[0] is node:
                generation = self.kept_generation.get(node.profile, -1)
                if generation == -1:
                    generation = self.kept_generation[node.profile] = self._kept_generation(node.profile, cloud_init)
                done = kept[2] if generation is not None and kept[1] == generation and type(kept[2]) is tuple else None
                if done is not None and self._replay(done, self.profiles[node.profile], cloud_init, node.name):
                    self.checked.add(node.name)
                    memo.hits += 1
                    memo.replayed += 1
                    return
        profile = self.profiles.get(node.profile)
        if profile is None:
            return
        # The daemon always renders a real report token: a template branching on it is checked
        # on that branch (a placeholder secret gives a token of the same form). A profile whose
        # templates never name it renders the same without it: the HMAC is not computed.
        uses_token = self._uses_token(profile, cloud_init)
        generation = None if uses_token else self._generation(profile, cloud_init)
        stand_in: _StandIn | None = None
        if self.stand_in is not None and profile.id in self.at_stand_in:
            def at_stand_in() -> Mapping[str, Any]:
                return template.node_context(self.site, node, cast(str, self.stand_in), "", self.secrets)
            stand_in = (self.stand_in, self.revision, _once(at_stand_in))
        renders = _Renders(None, stand_in)
        trace: list[tuple[object, ...]] | None = None
        if generation is not None and self.memo is not None:
            self.checked.add(node.name)
            kept = self.memo.kept.get(node.name)
            if kept is not None and kept[0] is node and kept[1] == generation:
                self.memo.hits += 1
                done = kept[2] if type(kept[2]) is tuple else None
                if done is not None and self._replay(done, profile, cloud_init, node.name):
                    self.memo.replayed += 1
                    return
                renders = _Renders(kept[2] if type(kept[2]) is list else None, stand_in)
            trace = []
        if trace is None and self._tracing:
            trace = []

        def context() -> Mapping[str, Any]:
            token = template.report_token(VALIDATION_SECRET, node.name, self.revision) if uses_token else ""
            return template.node_context(self.site, node, self.revision, token, self.secrets)
        subject = f"node {node.name!r}, {node.source.file}"
        out = self.out if trace is None else _Traced(self.out, trace)
        self._check_machine(profile, context if renders.replaying else _once(context), subject, cloud_init,
                            node.name, renders, out, trace)
        if self._tracing:
            self._traced = None if any(isinstance(r, template.TemplateFailure) for r in renders.record) else trace
        if generation is not None and self.memo is not None:
            # a failure is not kept: one from the commit's CPU budget says nothing of the next commit
            if any(isinstance(r, template.TemplateFailure) for r in renders.record):
                self.memo.kept.pop(node.name, None)
                return
            if trace is not None:
                trace = _kept_trace(trace)
            if trace is not None and stand_in is not None:
                trace = _trace_at_stand_in(trace, renders.record, stand_in[0], self.revision)
            # (the renders only where no trace is kept: a kept trace is replayed, and a node whose
            # replay cannot be is rendered again, as rarely as a node that leaned on a changed one)
            made = renders.record if trace is None else self._shared(tuple(trace))
            self.memo.kept[node.name] = (node, generation, made)

    def _replay(self, trace: Sequence[tuple[object, ...]], profile: Profile,
                cloud_init: Mapping[str, CloudInitTemplate], node: str) -> bool:
        """What checking a kept node's renders did (`_Trace`), done again on this validation's
        state: the findings it added, and where a lint runs once per validation (the args of a
        profile, a user-data text), that lint's findings only when it is the first to ask, as a
        check would. False, having done nothing, when it would be the first but did not lint
        (another node was first when it was recorded): the caller checks it. A trace of a profile
        at the stand-in (`_trace_at_stand_in`) is taken to this revision first."""
        if self.stand_in is not None and profile.id in self.at_stand_in:
            done = self._replay_at_stand_in(trace, node)
            if done is not None:
                return done
            trace = _trace_at_revision(trace, self.stand_in, self.revision)  # a key holds the revision
        if self._leans_on_unlinted(trace):
            return False
        for op in trace:
            kind = op[0]
            if kind == "add":
                self.out.add(cast(Issue, op[1]))
            elif kind == "args":
                key = cast(tuple[str, tuple[str, ...]], op[1])
                if not self._args_linted(key):
                    self.linted_args.add(key)
                    self.out.extend(cast(tuple[Issue, ...], op[2]))
            elif kind == "bytes":
                self._count_bytes(cast(int, op[1]), cast(Location, op[2]), node)
            else:
                self._replay_user_data(cast(UserDataKey, op[1]), cast(bool, op[2]),
                                       cast("tuple[Issue, ...] | None", op[3]))
        return True

    def _replay_at_stand_in(self, trace: Sequence[tuple[Any, ...]], node: str) -> bool | None:
        """`_replay` of a trace kept at the stand-in (`_trace_at_stand_in`: no finding in it)
        without taking it to the revision: the keys it lints go into the `_at_stand_in` sets as
        they are (what a check would add, spelt with the stand-in). None, having done nothing,
        when a key holds the revision itself (from a committed text): `_replay` then takes the
        trace to the revision."""
        stand_in, revision = cast(str, self.stand_in), self.revision
        args_linted, user_data_linted = self.linted_args_at_stand_in, self.linted_user_data_at_stand_in
        for op in trace:
            kind = op[0]
            if kind == "args":
                pid, args = op[1]
                for arg in args:
                    if revision in arg:
                        return None
                if op[2] is None and op[1] not in args_linted and \
                        (pid, tuple(a.replace(stand_in, revision) for a in args)) not in self.linted_args:
                    return False
            elif kind == "user-data":
                name, text, autoinstall = op[1]
                if revision in text:
                    return None
                if op[3] is None and op[1] not in user_data_linted and \
                        (name, text.replace(stand_in, revision), autoinstall) not in self.linted_user_data:
                    return False
        for op in trace:
            kind = op[0]
            if kind == "args":
                if op[2] is not None:  # linted, clean: the key is linted now, whoever was first
                    args_linted.add(op[1])
            elif kind == "bytes":
                self._count_bytes(op[1], op[2], node)
            elif op[3] is not None:  # a user-data linted clean (see `_replay_user_data`)
                user_data_linted.add(op[1])
                if (op[1][0], op[2]) not in self.clean_user_data:
                    self.clean_user_data[op[1][0], op[2]] = CleanShape.of(op[1][1].replace(stand_in, revision))
        return True

    def _leans_on_unlinted(self, trace: Sequence[tuple[object, ...]]) -> bool:
        """Whether `trace` took as linted by another node args or a user-data not linted here."""
        for op in trace:
            if op[0] == "args" and op[2] is None and not self._args_linted(cast(tuple[str, tuple[str, ...]], op[1])):
                return True
            if op[0] == "user-data" and op[3] is None and not self._user_data_linted(cast(UserDataKey, op[1])):
                return True
        return False

    def _args_linted(self, key: tuple[str, tuple[str, ...]]) -> bool:
        """Whether a node or group checked before has linted these args (a replay at the stand-in
        included: its keys hold the stand-in where this one holds the revision)."""
        if key in self.linted_args:
            return True
        if not self.linted_args_at_stand_in or self.stand_in is None:
            return False
        pid, args = key
        return (pid, tuple(a.replace(self.revision, self.stand_in) for a in args)) in self.linted_args_at_stand_in

    def _user_data_linted(self, key: UserDataKey) -> bool:
        """`_args_linted` for a user-data text."""
        if key in self.linted_user_data:
            return True
        if not self.linted_user_data_at_stand_in or self.stand_in is None:
            return False
        return (key[0], key[1].replace(self.revision, self.stand_in), key[2]) in self.linted_user_data_at_stand_in

    def _replay_user_data(self, key: UserDataKey, autoinstall: bool, found: tuple[Issue, ...] | None
                          ) -> None:
        """The user-data part of `_check_machine` with the lint's findings known (`found`; None:
        not linted, which `_replay` allows only when another node has linted this text)."""
        name, text, _ = key
        if found is None:
            return  # another node linted this very text
        if not found:
            # It lints clean: no finding, whichever text the check's shortcut compares it with
            # (`CleanShape.same` holds only for texts that lint clean), so none to make here; the
            # shortcut's reference is set as a check would set it, for the nodes checked after.
            self.linted_user_data.add(key)
            if (name, autoinstall) not in self.clean_user_data:
                self.clean_user_data[name, autoinstall] = CleanShape.of(text)
            return
        clean = self.clean_user_data.get((name, autoinstall))
        if (clean is None or not clean.same(text)) and not self._user_data_linted(key):
            self.linted_user_data.add(key)
            self.out.extend(found)

    def _count_bytes(self, size: int, source: Location, node: str) -> None:
        self.rendered_bytes += size
        if self.rendered_bytes > template.MAX_GENERATION_BYTES and not self.too_large:
            self.too_large = True
            self.out.report("generation-too-large", source, template.generation_too_large(node))

    def _kept_generation(self, pid: str, cloud_init: Mapping[str, CloudInitTemplate]) -> int | None:
        """The generation `check_node` keeps a node of profile `pid` under (None: not kept)."""
        profile = self.profiles.get(pid)
        if profile is None or self._uses_token(profile, cloud_init):
            return None
        return self._generation(profile, cloud_init)

    def _generation(self, profile: Profile, cloud_init: Mapping[str, CloudInitTemplate]) -> int | None:
        """The memo's generation of `profile` as it is now, or None when its renders are not kept:
        no memo, or a template that names the revision (which every commit changes) other than
        as a whole output (those render at the stand-in, `at_stand_in`) or names the report token."""
        if self.memo is None:
            return None
        if profile.id in self.generation:
            return self.generation[profile.id]
        tpl = cloud_init.get(profile.cloud_init) if profile.cloud_init else None
        texts = (profile.boot.kernel, *profile.boot.initrd, *profile.boot.args, *((tpl.text,) if tpl else ()))
        generation: int | None = None
        names = set().union(*(template.referenced_variables(t) & _REVISION_VARIABLES for t in texts))
        if names and self.stand_in is not None and "report_token" not in names and reusable(profile, tpl):
            self.at_stand_in.add(profile.id)
            names = set()
        if not names:
            last = self.memo.profiles.get(profile.id)
            # its document too: a finding at a boot arg points at the line it is on (a kept trace)
            doc = self.where.document(profile.source.file)
            if last is not None and last[0] == profile and last[1] == tpl and last[2] is doc:
                generation = last[3]
            else:
                self.memo.generations += 1
                generation = self.memo.generations
                self.memo.profiles[profile.id] = (profile, tpl, doc, generation)
        self.generation[profile.id] = generation
        return generation

    def settled(self) -> set[str]:
        """`checked`, the names of the replayed runs put in."""
        for names, start, end in self.runs:
            self.checked.update(itertools.islice(names, start, end))
        self.runs.clear()
        return self.checked

    def finish(self) -> None:
        """Forget the kept renders of nodes this validation did not keep (gone, or changed kind)."""
        memo = self.memo
        if memo is None:
            return
        if self.runs and self.stepped is not None and self.after_finish:
            # A pass replayed in runs over the last finished pass's names, in their places: the
            # memo keeps none but those (that finish forgot the others), and every one of them
            # outside a run was stepped through: only those can be unchecked (issue 25: no set
            # of every name, nor a difference with it, per commit).
            kept, checked = memo.kept, self.checked
            for name in self.stepped:
                if name in kept and name not in checked:
                    del kept[name]
        else:
            for name in memo.kept.keys() - self.settled():
                del memo.kept[name]
        memo.unfinished = False

    def _uses_token(self, profile: Profile, cloud_init: Mapping[str, CloudInitTemplate]) -> bool:
        """Whether a template of `profile` (boot values, its cloud-init) names `report_token`."""
        uses = self.uses_token.get(profile.id)
        if uses is None:
            tpl = cloud_init.get(profile.cloud_init) if profile.cloud_init else None
            texts = (profile.boot.kernel, *profile.boot.initrd, *profile.boot.args, *((tpl.text,) if tpl else ()))
            uses = self.uses_token[profile.id] = any("report_token" in template.referenced_variables(t) for t in texts)
        return uses

    def check_unused(self, profile: Profile, cloud_init: Mapping[str, CloudInitTemplate]) -> None:
        """A profile no node or group boots is checked and linted all the same, rendered for a
        sample node: its mistakes are found before a node starts using it. A template that needs a
        real node (its metadata, say) does not render that way and is left for that node."""
        sample = Node(name="example", mac=_SAMPLE_MAC, profile=profile.id, hostname="example", source=profile.source)
        token = template.report_token(VALIDATION_SECRET, sample.name, self.revision)
        context = template.node_context(self.site, sample, self.revision, token, self.secrets)
        self._check_machine(profile, lambda: context, None, cloud_init, None, _Renders(None))

    def _check_machine(
        self,
        profile: Profile,
        context: Callable[[], Mapping[str, Any]],
        subject: str | None,
        cloud_init: Mapping[str, CloudInitTemplate],
        node: str | None,
        renders: _Renders,
        out: Findings | None = None,
        trace: list[tuple[object, ...]] | None = None,
    ) -> None:
        """Boot values and user-data of one machine; `subject` None: template failures are not findings.
        Its renders through `renders` (kept ones replayed: `context` is then made only for a line map).
        `out`: where findings go (default the checker's); `trace`: what the check does, recorded."""
        out = out if out is not None else self.out
        rendered_args = self._check_boot(profile, context, subject, renders, out, trace)
        tpl = cloud_init.get(profile.cloud_init) if profile.cloud_init else None
        if tpl is None:
            return
        try:
            text = renders.call(template.render, tpl.text, context)
        except template.TemplateFailure as exc:
            if subject is not None:
                out.template_failure(Location(tpl.source.file, exc.line, 0), exc, subject)
            return
        if node is not None:
            if trace is not None:  # (one op for every text of this size from this template: the memo keeps each)
                size = len(text)
                op = self.bytes_ops.get((size, id(tpl.source)))
                if op is None:
                    op = self.bytes_ops[size, id(tpl.source)] = ("bytes", size, tpl.source)
                trace.append(op)
            self._count_bytes(len(text), tpl.source, node)
        autoinstall = "autoinstall" in (rendered_args or ())
        clean = self.clean_user_data.get((tpl.name, autoinstall))
        key = (tpl.name, text, autoinstall)
        if clean is not None and clean.same(text):
            if trace is not None:
                trace.append(("user-data", key, autoinstall, (), _SAME_SHAPE))
            return  # lints as that one did: clean (core.lint.clean_shape)
        linted = self._user_data_linted(key)
        if linted and trace is not None:
            trace.append(("user-data", key, autoinstall, None))
        if not linted:
            self.linted_user_data.add(key)
            mapping: list[Callable[[int], int]] = []

            def line_of(rendered: int) -> int:  # rendered again with tracking, once, when a finding needs it
                if not mapping:
                    mapping.append(template.line_map(tpl.text, context()))
                return mapping[0](rendered)

            found = lint.lint_user_data(text, tpl.source, autoinstall, line_of)
            self.out.extend(found)
            if trace is not None:
                trace.append(("user-data", key, autoinstall, tuple(found)))
            if not found and (tpl.name, autoinstall) not in self.clean_user_data:
                self.clean_user_data[tpl.name, autoinstall] = CleanShape.of(text)

    def _shared(self, trace: Trace) -> Trace:
        """A trace the memo keeps, or the equal one kept for another node when it is only args
        another node linted (every node of a profile whose args name nothing of the node: one
        for all, issue 25). Kept traces are tuples: never changed, and smaller than lists."""
        if len(trace) == 1 and trace[0][0] == "args" and trace[0][2] is None:
            return self.shared_traces.setdefault(trace[0][1], trace)
        return trace

    def _render_many(self, texts: tuple[str, ...], context: Mapping[str, Any]) -> tuple[str, ...]:
        """`template.render_many`, its outcome made of the strings the first render of the same
        texts gave where equal (all of it, when all are): the validation memo keeps each node's
        rendered args, most of them the same for every node of a profile (issue 25: ~400 bytes a
        node of the render repository's install profiles)."""
        parts = template.render_many(texts, context)
        first = self.first_rendered.setdefault(texts, parts)
        if first is parts or len(first) != len(parts):
            return parts
        if first == parts:
            return first
        return tuple([a if a == b else b for a, b in zip(first, parts, strict=True)])

    def check_group(self, group: Group) -> None:
        """A repo group's profile is rendered without a node: a node-only variable makes its script
        say so and exit (a warning: machines only that group selects cannot boot it); anything else
        must render, and its output passes the same checks as a node's."""
        profile = self.profiles.get(group.profile)
        if profile is None or not profile.boot.kernel:
            return
        texts = (profile.boot.kernel, *profile.boot.initrd, *profile.boot.args)
        needs = sorted(set().union(*(template.referenced_variables(t) for t in texts)) & template.NODE_ONLY_VARIABLES)
        if needs:
            self.out.report(
                "group-profile-needs-node",
                group.source,
                f"group {group.id!r} boots profile {profile.id!r}, whose templates use {', '.join(needs)}: "
                "a machine no node file declares has none, so it gets a script that says so and exits",
            )
            return
        context = template.group_context(self.site, group, self.revision)
        self._check_boot(profile, lambda: context, f"group {group.id!r}, {group.source.file}", _Renders(None))

    def _check_boot(self, profile: Profile, context: Callable[[], Mapping[str, Any]], subject: str | None,
                    renders: _Renders, out: Findings | None = None,
                    trace: list[tuple[object, ...]] | None = None) -> tuple[str, ...] | None:
        """Render kernel, initrd and args; check and lint them. Returns the rendered args."""
        out = out if out is not None else self.out
        def arg_loc(index: int) -> Location:
            return self.where.arg(profile, index)

        def path_loc(index: int) -> Location:
            return self.where.boot_path(profile, index)

        rendered_args = _render_each(profile.boot.args, context, arg_loc, subject, out, renders, self._render_many)
        boot_paths = _render_each((profile.boot.kernel, *profile.boot.initrd), context, path_loc, subject, out,
                                  renders, self._render_many)
        _check_boot_values(profile, rendered_args or (), boot_paths, arg_loc, path_loc, out)
        if rendered_args is None:
            return rendered_args
        key = (profile.id, rendered_args)
        if self._args_linted(key):
            if trace is not None:
                trace.append(("args", key, None))
            return rendered_args
        self.linted_args.add(key)
        found = lint.lint_args(rendered_args, arg_loc, profile.source, profile.cloud_init is not None)
        if self.listed is not None:
            refs = [(a, i, arg_loc) for i, a in enumerate(rendered_args) if a.startswith("url=")]
            refs += [(p, i, path_loc) for i, p in enumerate(boot_paths or ()) if p]
            for ref, index, loc_of in refs:
                path = lint.asset_path(ref, self.site.server_url)
                if path is not None and path not in self.listed:
                    found.append(lint.finding("asset-not-listed", loc_of(index), path))
        self.out.extend(found)
        if trace is not None:
            trace.append(("args", key, tuple(found)))
        return rendered_args


def _check_boot_values(
    profile: Profile,
    args: tuple[str, ...],
    boot_paths: tuple[str, ...] | None,
    arg_loc: Callable[[int], Location],
    path_loc: Callable[[int], Location],
    out: Findings,
) -> None:
    """No rendered kernel path, initrd or argument may break out of its word (see unsafe_boot_value)."""
    for i, arg in enumerate(args):
        if _WHITESPACE.search(arg):
            continue  # the arg-whitespace lint reports it
        why = unsafe_boot_value(arg)
        if why is not None:
            out.report("boot-value-unsafe", arg_loc(i), f"argument {arg!r}: {why}")
    if boot_paths is None or not profile.boot.kernel:
        return
    for index, value in enumerate(boot_paths):
        initrd = index > 0
        what = "initrd" if initrd else "kernel"
        why = unsafe_boot_value(value, allow_initrd_name=initrd)
        if why is None and not initrd and _WHITESPACE.search(value):
            why = "it holds white space"
        if why is not None:
            out.report("boot-value-unsafe", path_loc(index), f"{what} {value!r}: {why}")
            continue
        path = value.split()[-1] if initrd else value
        if not path.startswith("/") and not _URL.match(path):
            out.report("boot-path-relative", path_loc(index),
                       f"{what} {path!r} is a relative path: write /assets/{path.lstrip('./')} or a full URL")


def _render_each(
    texts: tuple[str, ...],
    context: Callable[[], Mapping[str, Any]],
    loc_of: Callable[[int], Location],
    subject: str | None,
    out: Findings,
    renders: _Renders,
    render_many: Callable[[tuple[str, ...], Mapping[str, Any]], tuple[str, ...]] = template.render_many,
) -> tuple[str, ...] | None:
    try:
        return renders.call(render_many, texts, context)
    except template.TemplateFailure:
        if subject is None:
            return None
    for i, text in enumerate(texts):  # one by one to say which text failed
        try:
            renders.call(template.render, text, context)
        except template.TemplateFailure as exc:
            out.template_failure(loc_of(i), exc, subject)
    return None


_HEX = re.compile(r"[0-9a-f]+")  # a revision a stand-in can be spelt like (core.render.reuse's rule)
_T = TypeVar("_T")
_R = TypeVar("_R")
_REVISION_VARIABLES = frozenset({"revision", "cloud_init_url", "report_token"})  # what differs per commit


def _once(make: Callable[[], Mapping[str, Any]]) -> Callable[[], Mapping[str, Any]]:
    made: list[Mapping[str, Any]] = []

    def get() -> Mapping[str, Any]:
        if not made:
            made.append(make())
        return made[0]
    return get


class _Traced(Findings):
    """The findings of one node's check (`BootPlanChecker.check_node`), passed on to the
    validation's and recorded in its trace, to be replayed at the next validation
    (`BootPlanChecker._replay`): ("add", finding), and, where a lint runs once per validation,
    ("args", key, findings) and ("user-data", key, autoinstall, findings) (None: another node
    ran it; with a fifth part, `_SAME_SHAPE`, when no lint ran: the memo keeps no such op,
    `_kept_trace`), and ("bytes", size, where) for the generation's size bound."""

    def __init__(self, out: Findings, trace: list[tuple[object, ...]]) -> None:
        super().__init__()
        self.out, self.trace = out, trace

    def add(self, issue: Issue) -> None:
        self.trace.append(("add", issue))
        self.out.add(issue)

    def template_failure(self, loc: Location, exc: template.TemplateFailure, subject: str) -> None:
        self.out.template_failure(loc, exc, subject)  # a trace with a failure is not kept


class _Renders:
    """One machine's template renders in call order: made and recorded (`replay` None), or given
    back from a record of the same inputs (`BootMemo`, which keeps only records without a failure):
    the checks that follow run on them as they would on fresh renders, so what they find, and what
    they lint once per commit, is the same. With `stand_in` (the stand-in, the revision, the
    context at the stand-in) the record holds renders at the stand-in, and the checks get them
    with the stand-in replaced by the revision: what rendering at the revision gives, for
    templates naming it only as whole outputs (`reuse.verbatim_only`). A render failing at the
    stand-in is made again at the revision, its failure (or outcome) the one the checks get."""

    def __init__(self, replay: list[object] | None, stand_in: _StandIn | None = None) -> None:
        self.replaying = replay is not None
        self.record: list[object] = replay if replay is not None else []
        self.at = 0
        self.stand_in = stand_in

    def call(self, render: Callable[[_T, Mapping[str, Any]], _R], text: _T,
             context: Callable[[], Mapping[str, Any]]) -> _R:
        stand_in = self.stand_in
        if self.replaying:
            result = self.record[self.at]
            self.at += 1
            return cast(_R, result if stand_in is None else _at(result, stand_in[0], stand_in[1]))
        try:
            made = render(text, context() if stand_in is None else stand_in[2]())
        except template.TemplateFailure as exc:
            self.record.append(exc)
            if stand_in is not None:
                return render(text, context())
            raise
        self.record.append(made)
        return made if stand_in is None else cast(_R, _at(made, stand_in[0], stand_in[1]))


_StandIn = tuple[str, str, Callable[[], Mapping[str, Any]]]  # the stand-in, the revision, the context at the stand-in


def _at(rendered: object, old: str, new: str) -> object:
    """A render (a text, or a tuple of them: `render_many`) with `old` replaced by `new`."""
    if isinstance(rendered, str):
        return rendered.replace(old, new)
    return tuple(t.replace(old, new) for t in cast(tuple[str, ...], rendered))


_SAME_SHAPE = "same-shape"  # a user-data op's fifth part: compared with a clean text (`CleanShape.same`), not linted


def _kept_trace(trace: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """What the memo keeps of a node's trace: without the user-data a clean text's shape vouched
    for (`_SAME_SHAPE`). Its replay would lint nothing and find nothing; all it did was name the
    text as linted and, first of its template, make it the clean reference, which only spares
    later texts a lint (one that finds nothing: such a text lints clean). Not keeping the text
    (~1.1 KB a node, 15 MB of the worker at 20,000) nor the renders (`check_node`) is what keeps
    the memo small; a text that was linted stays, for the nodes whose traces lean on it.
    So the memo's clean reference can differ from a from-scratch run's (the reference node's text
    gains findings, or it is deleted: review of d1f2119, 38 of 2,000 random steps), and findings
    stay equal only because `CleanShape.same` is exact: a text it accepts never lints with findings
    (tests/unit/test_lint_clean_shape.py must stay strict whenever a lint changes)."""
    return [op for op in trace if op[0] != "user-data" or len(op) == 4]


def _trace_at_stand_in(trace: list[tuple[object, ...]], record: list[object], stand_in: str, revision: str
                       ) -> list[tuple[object, ...]] | None:
    """A node's trace made at `revision` from renders at the stand-in (`record`), with the
    revision in its keys replaced by the stand-in, for `_trace_at_revision` to take to the next
    revision; None (not kept) when that is not exact: the renders hold the revision itself (its
    text was not all put there by the stand-in), or the trace holds a finding (whose message may
    quote part of a rendered value)."""
    for rendered in record:
        texts = (rendered,) if isinstance(rendered, str) else cast(tuple[str, ...], rendered)
        if any(revision in t for t in texts):
            return None
    kept: list[tuple[object, ...]] = []
    for op in trace:
        kind = op[0]
        if kind == "add" or (kind == "args" and op[2]) or (kind == "user-data" and op[3]):
            return None
        if kind == "args":
            pid, args = cast(tuple[str, tuple[str, ...]], op[1])
            kept.append(("args", (pid, _recorded(record, tuple(a.replace(revision, stand_in) for a in args))), op[2]))
        elif kind == "user-data":
            name, text, autoinstall = cast(UserDataKey, op[1])
            kept.append(("user-data", (name, _recorded(record, text.replace(revision, stand_in)), autoinstall),
                         op[2], op[3]))
        else:
            kept.append(op)
    return kept


def _recorded(record: list[object], value: _T) -> _T:
    """`value`, or the equal render `record` holds: the memo keeps one copy of a node's user-data,
    not two (issue 25: ~1.1 KB a node, 15 MB of the worker at 20,000 nodes)."""
    for rendered in record:
        if rendered == value:
            return rendered
    return value


def _trace_at_revision(trace: Sequence[tuple[object, ...]], stand_in: str, revision: str) -> list[tuple[object, ...]]:
    """A trace kept at the stand-in (`_trace_at_stand_in`) as checking at `revision` makes it."""
    out: list[tuple[object, ...]] = []
    for op in trace:
        kind = op[0]
        if kind == "args":
            pid, args = cast(tuple[str, tuple[str, ...]], op[1])
            out.append(("args", (pid, tuple(a.replace(stand_in, revision) for a in args)), op[2]))
        elif kind == "user-data":
            name, text, autoinstall = cast(UserDataKey, op[1])
            out.append(("user-data", (name, text.replace(stand_in, revision), autoinstall), op[2], op[3]))
        else:
            out.append(op)
    return out
