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
import math
from collections.abc import Iterator, Sequence

CHUNK_ROWS = 128


def json_chunks(rows: Sequence[object], size: int = CHUNK_ROWS) -> Iterator[str]:
    """`rows` as JSON arrays of at most `size` rows each. Values JSON cannot hold are written as
    their str(): objects, and NaN or infinities (which SQLite's JSON parser would refuse, failing
    the whole statement)."""
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        try:
            yield json.dumps(chunk, default=str, allow_nan=False)
        except ValueError:
            yield json.dumps(_finite(chunk), default=str, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
