"""serving.kserve.io/v1beta1 InferenceServices.

Built as plain dicts: `import kserve` loads its whole model server (about 2 s,
175 MB), which has no place in the operator. tests/ check these manifests
against kserve's own model classes.
"""
from __future__ import annotations

from typing import Any

RUNTIME = "loom-onnx"


def predictor(model_uri: str, model_digest: str, service_account: str, canary_percent: int | None) -> dict[str, Any]:
    """The predictor for one model. canary_percent None means no split: the model takes all
    traffic once Ready (in a merge patch, None removes an earlier split)."""
    return {
        "serviceAccountName": service_account,
        "canaryTrafficPercent": canary_percent,
        "model": {
            "modelFormat": {"name": "onnx"},
            "runtime": RUNTIME,
            "protocolVersion": "v2",
            "storageUri": model_uri,
            # The server refuses a file whose digest differs from the evaluated one.
            "env": [{"name": "LOOM_MODEL_DIGEST", "value": model_digest}],
        },
    }


def inference_service(
    *,
    name: str,
    namespace: str,
    model_uri: str,
    model_digest: str,
    service_account: str,
    owner: dict[str, Any],
    labels: dict[str, str],
    canary_percent: int | None = None,
) -> dict[str, Any]:
    spec = predictor(model_uri, model_digest, service_account, canary_percent)
    if canary_percent is None:
        del spec["canaryTrafficPercent"]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"loom.dev/model-digest": model_digest},
            "ownerReferences": [owner],
        },
        "spec": {"predictor": spec},
    }


def model_patch(model_uri: str, model_digest: str, service_account: str, canary_percent: int | None) -> dict[str, Any]:
    """A merge patch that points an InferenceService at another model."""
    return {
        "metadata": {"annotations": {"loom.dev/model-digest": model_digest}},
        "spec": {"predictor": predictor(model_uri, model_digest, service_account, canary_percent)},
    }


def served_model(isvc: dict[str, Any]) -> tuple[str | None, str | None]:
    """(storageUri, digest) the InferenceService spec names now."""
    model = ((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}
    digest = None
    for env in model.get("env") or []:
        if env.get("name") == "LOOM_MODEL_DIGEST":
            digest = env.get("value")
    return model.get("storageUri"), digest


def isvc_state(isvc: dict[str, Any]) -> dict[str, Any]:
    """The parts of KServe's status a rollout decision needs."""
    status = isvc.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    predictor = (status.get("components") or {}).get("predictor") or {}
    model_status = status.get("modelStatus") or {}

    def true(t: str) -> bool:
        return (conditions.get(t) or {}).get("status") == "True"

    failure = None
    if model_status.get("transitionStatus") == "BlockedByFailedLoad":
        info = model_status.get("lastFailureInfo") or {}
        failure = info.get("message") or info.get("reason") or "the model failed to load"
    else:
        for t in ("LatestDeploymentReady", "PredictorReady", "Ready"):
            cond = conditions.get(t) or {}
            if cond.get("status") == "False" and cond.get("reason") in {"RevisionFailed", "ModelLoadFailed", "ProcessExited"}:
                failure = cond.get("message") or cond.get("reason")
                break
    return {
        "ready": true("Ready"),
        "latest_ready": bool(predictor.get("latestCreatedRevision"))
        and predictor.get("latestCreatedRevision") == predictor.get("latestReadyRevision")
        and true("LatestDeploymentReady" if "LatestDeploymentReady" in conditions else "Ready"),
        "failure": failure,
        "url": status.get("url") or (status.get("address") or {}).get("url"),
        "traffic": predictor.get("traffic") or [],
        "observed_generation": status.get("observedGeneration"),
    }
