"""Gold items: each annotator's accuracy against known answers, and who falls
below ``minGoldAccuracy``.

An annotator who labelled no gold item cannot be measured: they are kept, with
accuracy unknown (``None``), and the status says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ._task import WorkloadError, parse_csv


def read_gold(data: bytes, uri: str) -> dict[str, str]:
    """The gold file (CSV item,label) as {item: label}."""
    try:
        df = parse_csv(data, uri)
    except WorkloadError as exc:
        raise WorkloadError(str(exc), reason="MalformedGold") from exc
    missing = [c for c in ("item", "label") if c not in df.columns]
    if missing:
        raise WorkloadError(f"gold {uri} lacks column(s) {', '.join(missing)} (need item, label)", reason="MalformedGold")
    df = df[["item", "label"]]
    if df.isna().any().any():
        raise WorkloadError(f"gold {uri} has {int(df.isna().any(axis=1).sum())} row(s) with an empty item or label",
                            reason="MalformedGold")
    dup = df[df.duplicated("item", keep=False)].drop_duplicates()
    conflicting = dup[dup.duplicated("item", keep=False)]
    if not conflicting.empty:
        item = conflicting.iloc[0]["item"]
        raise WorkloadError(f"gold {uri} gives item '{item}' more than one label", reason="MalformedGold")
    if df.empty:
        raise WorkloadError(f"gold {uri} has no items", reason="MalformedGold")
    return dict(zip(df["item"].astype(str), df["label"].astype(str)))


def accuracy(ann: pd.DataFrame, gold: dict[str, str], min_accuracy: float | None) -> list[dict[str, Any]]:
    """Per annotator: accuracy on the gold items they labelled, and whether they are excluded."""
    truth = ann["item"].map(gold)
    seen = ann[truth.notna()].assign(correct=lambda d: d["label"] == truth[truth.notna()])
    by = seen.groupby("annotator")["correct"].agg(["sum", "count"])
    out = []
    for annotator in sorted(ann["annotator"].unique()):
        correct, n = (int(by.loc[annotator, "sum"]), int(by.loc[annotator, "count"])) if annotator in by.index else (0, 0)
        acc = round(correct / n, 6) if n else None
        row: dict[str, Any] = {"annotator": str(annotator), "accuracy": acc, "goldItems": n, "excluded": False}
        if n == 0:
            row["reason"] = "labelled no gold item: accuracy unknown, kept"
        elif min_accuracy is not None and acc < min_accuracy:
            row["excluded"] = True
            row["reason"] = f"accuracy {acc:.3f} < minGoldAccuracy {min_accuracy:g} on {n} gold item(s)"
        out.append(row)
    return out
