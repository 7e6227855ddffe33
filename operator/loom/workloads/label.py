"""LabelJob workload: read annotations, check annotators against gold items,
measure agreement, gate, adjudicate, publish labelled splits, a review queue
and a label card.

Order matters for "nothing written half-way": every input is read and checked
(annotations, gold, guidelines, the dataset's splits) and every output is
computed before the first write. When the agreement gate fails nothing is
written; the result carries every figure and a message naming the one that
failed.

Contract (docs/internals.md, "label"): task in, result out; errors carry a
``reason`` (MalformedAnnotations, UnknownItems, NotEnoughAnnotators,
UnknownGoldItems, MalformedGold, AllAnnotatorsExcluded, AgreementUndefined,
GuidelinesUnreadable, EmptySplit) that the planner puts on the Failed condition.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from ..backends.storage import Storage, StorageError
from ..lineage.digest import hex_of, sha256_bytes
from . import adjudication as adj
from . import agreement as agr
from . import annotations as annot
from . import gold as goldmod
from ._task import SPLITS, WorkloadError, join_uri, publish_version, read_split, require, run
from .labelcard import card_markdown

log = logging.getLogger("loom.workloads.label")


def _shown(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")


def _objects(storage: Storage, uri: str) -> list[str]:
    """One URI, or every object under a prefix (trailing slash)."""
    if not uri.endswith("/"):
        return [uri]
    found = [o.uri for o in storage.list(uri)]
    if not found:
        raise WorkloadError(f"no annotation files under {uri}", reason="MalformedAnnotations")
    return found


def read_annotations(storage: Storage, sources: list[dict[str, Any]], id_column: str) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    frames, digests = [], []
    for i, src in enumerate(sources):
        fmt = src.get("format") or "csv"
        for uri in _objects(storage, require(src, "uri", f"annotations[{i}]")):
            data = storage.get_bytes(uri)
            digests.append({"uri": uri, "digest": sha256_bytes(data), "format": fmt})
            frames.append(annot.parse(data, uri, fmt, id_column))
    return annot.combine(frames), digests


def read_guidelines(storage: Storage, spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The guidelines' URI and version; s3:// ones are read and hashed (http(s) ones are recorded only:
    a pod may have no way out to the web)."""
    if not spec:
        return None
    out = {"uri": require(spec, "uri", "task.guidelines"), "version": str(require(spec, "version", "task.guidelines"))}
    if out["uri"].startswith("s3://"):
        try:
            out["digest"] = sha256_bytes(storage.get_bytes(out["uri"]))
        except StorageError as exc:
            raise WorkloadError(f"guidelines {out['uri']} cannot be read: {exc}", reason="GuidelinesUnreadable") from exc
    return out


def review_queue(ratings: annot.Ratings, result: adj.Adjudicated, review: np.ndarray) -> list[dict[str, Any]]:
    """Ties and low-confidence items, most uncertain (highest posterior entropy) first."""
    entropy = adj.entropy(result.posterior)
    votes = adj.one_hot(ratings.codes, ratings.n_classes).sum(axis=1)
    rows = []
    for i in np.nonzero(review)[0]:
        rows.append({
            "item": ratings.items[i],
            "reason": "tie" if result.tie[i] else "low-confidence",
            "proposed": None if result.tie[i] else ratings.classes[result.label[i]],
            "confidence": round(float(result.confidence[i]), 6),
            "entropy": round(float(entropy[i]), 6),
            "votes": {ratings.classes[k]: int(votes[i, k]) for k in np.nonzero(votes[i])[0]},
            "labels": {ratings.annotators[j]: ratings.classes[ratings.codes[i, j]]
                       for j in np.nonzero(ratings.codes[i] >= 0)[0]},
            "posterior": {ratings.classes[k]: round(float(result.posterior[i, k]), 6)
                          for k in np.argsort(-result.posterior[i]) if result.posterior[i, k] >= 5e-7},
        })
    rows.sort(key=lambda r: (-r["entropy"], r["confidence"], r["item"]))
    return rows


