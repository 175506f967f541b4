"""The boot check's last pass over a site's nodes, as a whole: what a one-node commit's boot check
needs of the nodes that did not change, without a step per node (issue 25: the replay of every
kept node was three quarters of such a commit's validation, ~0.3 s at 100,000 nodes).

Called by `BootPlanChecker.check_nodes` (core.bootcheck) with a memo: `build` after a pass that
looked at every node, `replay` instead of such a pass. A node whose replay does the same whatever
the nodes before it did ("free": its trace lints at most its own keys, clean, and adds no finding)
is not visited: what its replay adds is added for a run of such nodes at once, in node order
between the nodes that are visited (the changed ones, and those whose replay depends on what the
nodes before them linted, or adds findings). Its parts:
- a free node at the memo's stand-in (`S`): its lint keys spelt with the stand-in, its user-data
  size; its texts are looked at for the revision (which sends `_replay` another way) through the
  set of every run of hex digits of the revision's length they hold (`windows`);
- a free node replayed at the revision (`R`, a profile that does not name it): its lint keys;
- a node whose trace is one args lint another node ran first (`F`), when that node is an `R` node
  before it: nothing to do while that node is not changed.
Exact: the checker's sets, counts, first clean user-data per template and findings after `replay`
are those of the loop over every node, in the same order; whenever that cannot be told cheaply
(another node list, a changed profile, a changed `R` node others lean on, a size bound passed
within a run, the revision in a kept text), `replay` does nothing and says so, and the caller
runs the loop.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from reconciler.core import template
from reconciler.core.docmemo import BootMemo
from reconciler.core.lint.clean_shape import CleanShape
from reconciler.core.model import CloudInitTemplate, Node
from reconciler.core.places import moved

if TYPE_CHECKING:
    from reconciler.core.bootcheck import BootPlanChecker

_MAX_VISITED = 64  # visited nodes past this and a sixteenth of the nodes: `replay` declines, the loop rebuilds
# "built": indexes made (the daemon's worker reports those made on a commit's path), "dropped":
# pending ones not made because they could not serve the pass that asked (`ready`)
counts: collections.Counter[str] = collections.Counter()


@dataclass
class PassIndex:
    """One pass's nodes (module docstring), by place. The flat lists hold the free nodes' keys in
    node order; `*_at[i]` is where node i's start (len+1 entries)."""

    kept: object  # the memo's `kept` dict it was made over (a reset makes a new one)
    stand_in: str | None
    nodes: Sequence[Node]  # the pass's tuple itself when it was handed one (core.places)
    names: list[str]
    visited: list[int]  # places of the nodes `replay` hands to the caller's step
    generations: dict[str, int]  # profile id -> the memo generation its free nodes were kept at
    providers: dict[int, set[Any]]  # places of `R` nodes `F` nodes lean on -> the args keys they lean on
    windows: set[str]  # hex runs of the revision's length in the `S` nodes' texts
    s_args: list[Any] = field(default_factory=list)
    s_args_at: array[int] = field(default_factory=lambda: array("q", [0]))
    s_user_data: list[Any] = field(default_factory=list)
    s_user_data_at: array[int] = field(default_factory=lambda: array("q", [0]))
    r_args: list[Any] = field(default_factory=list)
    r_args_at: array[int] = field(default_factory=lambda: array("q", [0]))
    r_user_data: list[Any] = field(default_factory=list)
    r_user_data_at: array[int] = field(default_factory=lambda: array("q", [0]))
    sizes_at: array[int] = field(default_factory=lambda: array("q", [0]))  # running sum of free nodes' user-data sizes
    # (template name, autoinstall) -> the places of free nodes linting such a user-data clean
    clean: dict[tuple[str, bool], array[int]] = field(default_factory=dict)


class Pending(NamedTuple):
    """A pass whose index is not made yet (`build` of these, `ready`): made when the process has
    nothing else to do (the daemon's worker, once it has sent a commit's result: `build_pending`),
    or at the next pass. Valid as long as the memo holds it (a check outside a pass drops it).
    `kept`: the memo's dict at that pass (a checker that resets the memo makes a new one)."""

    checker: BootPlanChecker
    nodes: Sequence[Node]
    cloud_init: Mapping[str, CloudInitTemplate]
    kept: object


def ready(index: object, checker: BootPlanChecker | None = None, nodes: Sequence[Node] | None = None
          ) -> PassIndex | None:
    """The index `index` is or stands for (a `Pending` is built now). With the `checker` and
    `nodes` of the pass about to `replay`, a `Pending` that `replay` would decline whatever it
    holds (another node count, a memo reset since, another stand-in) is dropped, not built: an
    invalid commit's pass is built at the next commit's, not when the worker is idle (~0.6 s at
    100,000 nodes, for nothing when that commit adds or removes a node)."""
    if isinstance(index, Pending):
        if checker is not None and nodes is not None and (
                len(nodes) != len(index.nodes) or checker.stand_in != index.checker.stand_in
                or checker.memo is None or index.kept is not checker.memo.kept):
            counts["dropped"] += 1
            return None
        return build(index.checker, index.nodes, index.cloud_init)
    return index if isinstance(index, PassIndex) else None


