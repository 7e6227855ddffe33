"""The data report (statistics of one version) and the data card (Markdown and JSON).

The report is what ingest measured: rows read, exact duplicates removed, nulls
and per-column statistics. The card adds what a reader needs to trust the data:
provenance of every source, the declared schema, the splits and their leakage
report, and drift against the baseline version.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from .schema import parse_numbers

TOP = 10


def column_stats(values: pd.Series, type_: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "nulls": int(values.isna().sum()), "distinct": int(values.nunique())}
    if type_ in ("number", "integer"):
        numbers = parse_numbers(values).dropna()
        if len(numbers):
            out.update({"min": float(numbers.min()), "max": float(numbers.max()), "mean": round(float(numbers.mean()), 6),
                        "std": round(float(numbers.std(ddof=0)), 6), "median": float(numbers.median())})
    else:
        top = values.dropna().astype(str).value_counts().head(TOP)
        out["top"] = [{"value": str(k), "count": int(v)} for k, v in top.items()]
    return out


def data_report(df: pd.DataFrame, types: dict[str, str], rows_read: int, duplicates: int,
                excluded: int = 0) -> dict[str, Any]:
    return {
        "rowsRead": int(rows_read),
        "duplicatesRemoved": int(duplicates),
        "excludedRows": int(excluded),
        "rows": int(len(df)),
        "nulls": int(df.isna().sum().sum()),
        "columns": {name: column_stats(df[name], types.get(name, "string")) for name in df.columns},
    }


def data_card(*, name: str, namespace: str, version: str, sources: list[dict[str, Any]], objects: list[dict[str, Any]],
              schema: list[dict[str, Any]], report: dict[str, Any], split: dict[str, Any],
              splits: dict[str, dict[str, Any]], leakage: dict[str, Any], drift: dict[str, Any] | None,
              frozen_test: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "kind": "DataCard", "apiVersion": "loom.dev/v1alpha1",
        "dataset": {"name": name, "namespace": namespace, "version": version},
        "provenance": [{"uri": s["uri"], "format": s.get("format", "csv"), **(s.get("provenance") or {})} for s in sources],
        "objects": objects,
        "schema": schema,
        "statistics": report,
        "split": split,
        "splits": splits,
        "frozenTest": frozen_test,
        "leakage": leakage,
        "drift": drift,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines + [""]


def markdown(card: dict[str, Any]) -> str:
    ds, stats = card["dataset"], card["statistics"]
    out = [f"# Data card: {ds['namespace']}/{ds['name']}", "", f"Version `{ds['version']}`", ""]
    out += ["## Provenance", ""]
    out += _table(["source", "format", "owner", "license", "consent", "collected at", "description"],
                  [[p["uri"], p["format"], p.get("owner"), p.get("license"), p.get("consent"), p.get("collectedAt"),
                    p.get("description")] for p in card["provenance"]])
    out += _table(["object", "sha256", "bytes"], [[o["uri"], o["digest"], o.get("bytes")] for o in card["objects"]])
    out += ["## Schema", ""]
    if card["schema"]:
        out += _table(["column", "type", "nullable", "min", "max", "allowed values"],
                      [[c["column"], c.get("type", "string"), c.get("nullable", True), c.get("min"), c.get("max"),
                        ", ".join(map(str, c.get("allowedValues") or []))] for c in card["schema"]])
    else:
        out += ["No schema declared; types below are inferred.", ""]
    out += ["## Statistics", "",
            f"{stats['rowsRead']} rows read, {stats['duplicatesRemoved']} exact duplicates removed, "
            f"{stats['excludedRows']} new rows kept out because they fall in the frozen test split "
            f"(its rows, entities or period), {stats['rows']} rows published, "
            f"{stats['nulls']} empty cells.", ""]
    out += _table(["column", "type", "nulls", "distinct", "min", "max", "mean", "top values"],
                  [[n, c["type"], c["nulls"], c["distinct"], c.get("min"), c.get("max"), c.get("mean"),
                    ", ".join(f"{t['value']} ({t['count']})" for t in c.get("top", [])[:5])]
                   for n, c in stats["columns"].items()])
    split = card["split"]
    out += ["## Splits", "", f"Strategy `{split.get('strategy', 'random')}`"
            + (f", seed {split['seed']}" if split.get("strategy", "random") in ("random", "stratified", "group") else "")
            + (f", groups by `{split['groupColumn']}`" if split.get("groupColumn") else "")
            + (f", time by `{split['timeColumn']}`, cutoffs {split.get('cutoffs')}" if split.get("timeColumn") else "")
            + ".", ""]
    out += _table(["split", "rows", "sha256", "uri"], [[n, s["rows"], s["digest"], s.get("uri")] for n, s in card["splits"].items()])
    if card.get("frozenTest"):
        ft = card["frozenTest"]
        out += [f"The test split is frozen: `{ft['digest']}` ({ft['rows']} rows), from {ft.get('from')}.", ""]
    lk = card["leakage"]
    out += ["## Leakage", "",
            f"Overlap between splits by entity (`{lk['entityColumn']}`): {lk['entityOverlap']}; "
            f"by row hash: {lk['rowOverlap']}"
            + (f"; time-order violations: {lk['timeOrderViolations']}" if "timeOrderViolations" in lk else "") + ".", ""]
    out += _table(["splits", "entities shared", "rows shared"],
                  [[" / ".join(p["splits"]), p["entityOverlap"], p["rowOverlap"]] for p in lk["pairs"]])
    out += ["## Drift", ""]
    drift = card.get("drift")
    if not drift:
        out += ["No baseline version: this is the first version (or no baseline was set).", ""]
    else:
        out += [f"Against `{drift.get('baselineVersion')}`: "
                + (f"drift detected in {', '.join(drift['driftedColumns'])}." if drift["detected"] else "no drift detected."),
                ""]
        out += _table(["column", "test", "statistic", "p-value", "PSI", "JS", "drifted"],
                      [[c["column"], c.get("test"), c.get("statistic"), c.get("pValue"), c.get("psi"),
                        c.get("jensenShannon"), "yes: " + "; ".join(c["crossed"]) if c["drifted"] else "no"]
                       for c in drift["columns"]])
    return "\n".join(out).rstrip() + "\n"
