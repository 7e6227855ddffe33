"""Evaluation: verify every input by digest, prove the test rows were never trained on,
score with ONNX Runtime and scikit-learn, and write the model card.

Checks are the pure functions of loom.reconcile.gate: the card carries them, and
the operator's planner recomputes them from this result for status.
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
from ..reconcile import gate
from . import calibration, latency, metrics, modelcard, robustness
from ._task import WorkloadError, join_uri, parse_csv, require, run

log = logging.getLogger("loom.workloads.evaluate")
MAX_SLICE_VALUES = 50


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


def _verified_bytes(storage: Storage, ref: dict[str, Any], what: str) -> bytes:
    uri = require(ref, "uri", what)
    digest = require(ref, "digest", what)
    if not is_digest(digest):
        raise WorkloadError(f"{what} digest is not a sha256:<64 hex> digest: {digest!r}")
    data = storage.get_bytes(uri)
    actual = sha256_bytes(data)
    if actual != digest:
        raise WorkloadError(f"{what} digest mismatch: {uri} has {actual}, expected {digest}")
    return data


def _verified_model(storage: Storage, ref: dict[str, Any], tmp: Path, what: str):
    uri = require(ref, "uri", what)
    digest = require(ref, "digest", what)
    if not is_digest(digest):
        raise WorkloadError(f"{what} digest is not a sha256:<64 hex> digest: {digest!r}")
    path = storage.get_file(uri, tmp / f"{what.replace(' ', '-')}.onnx")
    actual = sha256_file(path)
    if actual != digest:
        raise WorkloadError(f"{what} digest mismatch: {uri} has {actual}, expected {digest}")
    return load_onnx(path)


def _ids(df: pd.DataFrame, id_col: str) -> set[str]:
    return set(df[id_col].astype(str)) if id_col in df.columns else set()


def _shown(ids: set[str]) -> str:
    first = sorted(ids)[:5]
    return ", ".join(first) + (", ..." if len(ids) > 5 else "")


def leakage_proof(storage: Storage, task: dict[str, Any], test_df: pd.DataFrame, test_ref: dict[str, Any],
                  features: list[str]) -> dict[str, Any]:
    """Row-level proof: the scored rows are rows of the Dataset's frozen test split, and no
    scored row id (nor the split's digest) is among the TrainingRun's inputs from its lineage.

    Returns {"passed", "message", ...}; the message names the digest and where it was found."""
    id_col = task.get("idColumn") or "id"
    if id_col not in test_df.columns:
        raise WorkloadError(f"test split lacks the id column {id_col!r}: the leakage proof needs row ids")
    test_ids = _ids(test_df, id_col)
    tr = task.get("trainingRun") or "the TrainingRun"
    digests = {test_ref["digest"]: f"scored test split {test_ref['uri']}"}
    ds_ref = task.get("datasetTest")
    if ds_ref:
        ds_df = parse_csv(_verified_bytes(storage, ds_ref, "Dataset test split"), ds_ref["uri"])
        digests[ds_ref["digest"]] = f"Dataset test split {ds_ref['uri']}"
        outside = test_ids - _ids(ds_df, id_col)
        if outside:
            return {"passed": False, "digest": test_ref["digest"], "where": ds_ref["uri"],
                    "message": (f"{len(outside)} scored row(s) (id {_shown(outside)}) of test split {test_ref['digest']} "
                                f"are not in the Dataset's frozen test split {ds_ref['digest']}")}
        shared = [c for c in features if c in ds_df.columns]
        joined = test_df[[id_col] + shared].merge(ds_df[[id_col] + shared], on=id_col, suffixes=("", "__ds"))
        for col in shared:
            a = pd.to_numeric(joined[col], errors="coerce").to_numpy(float)
            b = pd.to_numeric(joined[col + "__ds"], errors="coerce").to_numpy(float)
            if not np.allclose(a, b, equal_nan=True):
                return {"passed": False, "digest": test_ref["digest"], "where": ds_ref["uri"],
                        "message": (f"column {col} of test split {test_ref['digest']} differs from the Dataset's "
                                    f"frozen test split {ds_ref['digest']} for the same ids")}
    inputs = task.get("trainingInputs") or []
    without_ids = []
    for i, ref in enumerate(inputs):
        if ref.get("digest") in digests:
            where = f"its lineage event {ref['event']}" if ref.get("event") else "its lineage"
            return {"passed": False, "digest": ref["digest"], "where": ref.get("event") or ref["uri"],
                    "message": (f"{digests[ref['digest']]} ({ref['digest']}) is an input of TrainingRun {tr}: "
                                f"{where} lists {ref['uri']}")}
        train_df = parse_csv(_verified_bytes(storage, ref, f"training input {i}"), ref["uri"])
        if id_col not in train_df.columns:
            without_ids.append(ref["uri"])  # checked by digest only
            continue
        seen = _ids(train_df, id_col) & test_ids
        if seen:
            return {"passed": False, "digest": ref["digest"], "where": ref["uri"],
                    "message": (f"{len(seen)} test row(s) (id {_shown(seen)}) of test split {test_ref['digest']} appear "
                                f"in {ref['uri']} ({ref['digest']}), an input of TrainingRun {tr} in its lineage")}
    names = " and ".join(digests)
    message = (f"test split {names} not among the {len(inputs)} training input(s) of TrainingRun {tr} in its "
               f"lineage, and none of the {len(test_ids)} test row ids appears in them")
    if ds_ref:
        message += "; every scored row is a row of the Dataset's frozen test split"
    if without_ids:
        message += f"; {len(without_ids)} input(s) without an {id_col!r} column checked by digest only"
    return {"passed": True, "checkedInputs": len(inputs), "message": message}


def _leakage_check(proof: dict[str, Any]) -> dict[str, Any]:
    return {"metric": gate.LEAKAGE, "bound": "no shared digest or row", "passed": proof["passed"],
            "message": proof["message"]}


def _features(df: pd.DataFrame, features: list[str], what: str) -> pd.DataFrame:
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise WorkloadError(f"{what} lacks feature column(s) {', '.join(missing)}")
    x = df[features].apply(pd.to_numeric, errors="coerce")
    if x.isna().any().any():
        raise WorkloadError(f"{what} has non-numeric or empty feature values")
    return x


def _predict(session, x: pd.DataFrame) -> np.ndarray:
    out = session.run(None, {session.get_inputs()[0].name: x.to_numpy(dtype=np.float32)})[0]
    return metrics.as_probabilities(out)


def _slices(df: pd.DataFrame, y: np.ndarray, pred: np.ndarray, n_classes: int,
            specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        col, min_rows = spec["column"], int(spec.get("minRows", 5))
        if col not in df.columns:
            raise WorkloadError(f"slice column {col!r} is not a column of the test split ({', '.join(df.columns)})")
        values = df[col].astype(str).to_numpy()
        distinct = sorted(set(values))
        if len(distinct) > MAX_SLICE_VALUES:
            # every slice is a status entry and a check per bound: keep the status a readable size
            raise WorkloadError(f"slice column {col!r} has {len(distinct)} distinct values (at most {MAX_SLICE_VALUES}): "
                                "slice by a categorical column")
        for value in distinct:
            mask = values == value
            rows = int(mask.sum())
            entry: dict[str, Any] = {"column": col, "value": value, "rows": rows, "skipped": rows < min_rows}
            if not entry["skipped"]:
                entry["metrics"] = metrics.label_metrics(y[mask], pred[mask], n_classes)
            out.append(entry)
    return out


def main(task: dict[str, Any], storage: Storage) -> dict[str, Any]:
    model_ref = require(task, "model")
    test_ref = require(task, "test")
    spec = task.get("spec") or {}
    label_col = task.get("labelColumn") or "label"

    with tempfile.TemporaryDirectory(prefix="loom-eval-") as tmpdir:
        tmp = Path(tmpdir)
        session, features, classes = _verified_model(storage, model_ref, tmp, "model")
        df = parse_csv(_verified_bytes(storage, test_ref, "test split"), test_ref["uri"])
        if df.empty:
            raise WorkloadError(f"test split {test_ref['uri']} has no rows")
        if label_col not in df.columns:
            raise WorkloadError(f"test split lacks the label column {label_col!r}")
        x = _features(df, features, "test split")
        unknown = sorted(set(df[label_col]) - set(classes))
        if unknown:
            raise WorkloadError(f"test split has label(s) the model does not know: {', '.join(unknown[:5])}")

        base = {"model": {"uri": model_ref["uri"], "digest": model_ref["digest"]},
                "test": {"uri": test_ref["uri"], "digest": test_ref["digest"], "rows": int(len(df))},
                "classes": classes, "features": features}
        if task.get("datasetTest"):
            base["datasetTest"] = dict(task["datasetTest"])
        proof = leakage_proof(storage, task, df, test_ref, features)
        base["leakage"], base["leakageCheck"] = proof, _leakage_check(proof)
        if not proof["passed"]:
            log.warning("leakage: %s", proof["message"])
            return base  # nothing scored, nothing vouched for

        n = len(classes)
        y = np.array([classes.index(v) for v in df[label_col].astype(str)])
        probs = _predict(session, x)
        pred = probs.argmax(axis=1)
        result: dict[str, Any] = dict(base, rows=int(len(df)), notes=[])
        found = metrics.label_metrics(y, pred, n)
        prob_metrics, notes = metrics.probability_metrics(y, probs)
        found.update(prob_metrics)
        result["notes"] += notes
        bins = int((spec.get("calibration") or {}).get("bins", 10))
        ece, table = calibration.reliability(y, probs, bins)
        found["ece"] = ece
        result["calibration"] = {"ece": ece, "bins": bins, "table": table}
        result["perClass"] = metrics.per_class(y, pred, classes)
        result["confusionMatrix"] = metrics.confusion(y, pred, n)
        result["slices"] = _slices(df, y, pred, n, spec.get("slices") or [])

        result["robustness"] = []
        for p in spec.get("robustness") or []:
            try:
                xp = robustness.perturb(x, p)
            except robustness.PerturbationError as exc:
                raise WorkloadError(str(exc)) from exc
            m = metrics.label_metrics(y, _predict(session, xp).argmax(axis=1), n)
            params = {k: p[k] for k in ("sigma", "rate", "fill", "seed", "columns") if p.get(k) not in (None, [])}
            result["robustness"].append({"name": p["name"], "type": p["type"], "parameters": json.dumps(params, sort_keys=True),
                                         "metrics": m, "accuracyDrop": round(found["accuracy"] - m["accuracy"], 6)})
            found.update({f"robustness.{p['name']}.{k}": v for k, v in m.items()})

        lat = spec.get("latency") or {}
        result["latency"] = latency.measure(session, x.to_numpy(np.float32), int(lat.get("batchSize", 32)),
                                            int(lat.get("iterations", 200)), int(lat.get("warmup", 10)),
                                            input_name=session.get_inputs()[0].name)
        found.update({k: result["latency"][k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_rps")})
        result["metrics"] = found

        champion = task.get("champion")
        if champion:
            champion = dict(champion)
            if champion.get("model"):
                c_session, c_features, c_classes = _verified_model(storage, champion["model"], tmp, "champion model")
                if c_classes != classes:
                    raise WorkloadError(f"the champion's classes {c_classes} differ from the candidate's {classes}: not comparable")
                cx = _features(df, c_features, "test split (for the champion)")
                c_probs = _predict(c_session, cx)
                c_metrics = metrics.label_metrics(y, c_probs.argmax(axis=1), n)
                c_metrics.update(metrics.probability_metrics(y, c_probs)[0])
                champion["metrics"] = c_metrics
                champion["value"] = c_metrics.get(champion["metric"])
            result["champion"] = champion

    checks = gate.all_checks(spec, result)
    result["checks"] = checks
    prefix = task.get("outputPrefix")
    if prefix:
        card = modelcard.build(task, result, checks)
        card_bytes = json.dumps(card, indent=2, sort_keys=True).encode()
        md_bytes = modelcard.markdown(card).encode()
        card_uri, md_uri = join_uri(prefix, "model-card.json"), join_uri(prefix, "model-card.md")
        storage.put_bytes(md_uri, md_bytes, content_type="text/markdown")
        storage.put_bytes(card_uri, card_bytes, content_type="application/json")
        result["modelCard"] = {"uri": card_uri, "digest": sha256_bytes(card_bytes),
                               "markdownUri": md_uri, "markdownDigest": sha256_bytes(md_bytes)}
    log.info("evaluated %d rows: %s", len(df), {k: found[k] for k in ("accuracy", "f1_macro")})
    return result


if __name__ == "__main__":
    run(main)
