"""Split strategies and the leakage report, as pure functions of a DataFrame.

* random: rows sorted by id, then a seeded permutation (source order never matters);
* stratified: the same, per label value, so every split keeps the class mix;
* group: whole entities (``groupColumn``) are assigned, so no entity is in two splits;
* time: forward-chaining by ``timeColumn``: train < cutoffs.validation <= validation
  < cutoffs.test <= test, whatever the order of rows in the files.

A frozen test split (``frozenTestFrom``) replaces the test part: its rows are
excluded from train and validation by row hash, and (group split) by entity,
(time split) by time. The leakage report counts what two splits share, by entity
key and by row hash; for group and time splits it must be zero.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from .dataerrors import DataError
from .schema import parse_times

SPLITS = ("train", "validation", "test")
PAIRS = (("train", "validation"), ("train", "test"), ("validation", "test"))
STRICT = ("group", "time")  # strategies whose leakage must be zero
DEFAULT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


# -- row hashes and duplicates ------------------------------------------------

def row_hashes(df: pd.DataFrame) -> pd.Series:
    """sha256 of each row: the column names (sorted, so column order never matters), then
    every cell length-prefixed (``<len>:<text>``, ``-`` for null), so the encoding is unambiguous."""
    cols = sorted(map(str, df.columns))
    joined: pd.Series | None = None
    for col in cols:
        values = df[col]
        text = values.astype(str)
        cell = (text.str.len().astype(str) + ":" + text).where(values.notna(), "-")
        joined = cell if joined is None else joined + "|" + cell
    prefix = json.dumps(cols, ensure_ascii=False) + "\n"
    rows = joined.tolist() if joined is not None else [""] * len(df)
    return pd.Series([hashlib.sha256((prefix + r).encode("utf-8")).hexdigest() for r in rows],
                     index=df.index, dtype=object)


def drop_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Remove exact duplicate rows (same row hash); keep the first. Returns (rows, removed)."""
    hashes = row_hashes(df)
    dup = hashes.duplicated()
    return df[~dup].reset_index(drop=True), int(dup.sum())


# -- sizes ----------------------------------------------------------------------

def fractions_of(split: dict[str, Any], names: tuple[str, ...] = SPLITS) -> dict[str, float]:
    """The split fractions for ``names``, renormalised to sum to 1."""
    raw = {s: float(split.get(s, DEFAULT_FRACTIONS[s])) for s in names}
    total = sum(raw.values())
    return {s: f / total for s, f in raw.items()}