def queue_bytes(rows: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    jsonl = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    table = pd.DataFrame(
        [{"rank": n + 1, "item": r["item"], "reason": r["reason"], "proposed": r["proposed"] or "",
          "confidence": r["confidence"], "entropy": r["entropy"],
          "votes": ";".join(f"{k}:{v}" for k, v in r["votes"].items())} for n, r in enumerate(rows)],
        columns=["rank", "item", "reason", "proposed", "confidence", "entropy", "votes"],
    )
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return jsonl, buf.getvalue().encode()


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any]:
    dataset = require(task, "dataset")
    split_refs = require(dataset, "splits", "task.dataset")
    id_col = dataset.get("idColumn") or "id"
    label_col = task.get("labelColumn") or "label"
    metric = task.get("metric") or "auto"
    if metric not in ("auto", *agr.METRIC_NAMES):
        raise WorkloadError(f"unknown agreement metric {metric!r} (auto, cohen, fleiss or krippendorff)")
    min_agreement = float(task.get("minAgreement", 0.6))
    method = task.get("adjudication") or "majority"
    if method not in ("majority", "dawid-skene"):
        raise WorkloadError(f"unsupported adjudication {method!r} (majority or dawid-skene)")
    min_confidence = task.get("minConfidence")
    min_gold = task.get("minGoldAccuracy")
    output_prefix = require(task, "outputPrefix")

    # -- read and check every input ---------------------------------------------------------
    splits = {}
    for name in SPLITS:
        df = read_split(storage, require(split_refs, name, "task.dataset.splits"), name)
        if id_col not in df.columns:
            raise WorkloadError(f"dataset {name} split has no id column '{id_col}'")
        splits[name] = df
    known = set().union(*(set(df[id_col].astype(str)) for df in splits.values()))

    ann, annotation_digests = read_annotations(storage, require(task, "annotations"), id_col)
    unknown = sorted(set(ann["item"]) - known)
    if unknown:
        raise WorkloadError(f"annotations name {len(unknown)} item(s) not in the dataset: {_shown(unknown)}",
                            reason="UnknownItems")
    annotators = sorted(ann["annotator"].unique().tolist())
    guidelines = read_guidelines(storage, task.get("guidelines"))

    gold: dict[str, str] = {}
    gold_status = None
    if task.get("gold"):
        gold_uri = require(task["gold"], "uri", "task.gold")
        try:
            gold_data = storage.get_bytes(gold_uri)
        except StorageError as exc:
            raise WorkloadError(f"gold {gold_uri} cannot be read: {exc}", reason="MalformedGold") from exc
        gold = goldmod.read_gold(gold_data, gold_uri)
        stray = sorted(set(gold) - known)
        if stray:
            raise WorkloadError(f"gold names {len(stray)} item(s) not in the dataset: {_shown(stray)}",
                                reason="UnknownGoldItems")
        gold_status = {"uri": gold_uri, "digest": sha256_bytes(gold_data), "items": len(gold),
                       "annotators": goldmod.accuracy(ann, gold, min_gold)}
    excluded = [a["annotator"] for a in (gold_status or {}).get("annotators", []) if a["excluded"]]
    if excluded and len(excluded) == len(annotators):
        why = "; ".join(f"{a['annotator']}: {a['reason']}" for a in gold_status["annotators"])
        raise WorkloadError(f"every annotator is below minGoldAccuracy, nothing is left to adjudicate ({why})",
                            reason="AllAnnotatorsExcluded")
    kept = ann[~ann["annotator"].isin(excluded)]
    kept_annotators = sorted(kept["annotator"].unique().tolist())
    if len(kept_annotators) < 2:
        after = f" after excluding {len(excluded)} below minGoldAccuracy ({', '.join(excluded)})" if excluded else ""
        raise WorkloadError(
            f"agreement needs at least 2 annotators, found {len(kept_annotators)} "
            f"({', '.join(kept_annotators)}){after}", reason="NotEnoughAnnotators")

    # -- agreement and the gate --------------------------------------------------------------
    classes_all = sorted(set(kept["label"]) | set(gold.values()))
    ratings = annot.Ratings.from_long(kept, classes_all)
    figures = agr.figures(ratings.codes, ratings.annotators, ratings.classes)
    gate = agr.gate_metric(metric, ratings.codes)
    metric_name, value = agr.gate_value(figures, gate)
    if value is None:
        used = figures[{"cohen": "cohenKappa", "fleiss": "fleissKappa", "krippendorff": "krippendorffAlpha"}[gate]]["items"]
        hint = "; krippendorff allows missing labels" if gate == "fleiss" else ""
        raise WorkloadError(
            f"{metric_name} is undefined on these annotations ({used} usable item(s); it needs at least 2 "
            f"and more than one label){hint}", reason="AgreementUndefined")
    result: dict[str, Any] = {
        "agreement": {"metric": metric_name, "value": value},
        "agreementFigures": figures,
        "annotators": annotators,
        "excludedAnnotators": excluded,
        "items": int(kept["item"].nunique()),
        "agreementItems": figures[{"cohen": "cohenKappa", "fleiss": "fleissKappa", "krippendorff": "krippendorffAlpha"}[gate]]["items"],
        "unlabelled": len(known - set(kept["item"]) - set(gold)),
        "annotationDigests": annotation_digests,
    }
    if guidelines:
        result["guidelines"] = guidelines
    if gold_status:
        result["gold"] = gold_status
    if value < min_agreement:
        result.update(passed=False, classes=[], ties=0,
                      message=f"{metric_name} {value:.2f} is below minAgreement {min_agreement:g}")
        log.info(result["message"])
        return result

    # -- adjudication, review queue ------------------------------------------------------------
    is_gold = np.array([item in gold for item in ratings.items], dtype=bool)
    known = np.array([ratings.classes.index(gold[item]) if item in gold else -1 for item in ratings.items], dtype=np.int64)
    decided = adj.adjudicate(ratings.codes, ratings.n_classes, method, known=known)
    low = ~decided.tie & (decided.confidence < min_confidence) if min_confidence is not None else np.zeros(len(ratings.items), bool)
    review = (decided.tie | low) & ~is_gold
    labels = {ratings.items[i]: ratings.classes[decided.label[i]] for i in np.nonzero(~review & ~decided.tie)[0]}
    labels.update(gold)  # known answers win over votes
    queue = review_queue(ratings, decided, review)
    n_ties, n_low = int((decided.tie & ~is_gold).sum()), int((low & ~is_gold).sum())
    classes = sorted(set(labels.values()))
    adjudication = {"method": method, "labelled": 0, "ties": n_ties, "lowConfidence": n_low}
    if decided.iterations is not None:
        adjudication["iterations"] = decided.iterations

    label_series = pd.Series(labels, name=label_col)
    labelled = {}
    for name, df in splits.items():
        out = df.drop(columns=[label_col], errors="ignore")
        out = out[out[id_col].astype(str).isin(labels.keys())].copy()
        out[label_col] = out[id_col].astype(str).map(label_series)
        if out.empty:
            raise WorkloadError(f"labelled {name} split would be empty (no adjudicated labels for its items)",
                                reason="EmptySplit")
        labelled[name] = out
    adjudication["labelled"] = sum(len(df) for df in labelled.values())
    queue_jsonl, queue_csv = queue_bytes(queue)

    manifest = {
        "kind": "LabelManifest",
        "apiVersion": "loom.dev/v1alpha1",
        "dataset": dataset.get("version"),
        "annotations": [{"uri": a["uri"], "digest": a["digest"]} for a in annotation_digests],
        "guidelines": guidelines,
        "gold": {"uri": gold_status["uri"], "digest": gold_status["digest"]} if gold_status else None,
        "minGoldAccuracy": min_gold,
        "excludedAnnotators": excluded,
        "labelColumn": label_col,
        "agreement": {**result["agreement"], "minAgreement": min_agreement},
        "adjudication": {"method": method, "minConfidence": min_confidence, "tiePolicy": "review"},
        "classes": classes,
        "reviewQueue": {"digest": sha256_bytes(queue_jsonl), "items": len(queue)},
    }

    # -- publish: splits and manifest (content-addressed), then the queue and the card --------
    version, manifest_uri, refs = publish_version(storage, output_prefix, manifest, labelled)
    base = join_uri(output_prefix, hex_of(version))
    queue_ref = {"uri": join_uri(base, "review-queue.jsonl"), "csvUri": join_uri(base, "review-queue.csv"),
                 "digest": sha256_bytes(queue_jsonl), "items": len(queue)}
    storage.put_bytes(queue_ref["uri"], queue_jsonl, content_type="application/x-ndjson")
    storage.put_bytes(queue_ref["csvUri"], queue_csv, content_type="text/csv")
    counts = pd.concat(labelled.values())[label_col].value_counts()
    card = {
        "kind": "LabelCard",
        "apiVersion": "loom.dev/v1alpha1",
        "version": version,
        "manifestUri": manifest_uri,
        "datasetVersion": dataset.get("version"),
        "dataset": dataset.get("name"),
        "labelColumn": label_col,
        "classes": classes,
        "labelCounts": {str(k): int(v) for k, v in sorted(counts.items())},
        "guidelines": guidelines,
        "annotationFiles": annotation_digests,
        "annotators": _annotator_rows(ann, gold_status, excluded),
        "agreement": {"gate": {"metric": metric_name, "value": value, "minAgreement": min_agreement},
                      "items": result["agreementItems"], "figures": figures,
                      **({"beforeExclusion": _before_exclusion(ann, classes_all)} if excluded else {})},
        "gold": gold_status,
        "adjudication": {**adjudication, "minConfidence": min_confidence,
                         **({"confusion": _confusion(ratings, decided)} if decided.confusion is not None else {})},
        "reviewQueue": queue_ref,
        "splits": refs,
    }
    card_bytes = json.dumps(card, indent=2, sort_keys=True).encode()
    card_ref = {"uri": join_uri(base, "label-card.json"), "digest": sha256_bytes(card_bytes),
                "markdownUri": join_uri(base, "label-card.md")}
    storage.put_bytes(card_ref["uri"], card_bytes, content_type="application/json")
    storage.put_bytes(card_ref["markdownUri"], card_markdown(card).encode(), content_type="text/markdown")

    result.update(
        passed=True,
        classes=classes,
        ties=n_ties,
        adjudication=adjudication,
        reviewQueue=queue_ref,
        labelCard=card_ref,
        message=f"{metric_name} {value:.2f} meets minAgreement {min_agreement:g}; {adjudication['labelled']} items "
                f"labelled by {method}, {len(queue)} in the review queue ({n_ties} tie(s), {n_low} low-confidence)",
        version=version,
        manifestUri=manifest_uri,
        splits=refs,
    )
    return result


