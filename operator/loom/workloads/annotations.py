"""Annotation readers: CSV (item, annotator, label) and Label Studio JSON export.

Both give one long table with string columns ``item, annotator, label``: one
row per (annotator, item). Errors are :class:`AnnotationError` (reason
``MalformedAnnotations``) and name the file and the place in it.

Label Studio export (``Export > JSON``): a list of tasks, each
``{"id", "data": {...}, "annotations": [{"completed_by", "result": [{"type":
"choices", "value": {"choices": [label]}}], "was_cancelled"}]}``. The item is
``data[<idColumn>]`` when the task has it, else the task id; the annotator is
``completed_by`` (an id, or an object with email/username/id in older
exports). Cancelled annotations and annotations with no choice are skipped
(the annotator skipped the task); more than one choice is refused (Loom
adjudicates single-label classification).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ._task import WorkloadError, parse_csv

COLUMNS = ("item", "annotator", "label")
FORMATS = ("csv", "labelstudio")


class AnnotationError(WorkloadError):
    def __init__(self, message: str):
        super().__init__(message, reason="MalformedAnnotations")


def read_csv(data: bytes, uri: str) -> pd.DataFrame:
    try:
        df = parse_csv(data, uri)
    except WorkloadError as exc:
        raise AnnotationError(str(exc)) from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise AnnotationError(f"annotations {uri} lack column(s) {', '.join(missing)} (need item, annotator, label)")
    df = df[list(COLUMNS)]
    empty = df.isna().any(axis=1)
    if empty.any():
        line = int(empty.to_numpy().nonzero()[0][0]) + 2  # header is line 1
        raise AnnotationError(
            f"annotations {uri} have {int(empty.sum())} row(s) with an empty item, annotator or label (first at line {line})"
        )
    return df.reset_index(drop=True)


def _annotator(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        for key in ("email", "username", "id"):
            if completed_by.get(key) not in (None, ""):
                return str(completed_by[key])
        return None
    if completed_by in (None, "") or isinstance(completed_by, bool):
        return None
    return str(completed_by)


def read_labelstudio(data: bytes, uri: str, id_column: str) -> pd.DataFrame:
    try:
        tasks = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"malformed JSON {uri}: {exc}") from exc
    if not isinstance(tasks, list):
        raise AnnotationError(f"Label Studio export {uri} must be a JSON list of tasks (got {type(tasks).__name__})")
    rows: list[tuple[str, str, str]] = []
    for t, task in enumerate(tasks):
        where = f"{uri} task[{t}]"
        if not isinstance(task, dict):
            raise AnnotationError(f"{where} is not an object")
        payload = task.get("data") if isinstance(task.get("data"), dict) else {}
        item = payload.get(id_column, task.get("id"))
        if item in (None, "") or isinstance(item, (dict, list)):
            raise AnnotationError(f"{where} has neither data.{id_column} nor an id")
        item = str(item)
        where = f"{uri} task {item!r}"
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            raise AnnotationError(f"{where}: annotations must be a list")
        for a, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise AnnotationError(f"{where}: annotations[{a}] is not an object")
            if ann.get("was_cancelled"):
                continue
            annotator = _annotator(ann.get("completed_by"))
            if annotator is None:
                raise AnnotationError(f"{where}: annotations[{a}] has no completed_by (the annotator)")
            results = ann.get("result", [])
            if not isinstance(results, list):
                raise AnnotationError(f"{where}: annotations[{a}].result must be a list")
            choices: list[str] = []
            for r in results:
                value = r.get("value") if isinstance(r, dict) else None
                if isinstance(value, dict) and "choices" in value:
                    if not isinstance(value["choices"], list):
                        raise AnnotationError(f"{where}: annotations[{a}] value.choices must be a list")
                    choices += [str(c) for c in value["choices"]]
            if not choices:
                continue  # skipped by the annotator
            if len(choices) > 1:
                raise AnnotationError(
                    f"{where}: annotator {annotator!r} chose {len(choices)} labels {choices[:3]}; "
                    "only single-label classification (one choice) is supported"
                )
            rows.append((item, annotator, choices[0]))
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)


def parse(data: bytes, uri: str, fmt: str, id_column: str) -> pd.DataFrame:
    """One annotation file as the long table ``item, annotator, label``."""
    if fmt == "csv":
        return read_csv(data, uri)
    if fmt == "labelstudio":
        return read_labelstudio(data, uri, id_column)
    raise AnnotationError(f"annotations {uri}: unsupported format {fmt!r} (csv or labelstudio)")


def combine(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate files; one label per (annotator, item), or a clear error."""
    if not frames:
        raise AnnotationError("task.annotations is empty")
    ann = pd.concat(frames, ignore_index=True).astype(str)
    if ann.empty:
        raise AnnotationError("the annotation files contain no annotations")
    dup = ann[ann.duplicated(["item", "annotator"], keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        raise AnnotationError(
            f"annotator '{first['annotator']}' labelled item '{first['item']}' more than once "
            f"({dup.drop_duplicates(['item', 'annotator']).shape[0]} such pair(s))"
        )
    return ann


class Ratings:
    """The long table as a matrix: ``codes[i, j]`` is annotator j's label for item i,
    as an index into ``classes``, or -1 where annotator j did not label item i."""

    def __init__(self, items: list[str], annotators: list[str], classes: list[str], codes):
        self.items, self.annotators, self.classes, self.codes = items, annotators, classes, codes

    @classmethod
    def from_long(cls, ann: pd.DataFrame, classes: list[str] | None = None) -> "Ratings":
        import numpy as np

        item_idx, items = pd.factorize(ann["item"], sort=True)
        ann_idx, annotators = pd.factorize(ann["annotator"], sort=True)
        classes = sorted(ann["label"].unique().tolist()) if classes is None else list(classes)
        label_idx = pd.Index(classes).get_indexer(ann["label"])
        codes = np.full((len(items), len(annotators)), -1, dtype=np.int64)
        codes[item_idx, ann_idx] = label_idx
        return cls(list(map(str, items)), list(map(str, annotators)), classes, codes)

    @property
    def n_classes(self) -> int:
        return len(self.classes)
