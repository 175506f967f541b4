"""Many rows into SQLite in few statement steps: rows as JSON arrays, read back by `json_each`.

Used by the lease store and the results store, whose writer threads share the GIL with the
packet threads. sqlite3 releases the GIL around every statement step and, while a packet
thread is busy, taking it back can wait a whole switch interval: `executemany` (a step per
row) left a writer far behind a boot storm. One statement per chunk of rows is one step.
`json.dumps` runs in C and does not give up the GIL while it works, so the rows are dumped a
chunk at a time (128 boot events: about 0.3 ms), never a whole batch at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

CHUNK_ROWS = 128


def json_chunks(rows: Sequence[object], size: int = CHUNK_ROWS) -> Iterator[str]:
    """`rows` as JSON arrays of at most `size` rows each (values json cannot encode: str())."""
    for start in range(0, len(rows), size):
        yield json.dumps(rows[start : start + size], default=str)
