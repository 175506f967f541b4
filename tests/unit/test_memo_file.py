"""The worker's render memo file (`daemon.worker._save_memo` / `_load_memo`, the state directory's
`render-memo`): written in pieces (a header, then at most MEMO_CHUNK nodes per pickle, not one
pickle of the whole memo, whose table of written objects cost +175 MB at 100,000 nodes), read
back into a memo that a restarted worker reuses node for node, and a file in the format written
before (one pickled NodeMemo) or a torn one is ignored: every node is rendered, nothing fails."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import random
from pathlib import Path

import pytest

from reconciler.adapters.dirsource import read_directory
from reconciler.core.model import DesiredState
from reconciler.core.render import render_generation
from reconciler.core.render.reuse import NodeMemo
from reconciler.core.validate import validate
from reconciler.daemon import worker
from tests.integration.daemon_support import ROOT

SECRET = b"memo-file-test-secret"
render = functools.partial(render_generation, report_secret=SECRET)


def example_state() -> DesiredState:
    snap = read_directory(ROOT / "example-repo")
    snap = dataclasses.replace(snap, revision=hashlib.sha1(b"memo-file").hexdigest())  # spelt like git's
    state = validate(snap).for_site(None)
    assert len(state.nodes) >= 3
    return state


def rendered_memo(state: DesiredState) -> NodeMemo:
    memo = NodeMemo(code=worker.CODE)
    render(state, memo=memo)
    assert memo.misses == len(state.nodes) and memo.chunks
    return memo


def test_a_saved_memo_is_read_back_and_a_restarted_render_reuses_every_node(tmp_path: Path) -> None:
    state = example_state()
    memo = rendered_memo(state)
    path = tmp_path / "render-memo"
    worker._save_memo(path, memo)
    loaded = worker._load_memo(path)
    assert loaded.code == worker.CODE and loaded.sentinel == memo.sentinel
    assert loaded.entries == memo.entries and loaded.chunks == memo.chunks
    assert all(kept.key for kept in loaded.entries.values())  # made at the write
    files = render(state, memo=loaded)
    assert (loaded.hits, loaded.misses) == (len(state.nodes), 0)
    assert dict(files) == dict(render(state))


def test_the_memo_is_written_in_pieces_of_at_most_memo_chunk_nodes(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MEMO_CHUNK", 2)
    state = example_state()
    memo = rendered_memo(state)
    path = tmp_path / "render-memo"
    worker._save_memo(path, memo)
    with open(path, "rb") as fh:
        assert fh.read(len(worker.MEMO_MAGIC)) == worker.MEMO_MAGIC
        code, sentinel, nodes, chunks = pickle.load(fh)
        assert (code, sentinel, nodes, chunks) == (worker.CODE, memo.sentinel, len(state.nodes), len(memo.chunks))
        pieces = []
        while len(fh.peek(len(worker.MEMO_MAGIC) + 32)) > 32:  # the trailer: 32 bytes of SHA-256
            pieces.append(pickle.load(fh))
        assert len(fh.read()) == 32
    node_pieces, chunk_pieces = pieces[:-(-nodes // 2)], pieces[-(-nodes // 2):]
    assert all(len(piece) <= 2 for piece in node_pieces)
    assert all(len(piece) <= 6 for piece in chunk_pieces)
    assert {name for piece in node_pieces for name in piece} == {node.name for node in state.nodes}
    assert sum(map(len, chunk_pieces)) == len(memo.chunks)
    assert worker._load_memo(path).entries == memo.entries


def test_a_memo_file_in_the_format_written_before_is_ignored(tmp_path: Path) -> None:
    """An upgrade finds the single pickle of a NodeMemo that earlier releases wrote: not read (no
    failure); the worker renders every node and writes the new format at its next save."""
    state = example_state()
    memo = rendered_memo(state)
    path = tmp_path / "render-memo"
    path.write_bytes(pickle.dumps(memo, protocol=pickle.HIGHEST_PROTOCOL))
    loaded = worker._load_memo(path)
    assert loaded.code == worker.CODE and not loaded.entries and not loaded.chunks
    render(state, memo=loaded)
    assert (loaded.hits, loaded.misses) == (0, len(state.nodes))


def test_a_torn_or_foreign_memo_file_is_ignored(tmp_path: Path) -> None:
    state = example_state()
    memo = rendered_memo(state)
    path = tmp_path / "render-memo"
    worker._save_memo(path, memo)
    whole = path.read_bytes()
    for broken in (whole[: len(whole) // 2], whole[: len(worker.MEMO_MAGIC) + 3], b"not a memo", b""):
        path.write_bytes(broken)
        loaded = worker._load_memo(path)
        assert loaded.code == worker.CODE and not loaded.entries and not loaded.chunks
    other = NodeMemo(sentinel=memo.sentinel, entries=dict(memo.entries), code="an older release", chunks=memo.chunks)
    worker._save_memo(path, other)
    assert not worker._load_memo(path).entries  # made by other code


def test_a_memo_file_changed_on_disk_is_ignored_whatever_byte_changed(tmp_path: Path) -> None:
    """The memo's bytes are served as read: a file changed after it was written (a flipped bit) must
    not be used, and whatever its pickles then raise (a reviewer's flips raised OverflowError and
    MemoryError, which killed every fresh worker at its start: every commit refused until the file
    was deleted) leaves an empty memo. Before the trailer, most flips loaded a memo (altered bytes)."""
    state = example_state()
    memo = rendered_memo(state)
    path = tmp_path / "render-memo"
    worker._save_memo(path, memo)
    whole = path.read_bytes()
    assert worker._load_memo(path).entries == memo.entries
    flipped = tmp_path / "flipped"
    rng = random.Random(25)
    offsets = sorted({*rng.sample(range(len(whole)), min(1500, len(whole))), 0, len(whole) - 1})
    for offset in offsets:
        changed = bytearray(whole)
        changed[offset] ^= 1 << rng.randrange(8)
        flipped.write_bytes(changed)
        loaded = worker._load_memo(flipped)
        assert not loaded.entries and not loaded.chunks, offset
    flipped.write_bytes(whole + b"x")
    assert not worker._load_memo(flipped).entries
