"""Whether a rendered user-data lints clean without linting it: it differs from one that did only
where the lints cannot see.

Called by `core.bootcheck`, once per node: a cloud-init template renders one text per node (the
hostname, MAC and address differ), and composing each text's YAML was a quarter of validating a
repository. `lint_user_data` reads the YAML's shape (which nodes are mappings, sequences and
scalars, on which lines), its mapping keys, and the `version` and `interactive-sections` values;
never another value. So a text that differs from a clean reference only by runs of ASCII letters
and digits, each inside a scalar value of the reference that is none of those, lints clean too:

- a run of letters and digits starts, ends or changes no YAML token (indicators, quotes, spaces,
  line breaks, comments are all other characters, and those are the same in both texts), so
  both texts compose to the same nodes on the same lines with the same keys;
- runs in a key, a `version` or `interactive-sections` value, a comment, an anchor, alias or tag
  (`&`, `*`, `!` start its word), a block scalar's header (`|`, `>`) or after a backslash (an
  escape of a double-quoted scalar) are not taken: such a text is linted.

Anything else (another number of lines, a changed space or quote, a reference that did not lint
clean or has a line break libyaml counts and `str.split` does not) is linted as before.
tests/unit/test_lint_clean_shape.py checks the claim against the lint itself.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

import yaml

from reconciler.core.yamldoc import compose

_RUNS = re.compile(r"([A-Za-z0-9]+)")  # split: separators at even indexes, runs at odd ones
# Line breaks YAML 1.1 counts that "\n".split does not (lines would not be libyaml's), and a BOM.
_OTHER_BREAKS = ("\r", "\x85", "\u2028", "\u2029", "\ufeff")
_WORD_END = frozenset(" \t,[]{}")  # where a word of a line starts: after white space or a flow indicator
_NOT_CONTENT = frozenset("&*!|>%@`")  # a word starting so is an anchor, alias, tag, block header, directive
_WATCHED_VALUES = frozenset({"version", "interactive-sections"})  # keys whose values the lints read

Span = tuple[int, int, int, int]  # start line, start column, end line, end column (0-based, end exclusive)


def _span(node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return start.line, start.column, end.line, end.column


class CleanShape:
    """A rendered user-data that linted clean, and what may differ from it in a text that lints
    clean too (`same`)."""

    def __init__(self, text: str, root: yaml.Node | None) -> None:
        self.text = text
        self.lines = text.split("\n")
        self._values: list[Span] = []  # scalar values the lints never read
        self._watched: list[Span] = []  # keys, and the values the lints read
        # by line number, made when a text first differs there (`_fixed_of`)
        self._fixed: dict[int, tuple[list[str], Callable[[list[str]], object] | None, object]] = {}
        if root is not None:
            self._walk(root, False)

    @classmethod
    def of(cls, text: str) -> CleanShape | None:
        """The reference made of `text`, which linted clean; None when it cannot serve as one."""
        if any(c in text for c in _OTHER_BREAKS):
            return None
        try:
            root = compose(text)
        except yaml.YAMLError:  # pragma: no cover - it linted clean, so it composes
            return None
        return cls(text, root)

    def _walk(self, node: yaml.Node, watched: bool) -> None:
        stack = [(node, watched)]
        seen: set[tuple[int, bool]] = set()
        while stack:
            node, watched = stack.pop()
            if (id(node), watched) in seen:  # an alias: the node it names is walked once each way
                continue
            seen.add((id(node), watched))
            if watched:
                self._watched.append(_span(node))
            if isinstance(node, yaml.ScalarNode):
                if not watched:
                    self._values.append(_span(node))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((item, watched) for item in node.value)
            elif isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    stack.append((key, True))
                    read = isinstance(key, yaml.ScalarNode) and key.value in _WATCHED_VALUES
                    stack.append((value, watched or read))

    def same(self, text: str) -> bool:
        """Whether `text` lints as the reference did (clean), by the argument above."""
        if text == self.text:
            return True
        lines = text.split("\n")
        if len(lines) != len(self.lines):
            return False
        for number, (line, mine) in enumerate(zip(lines, self.lines, strict=True)):
            if line == mine:
                continue
            parts = _RUNS.split(line)
            fixed = self._fixed.get(number)
            if fixed is None:
                fixed = self._fixed[number] = self._fixed_of(number)
            own, pick, kept = fixed
            # the separators, and the runs that may not differ, as the reference's
            if len(parts) != len(own) or parts[0::2] != own[0::2] or (pick is not None and pick(parts) != kept):
                return False
        return True

    def _fixed_of(self, number: int) -> tuple[list[str], Callable[[list[str]], object] | None, object]:
        """Line `number` of the reference split into separators and runs, what picks the runs
        that may not differ in a text (`_content`: outside a value the lints do not read) out of
        such a split, and what it picks out of the reference's."""
        own = _RUNS.split(self.lines[number])
        column, runs = 0, []
        for index, part in enumerate(own):
            if index % 2 and not self._content(number, column, column + len(part)):
                runs.append(index)
            column += len(part)
        if not runs:
            return own, None, None
        pick = operator.itemgetter(*runs)
        return own, pick, pick(own)

    def _content(self, line: int, start: int, end: int) -> bool:
        """Whether the reference's characters [start, end) of `line` are inside a scalar value
        the lints do not read, and not an escape, anchor, alias, tag or block scalar header."""
        text = self.lines[line]
        if start > 0 and text[start - 1] == "\\":
            return False
        word = start
        while word > 0 and text[word - 1] not in _WORD_END:
            word -= 1
        if text[word] in _NOT_CONTENT:
            return False
        first, last = (line, start), (line, end)
        inside = any((l0, c0) <= first and last <= (l1, c1) for l0, c0, l1, c1 in self._values)
        return inside and not any(first < (l1, c1) and (l0, c0) < last for l0, c0, l1, c1 in self._watched)
