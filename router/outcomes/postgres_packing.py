"""Columns of a PostgreSQL query brought over packed: the numbers of every row in one binary
value, and each row's segment values in one JSON text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from router.outcomes.columns import Columns, segments_from

__all__ = ["packed_columns"]


def packed_columns(conn: Any, select: Sequence[tuple[str, str, str]], source: str,
                   params: Sequence[Any], *, segments: Sequence[str] = ()) -> Columns:
    """The ``(name, kind, expression)`` columns of ``SELECT ... source`` as numpy arrays, and
    with ``segments`` (key names) the ``segments`` column (``router.outcomes.columns``).

    The server packs every row into bytes (each value big-endian, 8 bytes: ``int8send`` for
    kind ``i``, ``float8send`` for ``f``) and all rows into one ``bytea``, which numpy reads
    in one call. A million rows as Python tuples, or as COPY messages read one per row, cost
    the client several times what the query itself costs. The result comes in binary format:
    as text, the ``bytea`` would be hex that the server writes and the client decodes, twice
    the bytes and a third of the read's time at a million rows. The segment values travel as
    one JSON text, aggregated in the same pass, so in the same row order as the numbers.
    """
    send = {"i": "int8send", "f": "float8send"}
    row = " || ".join(f"{send[kind]}({expression})" for _, kind, expression in select)
    # Each row's logged JSON object as it is: one parse of the whole text picks the values.
    texts = ", string_agg(coalesce(p.segments, 'null'), ',')" if segments else ""
    packed, *text = conn.execute(f"SELECT string_agg({row}, ''::bytea){texts} {source}",
                                 params, binary=True).fetchone()
    dtype = np.dtype([(name, f">{kind}8") for name, kind, _ in select])
    rows = np.frombuffer(packed or b"", dtype=dtype)
    columns = {name: rows[name].astype(rows[name].dtype.newbyteorder("="))
               for name in dtype.names or ()}
    if segments:
        columns["segments"] = segments_from(orjson.loads(f"[{text[0] or ''}]"), segments)
    return columns
