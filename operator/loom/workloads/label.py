"""LabelJob: inter-annotator agreement, majority adjudication, the gate, and
the labelled splits.

Agreement: Cohen's kappa for two annotators (on the items both labelled),
Fleiss' kappa for more (on the items every annotator labelled). Adjudication:
majority vote; items whose top label is tied are counted in ``ties`` and
dropped (never guessed). Dataset items nobody annotated are dropped too
(``unlabelled`` in the result).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from ..backends.storage import Storage
from ..lineage.digest import sha256_bytes
from ._task import SPLITS, WorkloadError, parse_csv, publish_version, read_split, require, run

log = logging.getLogger("loom.workloads.label")
ANNOTATION_COLUMNS = ("item", "annotator", "label")


def read_annotations(storage: Storage, sources: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    frames, digests = [], []
    for i, src in enumerate(sources):
        uri = require(src, "uri", f"annotations[{i}]")
        if src.get("format", "csv") != "csv":
            raise WorkloadError(f"annotations[{i}]: unsupported format {src.get('format')!r} (only csv)")
        data = storage.get_bytes(uri)
        digests.append({"uri": uri, "digest": sha256_bytes(data)})
        df = parse_csv(data, uri)
        missing = [c for c in ANNOTATION_COLUMNS if c not in df.columns]
        if missing:
            raise WorkloadError(f"annotations {uri} lack column(s) {', '.join(missing)} (need item, annotator, label)")
        df = df[list(ANNOTATION_COLUMNS)]
        if df.isna().any().any():
            bad = int(df.isna().any(axis=1).sum())
            raise WorkloadError(f"annotations {uri} have {bad} row(s) with an empty item, annotator or label")
        frames.append(df)
    if not frames:
        raise WorkloadError("task.annotations is empty")
    ann = pd.concat(frames, ignore_index=True)
    if ann.empty:
        raise WorkloadError("the annotation files contain no rows")
    dup = ann[ann.duplicated(["item", "annotator"], keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        raise WorkloadError(
            f"annotator '{first['annotator']}' labelled item '{first['item']}' more than once "
            f"({dup.drop_duplicates(['item', 'annotator']).shape[0]} such pair(s))"
        )
    return ann, digests


def agreement(ann: pd.DataFrame, metric: str) -> tuple[str, float, int]:
    """(metric name, value, number of items it was computed on)."""
    annotators = sorted(ann["annotator"].unique())
    if len(annotators) < 2:
        raise WorkloadError(
            f"agreement needs at least 2 annotators, found {len(annotators)} ({', '.join(annotators)})"
        )
    if metric == "auto":
        metric = "cohen" if len(annotators) == 2 else "fleiss"
    table = ann.pivot(index="item", columns="annotator", values="label")
    if metric == "cohen":
        from sklearn.metrics import cohen_kappa_score

        if len(annotators) != 2:
            raise WorkloadError(f"Cohen's kappa needs exactly 2 annotators, found {len(annotators)}; use fleiss")
        both = table.dropna()
        if len(both) < 2:
            raise WorkloadError("Cohen's kappa needs at least 2 items labelled by both annotators")
        with np.errstate(all="ignore"):
            value = float(cohen_kappa_score(both.iloc[:, 0], both.iloc[:, 1]))
        name, n = "cohen_kappa", len(both)
    elif metric == "fleiss":
        from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

        complete = table.dropna()
        if len(complete) < 2:
            raise WorkloadError("Fleiss' kappa needs at least 2 items labelled by every annotator")
        counts, _ = aggregate_raters(complete.to_numpy())
        with np.errstate(all="ignore"):
            value = float(fleiss_kappa(counts, method="fleiss"))
        name, n = "fleiss_kappa", len(complete)
    else:
        raise WorkloadError(f"unknown agreement metric {metric!r} (auto, cohen or fleiss)")
    if math.isnan(value):
        raise WorkloadError(f"{name} is undefined on these annotations (every label is the same)")
    return name, value, n


def adjudicate(ann: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """Majority vote: {item: label} and the list of tied items (dropped)."""
    counts = ann.groupby(["item", "label"]).size().rename("n").reset_index()
    labels: dict[str, str] = {}
    ties: list[str] = []
    for item, grp in counts.groupby("item", sort=True):
        top = grp["n"].max()
        winners = grp.loc[grp["n"] == top, "label"].tolist()
        if len(winners) == 1:
            labels[str(item)] = str(winners[0])
        else:
            ties.append(str(item))
    return labels, ties


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any]:
    dataset = require(task, "dataset")
    split_refs = require(dataset, "splits", "task.dataset")
    id_col = dataset.get("idColumn") or "id"
    label_col = task.get("labelColumn") or "label"
    metric = task.get("metric") or "auto"
    min_agreement = float(task.get("minAgreement", 0.6))
    if task.get("adjudication", "majority") != "majority":
        raise WorkloadError(f"unsupported adjudication {task.get('adjudication')!r} (only majority)")
    output_prefix = require(task, "outputPrefix")

    splits = {}
    for name in SPLITS:
        df = read_split(storage, require(split_refs, name, "task.dataset.splits"), name)
        if id_col not in df.columns:
            raise WorkloadError(f"dataset {name} split has no id column '{id_col}'")
        splits[name] = df
    known = set().union(*(set(df[id_col]) for df in splits.values()))

    ann, annotation_digests = read_annotations(storage, require(task, "annotations"))
    unknown = sorted(set(ann["item"]) - known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "")
        raise WorkloadError(f"annotations name {len(unknown)} item(s) not in the dataset: {shown}")

    annotators = sorted(ann["annotator"].unique().tolist())
    metric_name, value, n_agreement = agreement(ann, metric)
    labels, ties = adjudicate(ann)
    classes = sorted(set(labels.values()))
    result: dict[str, Any] = {
        "agreement": {"metric": metric_name, "value": round(value, 6)},
        "annotators": annotators,
        "items": int(ann["item"].nunique()),
        "agreementItems": n_agreement,
        "ties": len(ties),
        "unlabelled": len(known - set(ann["item"])),
        "classes": classes,
        "annotationDigests": annotation_digests,
    }
    if value < min_agreement:
        result.update(passed=False, message=f"{metric_name} {value:.2f} is below minAgreement {min_agreement:.2f}")
        log.info(result["message"])
        return result

    label_series = pd.Series(labels, name=label_col)
    labelled = {}
    for name, df in splits.items():
        out = df.drop(columns=[label_col], errors="ignore")
        out = out[out[id_col].isin(labels.keys())].copy()
        out[label_col] = out[id_col].map(label_series)
        if out.empty:
            raise WorkloadError(f"labelled {name} split would be empty (no adjudicated labels for its items)")
        labelled[name] = out

    manifest = {
        "kind": "LabelManifest",
        "apiVersion": "loom.dev/v1alpha1",
        "dataset": dataset.get("version"),
        "annotations": annotation_digests,
        "labelColumn": label_col,
        "agreement": result["agreement"],
        "adjudication": "majority",
        "tiePolicy": "drop",
        "classes": classes,
    }
    version, manifest_uri, refs = publish_version(storage, output_prefix, manifest, labelled)
    result.update(
        passed=True,
        message=f"{metric_name} {value:.2f} meets minAgreement {min_agreement:.2f}; "
                f"{sum(len(df) for df in labelled.values())} items labelled, {len(ties)} tie(s) dropped",
        version=version,
        manifestUri=manifest_uri,
        splits=refs,
    )
    return result


if __name__ == "__main__":
    run(main)