def build_pending(memos: Iterable[BootMemo]) -> None:
    """Make the indexes the memos' last passes left pending (off the commit's path)."""
    for memo in memos:
        if isinstance(memo.index, Pending):
            memo.index = ready(memo.index)


def _free_ops(trace: Sequence[tuple[Any, ...]]) -> bool:
    """Whether replaying `trace` needs nothing of the nodes before and adds no finding."""
    for op in trace:
        kind = op[0]
        if kind == "args":
            if op[2] != ():
                return False
        elif kind == "user-data":
            if op[3] != ():
                return False
        elif kind != "bytes":
            return False
    return True


def build(checker: BootPlanChecker, nodes: Sequence[Node], cloud_init: Mapping[str, CloudInitTemplate]
          ) -> PassIndex | None:
    """The index of the pass over `nodes` the checker has just made (its memo as that pass left
    it); None when there is none to make (no memo, a name twice)."""
    memo = checker.memo
    if memo is None:
        return None
    counts["built"] += 1
    checker.settled()  # `_kind` asks `checked` of every node: the replayed runs' names put in
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        return None
    stand_in = checker.stand_in
    width = len(stand_in) if stand_in else 0
    index = PassIndex(memo.kept, stand_in, tuple(nodes), names, [], {}, {}, set())
    first_r: dict[object, int] = {}
    generations: dict[str, int | None] = {}
    for place, node in enumerate(nodes):
        kind = _kind(checker, node, cloud_init, generations, first_r, place, width, index)
        if kind == "":
            index.visited.append(place)
        index.s_args_at.append(len(index.s_args))
        index.s_user_data_at.append(len(index.s_user_data))
        index.r_args_at.append(len(index.r_args))
        index.r_user_data_at.append(len(index.r_user_data))
    index.generations = {pid: g for pid, g in generations.items() if g is not None}
    return index


def _kind(checker: BootPlanChecker, node: Node, cloud_init: Mapping[str, CloudInitTemplate],
          generations: dict[str, int | None], first_r: dict[object, int], place: int,
          width: int, index: PassIndex) -> str:
    """What the node at `place` is: "S", "R", "F" or "" (visited); its keys put in `index`."""
    memo = checker.memo
    assert memo is not None
    sizes = index.sizes_at
    sizes.append(sizes[-1])
    kept = memo.kept.get(node.name)
    trace = cast("Sequence[tuple[Any, ...]] | None", kept[2] if kept is not None and type(kept[2]) is tuple else None)
    if kept is None or kept[0] is not node or trace is None or node.name not in checker.checked:
        return ""
    if node.profile not in generations:
        generations[node.profile] = checker._kept_generation(node.profile, cloud_init)
    generation = generations[node.profile]
    if generation is None or kept[1] != generation:
        return ""
    at_stand_in = checker.stand_in is not None and node.profile in checker.at_stand_in
    if not _free_ops(trace):
        if not at_stand_in and len(trace) == 1 and trace[0][0] == "args" and trace[0][2] is None \
                and trace[0][1] in first_r:
            index.providers.setdefault(first_r[trace[0][1]], set()).add(trace[0][1])
            return "F"
        return ""
    if at_stand_in and not width:
        return ""
    if at_stand_in:  # one look over the node's texts, joined by a character no revision holds
        _windows("\n".join(text for op in trace if op[0] != "bytes"
                            for text in (op[1][1] if op[0] == "args" else (op[1][1],))), width, index.windows)
    for op in trace:
        kind = op[0]
        if kind == "args":
            if at_stand_in:
                index.s_args.append(op[1])
            else:
                index.r_args.append(op[1])
                first_r.setdefault(op[1], place)
        elif kind == "bytes":
            sizes[-1] += op[1]
        else:
            if at_stand_in:
                index.s_user_data.append(op[1])
            else:
                index.r_user_data.append(op[1])
            places = index.clean.setdefault((op[1][0], op[2]), array("q"))
            if not places or places[-1] != place:
                places.append(place)
    return "S" if at_stand_in else "R"


_HEX_MAP = bytes(ord("x") if chr(b) in "0123456789abcdef" else ord(".") for b in range(256))


def _windows(text: str, width: int, into: set[str]) -> None:
    """Every substring of `text` a revision (`width` hex digits) could be: those of its runs of hex
    digits that long or longer (found in the text's bytes: a hex digit is one byte in UTF-8)."""
    data = text.encode()
    mapped = data.translate(_HEX_MAP)
    needle = b"x" * width
    at = mapped.find(needle)
    while at != -1:
        end = mapped.find(b".", at + width)
        end = len(mapped) if end == -1 else end
        run = data[at:end].decode()
        into.update(run[i:i + width] for i in range(len(run) - width + 1))
        at = mapped.find(needle, end)


