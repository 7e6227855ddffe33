"""Readers for the Dataset source formats: CSV, JSON Lines and Parquet.

Every reader returns a DataFrame of text cells (``None`` for a missing value),
written as the CSV split files will hold them. Typed formats are normalised
once here, so row hashes, schema checks and the published CSV all see the same
values whatever format a row came from. Malformed input raises a DataError
with reason ``MalformedInput`` naming the object and the line or the cause.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .dataerrors import DataError

FORMATS = ("csv", "jsonl", "parquet")
MALFORMED = "MalformedInput"


def read_frame(path: str | Path, fmt: str, uri: str) -> pd.DataFrame:
    """The rows of one local copy of a source object, as text cells."""
    readers = {"csv": read_csv, "jsonl": read_jsonl, "parquet": read_parquet}
    if fmt not in readers:
        raise DataError("UnsupportedFormat", f"{uri}: unsupported format {fmt!r} (supported: {', '.join(FORMATS)})")
    return readers[fmt](Path(path), uri)


def to_text(value: Any) -> str | None:
    """One cell as text: None for null/NaN, true/false, ISO 8601 for times, JSON for nested values."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return None if math.isnan(value) else repr(value)
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        if pd.isna(value):
            return None
        text = value.isoformat()
        return text.replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy scalars and arrays
        return to_text(value.tolist())
    if value is pd.NaT or value is pd.NA:
        return None
    return str(value)


def _frame(rows: list[list[str | None]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _check_header(columns: list[str], uri: str, what: str) -> None:
    if any(not str(c).strip() for c in columns):
        raise DataError(MALFORMED, f"malformed {what} {uri}: empty column name in header")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise DataError(MALFORMED, f"malformed {what} {uri}: duplicate column names {dupes}")


def _decode(path: Path, uri: str, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(MALFORMED, f"malformed {what} {uri}: not UTF-8 text (byte {exc.start})") from exc


def read_csv(path: Path, uri: str) -> pd.DataFrame:
    """CSV with a header row; every row must have as many fields as the header."""
    text = _decode(path, uri, "CSV")
    if not text.strip():
        raise DataError(MALFORMED, f"malformed CSV {uri}: the file is empty (no header row)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        _check_header(header, uri, "CSV")
        rows = []
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(MALFORMED, f"malformed CSV {uri}: line {reader.line_num} has {len(row)} fields, "
                                           f"the header has {len(header)}")
            rows.append([cell if cell != "" else None for cell in row])
    except csv.Error as exc:
        raise DataError(MALFORMED, f"malformed CSV {uri}: line {reader.line_num}: {exc}") from exc
    return _frame(rows, header)


def read_jsonl(path: Path, uri: str) -> pd.DataFrame:
    """One JSON object per line; columns are the keys in order of first appearance."""
    text = _decode(path, uri, "JSON Lines")
    records: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(MALFORMED, f"malformed JSON Lines {uri}: line {number} is not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise DataError(MALFORMED, f"malformed JSON Lines {uri}: line {number} is a JSON "
                                       f"{type(record).__name__}, not an object")
        records.append(record)
        columns.update(dict.fromkeys(record))
    if not records:
        raise DataError(MALFORMED, f"malformed JSON Lines {uri}: no records")
    names = list(columns)
    _check_header(names, uri, "JSON Lines")
    return _frame([[to_text(r.get(c)) for c in names] for r in records], names)


def read_parquet(path: Path, uri: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(MALFORMED, f"malformed Parquet {uri}: {' '.join(str(exc).split())[:200]}") from exc
    names = [str(n) for n in table.column_names]
    _check_header(names, uri, "Parquet")
    columns = [[to_text(v) for v in table.column(i).to_pylist()] for i in range(table.num_columns)]
    rows = [list(r) for r in zip(*columns)] if columns else []
    return _frame(rows, names)
