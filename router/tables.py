"""Tables handed to the offline functions: a CSV file, a pandas DataFrame or a mapping of column
name to sequence, read into columns of Python values with every fault named on one line.

A CSV cell is read as its text; a missing value (an empty cell, None, NaN) as None. Rows are
numbered from 1, the first row after the header, in every message.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from router.errors import InputValidationError

__all__ = ["is_missing", "read_table", "table_error"]


def table_error(message: str, field: str) -> InputValidationError:
    """A fault of a table given by a caller, for ``field`` (the argument or the column)."""
    return InputValidationError(message, [{"field": field, "message": message}])


def is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def read_table(table: Any, what: str) -> dict[str, list[Any]]:
    """``table`` (a CSV path, a DataFrame, a mapping) as columns of values, missing ones None.

    ``what`` names the argument in messages (``outcomes``, ``offline``). Raises
    ``InputValidationError`` for a file that cannot be read or is not a UTF-8 CSV file with a
    header and rows of the header's length, another type of ``table``, or columns of unlike
    lengths.
    """
    if isinstance(table, str | PathLike):
        columns = _read_csv(Path(table), what)
    elif hasattr(table, "columns") and hasattr(table, "to_dict"):  # a DataFrame
        columns = {str(name): table[name].tolist() for name in table.columns}
    elif isinstance(table, Mapping):
        columns = {str(name): list(values) for name, values in table.items()}
    else:
        raise table_error(f"{what} must be a pandas DataFrame, a CSV path or a mapping of column "
                          f"to sequence, got {type(table).__name__}", what)
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise table_error(f"columns differ in length: {lengths}", what)
    return {name: [None if is_missing(v) else v for v in values]
            for name, values in columns.items()}


def _read_csv(path: Path, what: str) -> dict[str, list[Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise table_error(f"{path} is empty: expected a CSV header and rows", what)
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise table_error(f"{path} names a column twice: {', '.join(repeated)}", what)
            rows: list[list[str]] = []
            for row in reader:
                if not row:  # a blank line, as csv.DictReader skips it
                    continue
                if len(row) != len(header):
                    raise table_error(f"{path} row {len(rows) + 1} (line {reader.line_num}) has "
                                      f"{len(row)} fields, the header {len(header)}", what)
                rows.append(row)
    except OSError as exc:
        raise table_error(f"cannot read {path}: {exc.strerror or exc}", what) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise table_error(f"{path} is not a UTF-8 CSV file: {exc}", what) from None
    return {name: [row[j] for row in rows] for j, name in enumerate(header)}