def replay(checker: BootPlanChecker, nodes: Sequence[Node], index: PassIndex | None,
           cloud_init: Mapping[str, CloudInitTemplate], step: Callable[[Node], bool]) -> tuple[bool, PassIndex | None]:
    """The loop over `nodes` with `step` (the loop's body: True when it replayed the node), each
    free node's part done in runs (module docstring): (True, the index for the next pass), or
    (False, None), having done nothing, when the loop must run instead."""
    memo = checker.memo
    if memo is None or index is None or index.kept is not memo.kept \
            or index.stand_in != checker.stand_in or len(nodes) != len(index.nodes):
        return False, None
    if checker.linted_args or checker.linted_user_data or checker.linted_args_at_stand_in \
            or checker.linted_user_data_at_stand_in or checker.clean_user_data or checker.checked or checker.runs \
            or checker.rendered_bytes or checker.too_large:
        return False, None  # not a fresh checker
    revision = checker.revision
    if revision in index.windows or revision == checker.stand_in:
        return False, None
    changed = moved(index.nodes, nodes)  # once for this pair: the render and the worker compare them too
    names = index.names
    if any(names[i] != nodes[i].name for i in changed):
        return False, None
    visited = sorted({*index.visited, *changed})
    if len(visited) > _MAX_VISITED + len(nodes) // 16:
        return False, None  # visited nodes only accumulate: the loop, and an index made anew
    generations = checker.kept_generation
    for pid, generation in index.generations.items():
        now = generations.get(pid, -1)
        if now == -1:
            now = generations[pid] = checker._kept_generation(pid, cloud_init)
        if now != generation:
            return False, None
    replayed = 0
    start = 0
    for place in visited:
        replayed += _add_run(checker, index, start, place)
        replayed += step(nodes[place])
        start = place + 1
        leaned_on = index.providers.get(place)
        if leaned_on and not all(checker._args_linted(key) for key in leaned_on):
            # changed, it no longer lints what later nodes' traces say another node linted: the
            # rest one by one, as the loop (what was done so far is what the loop did)
            replayed += sum(step(node) for node in itertools.islice(nodes, start, None))
            memo.hits += replayed
            memo.replayed += replayed
            return True, build(checker, nodes, cloud_init)
    replayed += _add_run(checker, index, start, len(nodes))
    memo.hits += replayed
    memo.replayed += replayed
    index.nodes, index.visited = tuple(nodes), visited  # (the tuple itself: compared by identity, core.places)
    checker.stepped = [names[i] for i in visited]
    return True, index


def _add_run(checker: BootPlanChecker, index: PassIndex, start: int, end: int) -> int:
    """What replaying the free nodes at places start..end-1 (no visited one among them) adds, in
    their order; how many they are."""
    if start >= end:
        return 0
    checker.runs.append((index.names, start, end))  # put in `checked` only when asked (`settled`)
    checker.linted_args_at_stand_in.update(itertools.islice(index.s_args, index.s_args_at[start], index.s_args_at[end]))
    checker.linted_user_data_at_stand_in.update(
        itertools.islice(index.s_user_data, index.s_user_data_at[start], index.s_user_data_at[end]))
    checker.linted_args.update(itertools.islice(index.r_args, index.r_args_at[start], index.r_args_at[end]))
    checker.linted_user_data.update(
        itertools.islice(index.r_user_data, index.r_user_data_at[start], index.r_user_data_at[end]))
    size = index.sizes_at[end] - index.sizes_at[start]
    if checker.rendered_bytes + size > template.MAX_GENERATION_BYTES and not checker.too_large:
        _count_each(checker, index, start, end)  # which node passes the bound is named
    else:
        checker.rendered_bytes += size
    clean = checker.clean_user_data
    for key, places in index.clean.items():
        if key in clean:
            continue
        at = bisect.bisect_left(places, start)
        if at < len(places) and places[at] < end:
            clean[key] = CleanShape.of(_clean_text(checker, index.names[places[at]], key))
    return end - start


def _clean_text(checker: BootPlanChecker, name: str, key: tuple[str, bool]) -> str:
    """The user-data text of node `name` linted clean for `key`, at the revision (a replay's)."""
    memo = checker.memo
    assert memo is not None
    for op in cast("Sequence[tuple[Any, ...]]", memo.kept[name][2]):
        if op[0] == "user-data" and op[1][0] == key[0] and op[2] == key[1]:
            text = cast(str, op[1][1])
            stand_in = checker.stand_in
            node = memo.kept[name][0]
            return text.replace(stand_in, checker.revision) if stand_in and node.profile in checker.at_stand_in \
                else text
    raise AssertionError(f"no user-data of {key} in the trace of {name}")


def _count_each(checker: BootPlanChecker, index: PassIndex, start: int, end: int) -> None:
    """The run's user-data sizes counted node by node, as the loop does (`_count_bytes`)."""
    memo = checker.memo
    assert memo is not None
    for place in range(start, end):
        name = index.names[place]
        kept = memo.kept.get(name)
        for op in cast("Sequence[tuple[Any, ...]]", kept[2] if kept is not None and type(kept[2]) is tuple else ()):
            if op[0] == "bytes":
                checker._count_bytes(op[1], op[2], name)
