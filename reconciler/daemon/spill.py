"""The worker's spill file: the render memo's bytes on disk instead of in the worker's memory.

Used by the long-lived worker (daemon.resident, around its renders: `core.render.reuse.spilling`).
Why (issue 25): after a first render of 100,000 nodes the worker held every node's files (~4.3 KB a
node) in its render memo and the result it sends, while the daemon holds the same bytes; most of
them are read again only when sent (a whole result), written to `render-memo`, or compared with a
node rendered again. As each node comes out of the render loop (or a patch: a one-node commit's
node), its entries of SMALLEST bytes or more (iPXE script, GRUB config, user-data, matchbox JSON) go
to unlinked files in the state directory, one for each top directory of the paths, and are replaced
by `files.Spilled` ones, which read them back when needed (and pickle as the bytes); the nodes a
forked render child made are spilled as they arrive (`fanout.arriving`). Measured with
bench.first_reconcile (nice 19): at 20,000 nodes (load ~6) the worker's peak 331 -> 279 MB; at
100,000 (load 3-4.4, 2026-12-07 15:59) worker and forkserver 1,390 -> 880 MB, with the daemon's 958:
1,838 MB. Its cost, in one process at 20,000 (three interleaved pairs, load 5-6): the render's main
thread 2.75 -> 2.82 s of CPU (median), Spill.entries ~10 us a node, Spill.resolved +0.07 s a whole
send. The files only grow with what is rendered anew, and go when the worker process does: once they
hold over twice what the memo reads (`Spill.outgrown`), the daemon replaces the worker before the
next commit (a template every node uses, changed again and again, grew them ~0.4 GB a time at
100,000 nodes, unseen by `du`). Not used with --verify-incremental (it compares every file), nor in
a process that did not make it (a forked render child). A write that fails leaves the bytes in
memory and stops spilling; a read that fails raises (the commit fails, the worker is replaced and
starts from `render-memo`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from reconciler.core.render.files import SPILLED_MAX, Entry, Spilled, unspilled
from reconciler.core.render.reuse import NodeMemo

FLUSH_BYTES = 256 << 10  # written to the file in pieces of this much (a buffer for each file)
SPAN_GAP = 16 << 10  # `resolved` reads a chunk's entries of one file in one piece where no further apart
_write = os.write  # (the tests refuse it)
SMALLEST = 256  # entries shorter than this stay in memory (a Spilled and its tuple are ~150 bytes)


class Spill:
    """Append-only files of stored bytes, one for each top directory of the paths (a chunk of
    paths in order, as sent, is then one run of a file), read back at offsets (`Spilled`)."""

    def __init__(self, directory: Path | None = None, slack: int = 64 << 20) -> None:
        self._directory = directory
        self._pid = os.getpid()
        self._streams: dict[str, _Stream] = {}
        self.broken = False
        self.spilled = 0  # bytes put
        self._checked = 0  # `spilled` when `outgrown` last looked
        self._live = 0  # the live bytes it found then
        self._slack = slack  # dead bytes past twice the live ones and this: `outgrown` (worker.Limits.spill_slack)
        # The worker's main thread and the thread receiving a forked render child's nodes both put.
        self._lock = threading.Lock()

    def _stream(self, path: str) -> _Stream | None:
        kind = path[:path.find("/")]
        stream = self._streams.get(kind)
        if stream is None and not self.broken:
            try:
                stream = self._streams[kind] = _Stream(_unlinked(self._directory), self._lock)
            except OSError:
                self.broken = True
        return stream

    def entries(self, own: dict[str, Entry]) -> None:
        """Spill a node's large entries (`reuse.spilling`): in place, in the memo's dict. Called
        for every node of a whole render: one loop, nothing called per entry but what must be."""
        if self.broken or os.getpid() != self._pid:
            return  # a forked render child: the worker spills what it adopts
        streams = self._streams
        with self._lock:
            for path, entry in own.items():  # values replaced in place: the dict keeps its size
                raw: object = entry[0] if type(entry) is tuple else entry
                if type(raw) is not bytes:
                    continue  # spilled already (a kept node)
                size = len(raw)
                if size < SMALLEST or size > SPILLED_MAX:
                    continue
                stream = streams.get(path[:path.find("/")]) or self._stream(path)
                if stream is None or stream.broken:
                    self.broken = True
                    return
                buffer = stream.buffer  # `_Stream.put`, inlined: this runs for every entry of a whole render
                offset = stream.flushed + len(buffer)
                buffer += raw
                if len(buffer) >= FLUSH_BYTES and not stream.flush():
                    self.broken = True
                    return
                self.spilled += size
                if raw is entry:  # a plain entry: the Spilled itself (`files.Spilled`)
                    own[path] = Spilled(stream, offset, size)  # type: ignore[assignment]
                else:
                    own[path] = (Spilled(stream, offset, size), entry[1], entry[2])  # type: ignore[assignment]

    def resolved(self, items: Iterable[tuple[str, Entry]]) -> dict[str, Entry]:
        """`items` as a dict whose spilled entries are as they were before (to be sent:
        `files.unspilled`), entries of one file no further apart than SPAN_GAP read in one piece."""
        return unspilled(items, SPAN_GAP)

    def outgrown(self, memo: NodeMemo) -> bool:
        """Whether the files are mostly bytes no entry of `memo` reads any more: a
        node rendered again appends its new bytes and leaves the old ones, and nothing is ever
        reclaimed (the files are unlinked: `du` does not see them) until the worker process goes.
        Looked at only once more than a 64th of the live bytes it found last time were spilled
        since (a sum over every kept node: ~0.5 ms at 10,000, not at every one-node commit): the
        bound is passed by at most that much before it is seen. The live bytes are the kept
        nodes' sizes, an upper bound."""
        if self.spilled - self._checked <= self._live >> 6:
            return False
        self._checked = self.spilled
        self._live = sum(kept.size for kept in memo.entries.values())
        return self.spilled > 2 * self._live + self._slack

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()