def _before_exclusion(ann: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """Overall figures with every annotator, gold-excluded ones included: what the exclusion changed."""
    everyone = annot.Ratings.from_long(ann, sorted(set(ann["label"]) | set(classes)))
    figs = agr.overall(everyone.codes, everyone.annotators, everyone.n_classes)
    return {k: v["value"] for k, v in figs.items()}


def _annotator_rows(ann: pd.DataFrame, gold_status: dict | None, excluded: list[str]) -> list[dict[str, Any]]:
    per = ann.groupby("annotator").size()
    acc = {a["annotator"]: a for a in (gold_status or {}).get("annotators", [])}
    rows = []
    for name, n in per.items():
        g = acc.get(name, {})
        rows.append({"name": str(name), "annotations": int(n), "goldAccuracy": g.get("accuracy"),
                     "goldItems": g.get("goldItems"), "excluded": name in excluded, "reason": g.get("reason")})
    return rows


def _confusion(ratings: annot.Ratings, decided: adj.Adjudicated) -> dict[str, Any]:
    """Dawid-Skene's estimate of each annotator's confusion matrix, rows = true label."""
    return {"classes": ratings.classes,
            "annotators": {a: np.round(decided.confusion[j], 4).tolist() for j, a in enumerate(ratings.annotators)}}


if __name__ == "__main__":
    run(main)
