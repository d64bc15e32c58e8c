"""The JSON-lines form of outcome records on local disk, shared by spill files and dead letters.

Python's own JSON with ASCII escapes rather than orjson: orjson refuses a lone surrogate, and a
record the store cannot take must still be written down exactly as it came.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from router.outcomes.records import FeedbackRecord, PredictionRecord
from router.outcomes.rows import StoreRow, record_of_row

__all__ = ["FORMAT", "VERSION", "decode_record", "encode_line", "encode_record", "known_kind"]

FORMAT = "router-outcome-spill"
VERSION = 1

# The writer's kinds (one queue each) and the names a line gives them.
_KIND_OF_LINE = {"prediction": "predictions", "feedback": "feedback"}
_LINE_OF_KIND = {kind: line for line, kind in _KIND_OF_LINE.items()}


def _plain(obj: Any) -> Any:
    # numpy values become Python values; anything else its repr, so that a line is always written.
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else repr(obj)


def encode_line(obj: dict[str, Any]) -> bytes:
    """One line of a spill or dead-letter file; never fails on a string's content."""
    return (json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=_plain)
            + "\n").encode("ascii")


def known_kind(kind: str) -> bool:
    """True for the writer's kinds, "predictions" and "feedback"."""
    return kind in _LINE_OF_KIND


def encode_record(kind: str, record: Any) -> dict[str, Any]:
    """The line object of a record of the writer's ``kind``: its fields by name."""
    if isinstance(record, StoreRow):
        record = record_of_row(record)
    if isinstance(record, PredictionRecord):
        fields = record._asdict()
    elif dataclasses.is_dataclass(record) and not isinstance(record, type):
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    else:
        fields = {"repr": repr(record)}
    return {"kind": _LINE_OF_KIND.get(kind, kind), "record": fields}


def decode_record(line: Any) -> tuple[str, Any]:
    """The writer's kind and the record of one line object; ``ValueError`` if it is not one."""
    if not isinstance(line, dict):
        raise ValueError("not a record line")
    kind = _KIND_OF_LINE.get(line.get("kind"))  # type: ignore[arg-type]
    fields = line.get("record")
    if kind is None or not isinstance(fields, dict):
        raise ValueError(f"not a record line: kind {line.get('kind')!r}")
    try:
        if kind == "predictions":
            return kind, PredictionRecord(**{**fields,
                                             "features": tuple(fields.get("features") or ())})
        return kind, FeedbackRecord(**fields)
    except TypeError as exc:  # a missing or unknown field
        raise ValueError(f"not a {_LINE_OF_KIND[kind]} record: {exc}") from exc
