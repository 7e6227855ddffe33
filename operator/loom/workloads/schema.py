"""The declared schema (spec.schema), checked at ingest.

Each entry names a column, a type (string, integer, number, boolean,
timestamp), whether nulls are allowed, an optional min/max (numbers) and an
optional list of allowed values. The first problem found fails the ingest with
reason MissingColumn or SchemaViolation; the message names the column, how many
rows break the rule and one example.
"""
from __future__ import annotations

import re
from typing import Any

import pandas as pd

from .dataerrors import DataError

TYPES = ("string", "integer", "number", "boolean", "timestamp")
BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
_INTEGER = re.compile(r"^[+-]?\d+$")


def parse_numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def parse_times(values: pd.Series) -> pd.Series:
    """Text to UTC timestamps (NaT where a value is not ISO 8601)."""
    return pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")


def _bad_typed(values: pd.Series, type_: str) -> pd.Series:
    """Mask of present values that are not of the declared type."""
    present = values.notna()
    if type_ == "string":
        return pd.Series(False, index=values.index)
    if type_ == "integer":
        ok = values.map(lambda v: v is None or bool(_INTEGER.match(str(v).strip())))
    elif type_ == "number":
        ok = parse_numbers(values).notna() | ~present
        ok &= ~values.map(lambda v: v is not None and str(v).strip().lower() in ("inf", "-inf", "nan", "+inf"))
    elif type_ == "boolean":
        ok = values.map(lambda v: v is None or str(v).strip().lower() in BOOLEANS)
    elif type_ == "timestamp":
        ok = parse_times(values).notna() | ~present
    else:
        raise DataError("InvalidSchema", f"unknown type {type_!r} (supported: {', '.join(TYPES)})")
    return present & ~ok.astype(bool)


def _violation(column: str, mask: pd.Series, values: pd.Series, rule: str, total: int) -> DataError:
    count = int(mask.sum())
    example = values[mask].iloc[0]
    return DataError("SchemaViolation",
                     f"column '{column}': {count} of {total} rows {rule}, e.g. {example!r}")


def check(df: pd.DataFrame, schema: list[dict[str, Any]], where: str = "the data") -> None:
    """Raise DataError on the first violation of the declared schema."""
    total = len(df)
    missing = [c["column"] for c in schema if c["column"] not in df.columns]
    if missing:
        raise DataError("MissingColumn", f"declared column{'s' if len(missing) > 1 else ''} "
                                         f"{', '.join(repr(m) for m in missing)} not found in {where} "
                                         f"(columns: {', '.join(map(str, df.columns))})")
    for col in schema:
        name, type_ = col["column"], col.get("type", "string")
        values = df[name]
        if not col.get("nullable", True):
            nulls = values.isna()
            if nulls.any():
                count = int(nulls.sum())
                raise DataError("SchemaViolation", f"column '{name}': {count} of {total} rows are empty "
                                                   f"but the column is not nullable (first at row {int(nulls.to_numpy().argmax()) + 1})")
        bad = _bad_typed(values, type_)
        if bad.any():
            raise _violation(name, bad, values, f"are not of type {type_}", total)
        if col.get("min") is not None or col.get("max") is not None:
            numbers = parse_numbers(values)
            if col.get("min") is not None:
                low = numbers < float(col["min"])
                if low.any():
                    raise _violation(name, low, values, f"are below the minimum {col['min']:g}", total)
            if col.get("max") is not None:
                high = numbers > float(col["max"])
                if high.any():
                    raise _violation(name, high, values, f"are above the maximum {col['max']:g}", total)
        allowed = col.get("allowedValues")
        if allowed:
            outside = values.notna() & ~values.isin([str(a) for a in allowed])
            if type_ == "boolean":
                outside = values.notna() & ~values.map(lambda v: v is None or str(v).strip().lower() in {str(a).lower() for a in allowed})
            if outside.any():
                shown = ", ".join(map(str, allowed[:10])) + (", …" if len(allowed) > 10 else "")
                raise _violation(name, outside, values, f"are not among the allowed values ({shown})", total)


def column_types(df: pd.DataFrame, schema: list[dict[str, Any]]) -> dict[str, str]:
    """Declared types, else inferred: number when every present value parses as one, else string."""
    declared = {c["column"]: c.get("type", "string") for c in schema}
    out = {}
    for name in df.columns:
        if name in declared:
            out[name] = declared[name]
            continue
        present = df[name].dropna()
        # a sample first: most text columns fail on it, sparing a parse of every row
        numeric = (len(present) > 0 and parse_numbers(present.iloc[:100]).notna().all()
                   and parse_numbers(present).notna().all())
        out[name] = "number" if numeric else "string"
    return out
