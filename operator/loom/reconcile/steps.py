"""The shape every Job-backed step shares (Dataset, LabelJob, Evaluation).

A step waits for its inputs, creates one Job per generation, follows it, and
reads the workload's result once it has finished.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loom.backends.jobs import job_failure_message, job_outcome

TERMINAL = {"Ready", "Failed", "Passed", "Succeeded"}


@dataclass
class StepObserved:
    job: dict[str, Any] | None = None
    result: dict[str, Any] | None = None  # the workload's result JSON, once the job finished
    result_error: str | None = None  # why the result could not be read


def labels_for(body: dict[str, Any]) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "loom",
        "loom.dev/kind": body["kind"].lower(),
        "loom.dev/name": body["metadata"]["name"],
    }


def run_key(body: dict[str, Any]) -> str:
    """Names one reconciliation of one generation: uid-prefixed so a recreated name never reuses results."""
    meta = body["metadata"]
    return f"{meta['uid'][:8]}-g{meta.get('generation') or 1}"


def result_uri(settings: Any, body: dict[str, Any]) -> str:
    """Where this generation's workload writes its result (the operator reads it back)."""
    meta = body["metadata"]
    return settings.prefix(meta["namespace"], "runs", body["kind"].lower(), meta["name"], run_key(body), "result.json")


def is_settled(body: dict[str, Any]) -> bool:
    """True when this generation already reached a terminal phase: nothing left to do."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation") or 1
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == generation


def finished_result(observed: StepObserved) -> tuple[str, dict[str, Any] | None, str]:
    """('running'|'succeeded'|'failed', result, failure message) for a Job-backed step."""
    outcome = job_outcome(observed.job)
    if outcome in ("absent", "running"):
        return outcome, None, ""
    result = observed.result or {}
    if outcome == "failed":
        message = result.get("error") or job_failure_message(observed.job or {})
        return "failed", result, message
    if observed.result is None:
        return "failed", None, f"the Job succeeded but its result could not be read: {observed.result_error}"
    if "error" in result:
        return "failed", result, result["error"]
    return "succeeded", result, ""


def dependency_problem(dep: dict[str, Any] | None, kind: str, name: str, ready_phases: set[str]) -> tuple[str, str, bool] | None:
    """Why a step cannot start yet: (reason, message, fatal) or None when its input is ready.

    A missing or unfinished input is a wait, not a failure: GitOps applies
    resources in any order. An input that failed is final for this generation.
    """
    if dep is None:
        return f"{kind}NotFound", f"waiting for {kind} {name!r}: it does not exist in this namespace", False
    phase = (dep.get("status") or {}).get("phase") or "Pending"
    if phase in ready_phases:
        return None
    if phase == "Failed":
        return f"{kind}Failed", f"{kind} {name!r} failed, so this cannot proceed", True
    return f"Waiting{kind}", f"waiting for {kind} {name!r} (phase {phase})", False


def read_spec(body: dict[str, Any], sb: Any, *ref_paths: str) -> tuple[dict[str, Any] | None, Any]:
    """The spec as camelCase JSON, or (None, a Failed plan) when it is invalid or one of the
    references at ``ref_paths`` (dotted, e.g. "champion.deploymentRef"; unset ones are skipped)
    reaches into another namespace. Admission catches most of this; the planner is the last line."""
    from loom.api import parse_spec
    from loom.reconcile.common import Event, Plan, ref_namespace_error

    try:
        spec = parse_spec(body["kind"], body.get("spec") or {})
    except ValueError as exc:
        sb.phase("Failed", "InvalidSpec", str(exc), failed=True)
        return None, Plan(status=sb.build(), events=[Event("Warning", "InvalidSpec", str(exc))])
    dumped = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    for path in ref_paths:
        ref: Any = dumped
        for key in path.split("."):
            ref = ref.get(key) if isinstance(ref, dict) else None
        cross = ref_namespace_error(ref, body["metadata"]["namespace"], f"spec.{path}") if ref else None
        if cross:
            sb.phase("Failed", "CrossNamespaceReference", cross, failed=True)
            return None, Plan(status=sb.build(), events=[Event("Warning", "CrossNamespaceReference", cross)])
    return dumped, None
