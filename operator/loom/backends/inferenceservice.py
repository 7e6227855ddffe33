"""serving.kserve.io/v1beta1 InferenceServices.

Built as plain dicts: `import kserve` loads its whole model server (about 2 s,
175 MB), which has no place in the operator. tests/ check these manifests
against kserve's own model classes.
"""
from __future__ import annotations

from typing import Any

RUNTIME = "loom-onnx"
#: Deployment.spec.runtime -> the ServingRuntime named in the predictor. Triton is KServe's own
#: kserve-tritonserver runtime (it reads a model repository; see docs/delivery.md).
RUNTIMES = {"loom-onnx": RUNTIME, "triton": "kserve-tritonserver"}
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
RAW_MODES = {"RawDeployment", "Standard"}  # KServe 0.15+ calls RawDeployment "Standard"


def predictor(model_uri: str, model_digest: str, service_account: str, canary_percent: int | None,
              runtime: str = "loom-onnx", name: str | None = None) -> dict[str, Any]:
    """The predictor for one model. canary_percent None means no split: the model takes all
    traffic once Ready (in a merge patch, None removes an earlier split). name is set in
    RawDeployment mode, where KServe 0.20 names each predictor's Deployment after it."""
    out: dict[str, Any] = {
        "serviceAccountName": service_account,
        "canaryTrafficPercent": canary_percent,
        "model": {
            "modelFormat": {"name": "onnx"},
            "runtime": RUNTIMES[runtime],
            "protocolVersion": "v2",
            "storageUri": model_uri,
            # The server refuses a file whose digest differs from the evaluated one.
            "env": [{"name": "LOOM_MODEL_DIGEST", "value": model_digest}],
        },
    }
    if name:
        out["name"] = name
    return out


def predictor_name(digest: str) -> str:
    """A RawDeployment predictor's name: one per model, so promotion only retargets it."""
    return "m-" + digest.split(":", 1)[-1][:12]


def is_raw(mode: str | None) -> bool:
    return mode in RAW_MODES


def deployment_mode(spec_mode: str | None, isvc: dict[str, Any] | None) -> str:
    """spec.mode, else the InferenceService's serving.kserve.io/deploymentMode annotation, else Serverless."""
    if spec_mode:
        return spec_mode
    ann = ((isvc or {}).get("metadata") or {}).get("annotations") or {}
    return "RawDeployment" if ann.get(MODE_ANNOTATION) in RAW_MODES else "Serverless"


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
    runtime: str = "loom-onnx",
    mode: str | None = None,
) -> dict[str, Any]:
    spec = predictor(model_uri, model_digest, service_account, canary_percent, runtime,
                     predictor_name(model_digest) if is_raw(mode) else None)
    if canary_percent is None:
        del spec["canaryTrafficPercent"]
    annotations = {"loom.dev/model-digest": model_digest}
    if mode:
        annotations[MODE_ANNOTATION] = mode
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": {"predictor": spec},
    }


def model_patch(model_uri: str, model_digest: str, service_account: str, canary_percent: int | None,
                runtime: str = "loom-onnx", mode: str | None = None) -> dict[str, Any]:
    """A merge patch that points an InferenceService's stable predictor at a model, no canary."""
    raw = is_raw(mode)
    spec: dict[str, Any] = {"predictor": predictor(model_uri, model_digest, service_account, None if raw else canary_percent,
                                                   runtime, predictor_name(model_digest) if raw else None)}
    if raw:
        del spec["predictor"]["canaryTrafficPercent"]
        spec["canary"] = None
    return {"metadata": {"annotations": {"loom.dev/model-digest": model_digest}}, "spec": spec}


# -- progressive delivery: the patch for each decision, per deployment mode --------------------
# Serverless (Knative): the predictor names the canary model and canaryTrafficPercent its share;
# KServe keeps the rest on the last rolled-out revision, promotion drops the field, and rollback
# sets it to 0 (KServe's documented rollback: all traffic pinned to the previous revision).
# RawDeployment (KServe 0.20, kserve/kserve#5672): spec.canary is a list of named predictors with
# trafficPercent; promotion retargets spec.predictor to the canary's predictor (same name, no
# restart) and removes the entry; rollback removes the entry.

def canary_patch(model: dict[str, str], sa: str, weight: int, runtime: str, mode: str) -> dict[str, Any]:
    """Start a canary, or move it to another weight."""
    if is_raw(mode):
        pred = predictor(model["uri"], model["digest"], sa, None, runtime, predictor_name(model["digest"]))
        del pred["canaryTrafficPercent"]
        return {"spec": {"canary": [{"trafficPercent": weight, "predictor": pred}]}}
    return model_patch(model["uri"], model["digest"], sa, weight, runtime)


def promote_patch(model: dict[str, str], sa: str, runtime: str, mode: str) -> dict[str, Any]:
    if is_raw(mode):
        return model_patch(model["uri"], model["digest"], sa, None, runtime, mode)
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch(mode: str) -> dict[str, Any]:
    if is_raw(mode):
        return {"spec": {"canary": None}}
    return {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def isvc_models(isvc: dict[str, Any], mode: str) -> dict[str, Any]:
    """What the InferenceService spec routes now: {stable, canary (digests or None), weight}.
    In Serverless mode the stable model is not in the spec (KServe tracks the last rolled-out
    revision), so stable is None while a canary share is set."""
    spec = isvc.get("spec") or {}
    pred = spec.get("predictor") or {}
    digest = _digest(pred)
    if is_raw(mode):
        entries = spec.get("canary") or []
        entry = entries[0] if entries else None
        return {"stable": digest, "canary": _digest((entry or {}).get("predictor") or {}) if entry else None,
                "weight": (entry or {}).get("trafficPercent") if entry else None}
    weight = pred.get("canaryTrafficPercent")
    if weight is None:
        return {"stable": digest, "canary": None, "weight": None}
    return {"stable": None, "canary": digest, "weight": weight}


def _digest(pred: dict[str, Any]) -> str | None:
    for env in (pred.get("model") or {}).get("env") or []:
        if env.get("name") == "LOOM_MODEL_DIGEST":
            return env.get("value")
    return None


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
    canary_conditions = [c for t, c in conditions.items() if t == "CanaryReady"]
    return {
        "ready": true("Ready"),
        # RawDeployment (KServe 0.20): the aggregate CanaryReady condition.
        "canary_ready": true("CanaryReady") if canary_conditions else None,
        "latest_ready_revision": predictor.get("latestReadyRevision"),
        "rolled_out_revision": predictor.get("latestRolledoutRevision"),
        "latest_ready": bool(predictor.get("latestCreatedRevision"))
        and predictor.get("latestCreatedRevision") == predictor.get("latestReadyRevision")
        and true("LatestDeploymentReady" if "LatestDeploymentReady" in conditions else "Ready"),
        "failure": failure,
        "url": status.get("url") or (status.get("address") or {}).get("url"),
        "traffic": predictor.get("traffic") or [],
        "observed_generation": status.get("observedGeneration"),
    }
