"""Parsing again only the repository files a commit changed (issue 25).

Called by `build.parse_all` for every node, profile, group, netboot.yaml, assets.yaml and
secrets.yaml document; the daemon's worker hands it the memo of the last commit with `using`
(daemon.worker, kept in the state directory's `render-memo` beside the rendered nodes). A file's
parse is a function of its path and bytes, so a file whose bytes are unchanged gets its earlier
parse back. Kept pickled, and unpickled on each use: whatever later stages do with the values
never reaches the memo.
"""

from __future__ import annotations

import contextlib
import contextvars
import pickle
from collections.abc import Callable, Collection, Iterator

from reconciler.core.model import Issue
from reconciler.core.yamldoc import Document

Parsed = tuple[Document | None, tuple[Issue, ...]]
Memo = dict[str, tuple[bytes, bytes]]  # path -> (its bytes, its parse pickled)

_IN_USE: contextvars.ContextVar[Memo | None] = contextvars.ContextVar("parse_memo", default=None)


@contextlib.contextmanager
def using(memo: Memo | None) -> Iterator[None]:
    """`build.parse_all` in this block takes unchanged files' parses from `memo` and updates it."""
    token = _IN_USE.set(memo)
    try:
        yield
    finally:
        _IN_USE.reset(token)


def parse(path: str, data: bytes, parser: Callable[[str, bytes], Parsed]) -> Parsed:
    """`parser(path, data)`, or its result for the same bytes from the memo in use."""
    memo = _IN_USE.get()
    if memo is not None:
        kept = memo.get(path)
        if kept is not None and kept[0] == data:
            found: Parsed = pickle.loads(kept[1])  # noqa: S301 (our own memo, in the daemon's state directory)
            return found
    result = parser(path, data)
    if memo is not None:
        memo[path] = (data, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return result


def forget_others(paths: Collection[str]) -> None:
    """Drop the memo's entries for files no longer in the repository."""
    memo = _IN_USE.get()
    if memo is not None:
        for gone in memo.keys() - set(paths):
            del memo[gone]
