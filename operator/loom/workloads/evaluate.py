"""Evaluation: verify the model and test split digests, score with ONNX Runtime.

Thresholds are judged by the operator's planner, not here.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backends.storage import Storage
from ..lineage.digest import is_digest, sha256_bytes, sha256_file
from ._task import WorkloadError, parse_csv, require, run

log = logging.getLogger("loom.workloads.evaluate")


def load_onnx(path: Path):
    """(session, features, classes) of a Loom ONNX model."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise WorkloadError(f"not a loadable ONNX model: {type(exc).__name__}: {exc}") from exc
    meta = session.get_modelmeta().custom_metadata_map
    try:
        features = json.loads(meta["loom.features"])
        classes = json.loads(meta["loom.classes"])
    except (KeyError, ValueError) as exc:
        raise WorkloadError("the ONNX model lacks loom.features / loom.classes metadata") from exc
    return session, [str(f) for f in features], [str(c) for c in classes]


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    model_ref = require(task, "model")
    test_ref = require(task, "test")
    model_uri = require(model_ref, "uri", "task.model")
    model_digest = require(model_ref, "digest", "task.model")
    test_uri = require(test_ref, "uri", "task.test")
    test_digest = require(test_ref, "digest", "task.test")
    for what, d in (("task.model.digest", model_digest), ("task.test.digest", test_digest)):
        if not is_digest(d):
            raise WorkloadError(f"{what} is not a sha256:<64 hex> digest: {d!r}")
    label_col = task.get("labelColumn") or "label"

    with tempfile.TemporaryDirectory(prefix="loom-eval-") as tmp:
        path = storage.get_file(model_uri, Path(tmp) / "model.onnx")
        actual = sha256_file(path)
        if actual != model_digest:
            raise WorkloadError(f"model digest mismatch: {model_uri} has {actual}, expected {model_digest}")
        data = storage.get_bytes(test_uri)
        actual_test = sha256_bytes(data)
        if actual_test != test_digest:
            raise WorkloadError(f"test split digest mismatch: {test_uri} has {actual_test}, expected {test_digest}")
        session, features, classes = load_onnx(path)

        df = parse_csv(data, test_uri)
        missing = [c for c in features + [label_col] if c not in df.columns]
        if missing:
            raise WorkloadError(f"test split lacks column(s) {', '.join(missing)}")
        if df.empty:
            raise WorkloadError(f"test split {test_uri} has no rows")
        x = df[features].apply(pd.to_numeric, errors="coerce")
        if x.isna().any().any():
            raise WorkloadError("test split has non-numeric or empty feature values")
        unknown = sorted(set(df[label_col]) - set(classes))
        if unknown:
            raise WorkloadError(f"test split has label(s) the model does not know: {', '.join(unknown[:5])}")
        probs = session.run(["probabilities"], {"input": x.to_numpy(dtype=np.float32)})[0]

    y_true = df[label_col].astype(str).tolist()
    y_pred = [classes[i] for i in probs.argmax(axis=1)]
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0
    )
    metrics = {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "f1_macro": round(float(f1), 6),
        "precision_macro": round(float(precision), 6),
        "recall_macro": round(float(recall), 6),
    }
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    log.info("evaluated %d rows: %s", len(df), metrics)
    return {
        "metrics": metrics,
        "confusionMatrix": cm.astype(int).tolist(),
        "classes": classes,
        "rows": int(len(df)),
        "model": {"uri": model_uri, "digest": model_digest},
        "test": {"uri": test_uri, "digest": test_digest, "rows": int(len(df))},
    }


if __name__ == "__main__":
    run(main)