def sizes_for(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """round(n * f) for every split but the last, which takes the rest."""
    names = list(fractions)
    sizes: dict[str, int] = {}
    left = n
    for name in names[:-1]:
        sizes[name] = min(int(round(n * fractions[name])), left)
        left -= sizes[name]
    sizes[names[-1]] = left
    return sizes


def _empty_check(parts: dict[str, pd.DataFrame], why: str) -> None:
    for name, part in parts.items():
        if len(part) == 0:
            raise DataError("EmptySplit", f"split '{name}' would be empty ({why}); add data or change spec.split")


def _by_id(df: pd.DataFrame, id_col: str) -> pd.DataFrame:
    return df.sort_values(id_col, kind="mergesort").reset_index(drop=True)


# -- strategies -----------------------------------------------------------------

def split_random(df: pd.DataFrame, fractions: dict[str, float], seed: int, id_col: str) -> dict[str, pd.DataFrame]:
    data = _by_id(df, id_col)
    sizes = sizes_for(len(data), fractions)
    order = np.random.default_rng(seed).permutation(len(data))
    parts, start = {}, 0
    for name in fractions:
        idx = np.sort(order[start:start + sizes[name]])  # keep id order inside a split
        parts[name] = data.iloc[idx].reset_index(drop=True)
        start += sizes[name]
    _empty_check(parts, f"{len(data)} rows, fractions " + ", ".join(f"{k} {v:g}" for k, v in fractions.items()))
    return parts


def split_stratified(df: pd.DataFrame, fractions: dict[str, float], seed: int, id_col: str,
                     label: str) -> dict[str, pd.DataFrame]:
    """Each label value is split on its own with the same fractions (seeded), then merged."""
    if label not in df.columns:
        raise DataError("MissingColumn", f"stratified split: label column '{label}' not found")
    if df[label].isna().any():
        raise DataError("SchemaViolation", f"stratified split: {int(df[label].isna().sum())} rows have no "
                                           f"value in label column '{label}'")
    data = _by_id(df, id_col)
    rng = np.random.default_rng(seed)
    picked: dict[str, list[int]] = {name: [] for name in fractions}
    for value in sorted(data[label].unique(), key=str):
        rows = np.flatnonzero((data[label] == value).to_numpy())
        sizes = sizes_for(len(rows), fractions)
        order = rng.permutation(rows)
        start = 0
        for name in fractions:
            picked[name] += order[start:start + sizes[name]].tolist()
            start += sizes[name]
    parts = {name: data.iloc[sorted(idx)].reset_index(drop=True) for name, idx in picked.items()}
    _empty_check(parts, f"{len(data)} rows in {data[label].nunique()} classes of '{label}'")
    return parts


def split_group(df: pd.DataFrame, fractions: dict[str, float], seed: int, id_col: str,
                group: str) -> dict[str, pd.DataFrame]:
    """Whole entities go to one split: entities are shuffled (seeded) and dealt out until
    each split has its share of rows."""
    if group not in df.columns:
        raise DataError("MissingColumn", f"group split: groupColumn '{group}' not found (columns: {', '.join(df.columns)})")
    if df[group].isna().any():
        raise DataError("SchemaViolation", f"group split: {int(df[group].isna().sum())} rows have no value in "
                                           f"groupColumn '{group}', so their entity is unknown")
    data = _by_id(df, id_col)
    counts = data.groupby(group, sort=True).size()
    if len(counts) < len(fractions):
        raise DataError("TooFewEntities",
                        f"group split needs at least {len(fractions)} distinct values of groupColumn '{group}' "
                        f"(one per split) but found {len(counts)}: {', '.join(map(str, counts.index[:5]))}")
    keys = counts.index.to_numpy()[np.random.default_rng(seed).permutation(len(counts))]
    targets = np.cumsum([fractions[n] for n in fractions]) * len(data)
    names = list(fractions)
    owner: dict[Any, str] = {}
    has_group = [False] * len(names)
    done, at = 0, 0
    for i, key in enumerate(keys):
        groups_left = len(keys) - i  # this one included
        later = len(names) - 1 - at
        # move on once this split has its share of rows, or when every entity left is
        # needed to give each later split one; never before this split has an entity
        if later and has_group[at] and (done >= targets[at] or groups_left <= later):
            at += 1
        owner[key] = names[at]
        has_group[at] = True
        done += int(counts[key])
    assigned = data[group].map(owner)
    parts = {name: data[assigned == name].reset_index(drop=True) for name in names}
    _empty_check(parts, f"{len(counts)} entities in '{group}'")
    return parts


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


def split_time(df: pd.DataFrame, id_col: str, time_col: str, cutoffs: dict[str, Any],
               names: tuple[str, ...] = SPLITS) -> dict[str, pd.DataFrame]:
    """Forward-chaining: train before cutoffs.validation, validation before cutoffs.test, test after."""
    if time_col not in df.columns:
        raise DataError("MissingColumn", f"time split: timeColumn '{time_col}' not found (columns: {', '.join(df.columns)})")
    times = parse_times(df[time_col])
    bad = times.isna()
    if bad.any():
        example = df[time_col][bad].iloc[0]
        raise DataError("SchemaViolation", f"time split: {int(bad.sum())} of {len(df)} rows of timeColumn "
                                           f"'{time_col}' are not ISO 8601 timestamps, e.g. {example!r}")
    val_from, test_from = _utc(cutoffs["validation"]), _utc(cutoffs["test"])
    if not val_from < test_from:
        raise DataError("InvalidSpec", f"time split: cutoffs.validation ({cutoffs['validation']}) must be before "
                                       f"cutoffs.test ({cutoffs['test']})")
    which = np.where(times < val_from, "train", np.where(times < test_from, "validation", "test"))
    parts = {name: _by_id(df[which == name], id_col) for name in names}
    _empty_check(parts, f"timeColumn '{time_col}' runs from {times.min().isoformat()} to {times.max().isoformat()}, "
                        f"cutoffs validation {cutoffs['validation']}, test {cutoffs['test']}")
    return parts


def assign(df: pd.DataFrame, split: dict[str, Any], id_col: str, label_col: str | None,
           frozen_test: pd.DataFrame | None = None) -> tuple[dict[str, pd.DataFrame], int]:
    """The three splits of ``df`` by ``split.strategy``; returns (parts, rows excluded).

    With a frozen test split only train and validation are made, from the rows
    that do not share a row hash (and, for group/time splits, an entity or a
    time at or after the frozen test's start) with it.
    """
    strategy = split.get("strategy", "random")
    seed = int(split.get("seed", 42))
    names = SPLITS if frozen_test is None else ("train", "validation")
    excluded = 0
    if frozen_test is not None:
        keep = ~row_hashes(df).isin(set(row_hashes(frozen_test)))
        if strategy == "group" and split.get("groupColumn") in frozen_test.columns:
            keep &= ~df[split["groupColumn"]].isin(set(frozen_test[split["groupColumn"]].dropna()))
        if strategy == "time" and split.get("timeColumn") in frozen_test.columns:
            start = parse_times(frozen_test[split["timeColumn"]]).min()
            times = parse_times(df[split["timeColumn"]]) if split["timeColumn"] in df.columns else None
            if times is not None and pd.notna(start):
                keep &= ~(times >= start)
        excluded = int((~keep).sum())
        df = df[keep.to_numpy()].reset_index(drop=True)
    fractions = fractions_of(split, names)
    if strategy == "random":
        parts = split_random(df, fractions, seed, id_col)
    elif strategy == "stratified":
        parts = split_stratified(df, fractions, seed, id_col, label_col or "")
    elif strategy == "group":
        parts = split_group(df, fractions, seed, id_col, split.get("groupColumn") or "")
    elif strategy == "time":
        cutoffs = dict(split.get("cutoffs") or {})
        if frozen_test is not None:
            # the frozen test replaces the test period: everything from cutoffs.validation
            # on (and before the frozen test's start, see above) is validation
            cutoffs["test"] = "9999-12-31T00:00:00Z"
        parts = split_time(df, id_col, split.get("timeColumn") or "", cutoffs, names)
    else:
        raise DataError("InvalidSpec", f"unknown split strategy {strategy!r}")
    if frozen_test is not None:
        parts["test"] = frozen_test
    return parts, excluded


# -- leakage ----------------------------------------------------------------------

def leakage(parts: dict[str, pd.DataFrame], entity_col: str, time_col: str | None = None) -> dict[str, Any]:
    """What two splits share: entities (by ``entity_col``) and rows (by row hash), per pair;
    for a time column, whether an earlier split reaches into a later one's time."""
    hashes = {n: set(row_hashes(p)) for n, p in parts.items()}
    entities = {n: set(p[entity_col].dropna()) if entity_col in p.columns else set() for n, p in parts.items()}
    pairs = []
    for a, b in PAIRS:
        shared = sorted(entities[a] & entities[b], key=str)
        pairs.append({"splits": [a, b], "entityOverlap": len(shared), "rowOverlap": len(hashes[a] & hashes[b]),
                      "exampleEntities": [str(e) for e in shared[:5]]})
    report: dict[str, Any] = {
        "entityColumn": entity_col,
        "entityOverlap": sum(p["entityOverlap"] for p in pairs),
        "rowOverlap": sum(p["rowOverlap"] for p in pairs),
        "pairs": pairs,
    }
    if time_col:
        spans = {}
        for n, p in parts.items():
            t = parse_times(p[time_col]) if time_col in p.columns else pd.Series([], dtype="datetime64[ns, UTC]")
            spans[n] = (t.min(), t.max())
        order_violations = 0
        for a, b in PAIRS:
            if pd.notna(spans[a][1]) and pd.notna(spans[b][0]) and not spans[a][1] < spans[b][0]:
                order_violations += 1
        report["timeColumn"] = time_col
        report["timeOrderViolations"] = order_violations
        report["spans"] = {n: [s[0].isoformat() if pd.notna(s[0]) else None, s[1].isoformat() if pd.notna(s[1]) else None]
                           for n, s in spans.items()}
    return report


def check_leakage(report: dict[str, Any], strategy: str) -> None:
    """Group and time splits promise zero overlap: anything else fails with reason Leakage."""
    if strategy not in STRICT:
        return
    problems = []
    for pair in report["pairs"]:
        a, b = pair["splits"]
        if strategy == "group" and pair["entityOverlap"]:
            problems.append(f"{pair['entityOverlap']} entities of '{report['entityColumn']}' in both {a} and {b} "
                            f"(e.g. {', '.join(pair['exampleEntities'])})")
        if pair["rowOverlap"]:
            problems.append(f"{pair['rowOverlap']} identical rows in both {a} and {b}")
    if strategy == "time" and report.get("timeOrderViolations"):
        problems.append(f"{report['timeOrderViolations']} split pairs overlap in time ({report['spans']})")
    if problems:
        raise DataError("Leakage", "leakage between splits: " + "; ".join(problems))
