"""Many rows into SQLite in few statement steps: one statement per chunk of rows, the rows as
bound parameters of a multi-row `VALUES` list.

Used by the lease store and the results store, whose writer threads share the GIL with the
packet threads. sqlite3 releases the GIL around every statement step and, while a packet
thread is busy, taking it back can wait a whole switch interval: `executemany` (a step per
row) left a writer far behind a boot storm. One statement per chunk of rows is one step.

A chunk's rows are plain parameters: nothing for SQLite to parse but the SQL text, which is
the same for every full chunk (sqlite3's statement cache keeps it prepared). The JSON-array
parameter read back by `json_each` that this replaced cost SQLite about twice as much per row.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

CHUNK_ROWS = 128  # 7 columns x 128 = 896 parameters: under SQLite's oldest limit (999)
# One encoder for every row: json.dumps with any non-default argument builds a JSONEncoder per
# call, which cost more than the encoding of a boot event's detail (2.6 -> 1.8 us a row).
_JSON = json.JSONEncoder(default=str, allow_nan=False)


@functools.lru_cache(maxsize=64)
def values_list(width: int, count: int) -> str:
    """`(?,?),(?,?)...`: `count` rows of `width` parameters."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * count)


def chunks(template: str, rows: Sequence[Sequence[Any]], size: int = CHUNK_ROWS) -> Iterator[tuple[str, list[Any]]]:
    """(sql, parameters) per chunk of `rows`: `template` with `{values}` replaced by the chunk's
    `VALUES` rows (`(?,?),(?,?)`), and the chunk's values flattened row by row.

    Every row must have the template's width; a one-column row may be a bare value's 1-tuple."""
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        params: list[Any] = []
        for row in chunk:
            params.extend(row)
        yield template.format(values=values_list(len(chunk[0]), len(chunk))), params


def json_text(value: object) -> str:
    """`value` as JSON text for a column. Values JSON cannot hold are written as their str():
    objects, and NaN or infinities (which SQLite's JSON functions would refuse when the column
    is read with them)."""
    try:
        return _JSON.encode(value)
    except ValueError:
        return _JSON.encode(_finite(value))


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