class _Stream:
    """One append-only file (`Spill`): written in pieces of FLUSH_BYTES, read at offsets. Its
    buffer is appended to by `Spill.entries`, holding the Spill's lock."""

    def __init__(self, fd: int, lock: threading.Lock) -> None:
        self._fd = fd
        self._lock = lock
        self.buffer = bytearray()
        self.flushed = 0  # bytes in the file; the buffer's follow
        self.broken = False

    def flush(self) -> bool:
        view = memoryview(self.buffer)
        try:
            while view:
                written = _write(self._fd, view)
                view = view[written:]
                self.flushed += written
        except OSError:
            self.broken = True  # what was put before stays readable: from the file or the buffer
            return False
        finally:
            left = bytes(view)
            view.release()
            self.buffer = bytearray(left)  # not the old one: it would keep its size
        return True

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            flushed = self.flushed
            if offset + size > flushed:  # all or part of it not written yet
                start = max(0, offset - flushed)
                tail = bytes(self.buffer[start:offset + size - flushed])
                if offset >= flushed:
                    return tail
                size = flushed - offset
            else:
                tail = b""
        data = os.pread(self._fd, size, offset)  # written: never changes
        while len(data) < size:  # a short read (a signal): the rest
            more = os.pread(self._fd, size - len(data), offset + len(data))
            if not more:
                raise OSError(f"the worker's spill file ends at {offset + len(data)}, {size} bytes read at {offset}")
            data += more
        return data + tail if tail else data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _unlinked(directory: Path | None) -> int:
    """A file nobody else can open, gone when closed: O_TMPFILE where the system has it."""
    where = str(directory) if directory is not None else tempfile.gettempdir()
    flags = getattr(os, "O_TMPFILE", 0)
    if flags:
        with contextlib.suppress(OSError):
            return os.open(where, flags | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fd, name = tempfile.mkstemp(prefix=".worker-spill-", dir=where)
    os.unlink(name)
    return fd
