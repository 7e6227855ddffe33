"""Evaluation: score the model on the frozen test split in a Job, then judge it here."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from loom.backends.jobs import workload_job
from loom.config import Settings
from loom.reconcile.common import (
    Event, LineageRecord, Plan, StatusBuilder, child_name, owner_reference,
)
from loom.reconcile.steps import StepObserved, dependency_problem, finished_result, is_settled, labels_for, result_uri, run_key, read_spec


@dataclass
class Observed(StepObserved):
    trainingrun: dict[str, Any] | None = None
    labeljob: dict[str, Any] | None = None  # holds the labelled test split
    dataset: dict[str, Any] | None = None


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"eval-g{body['metadata'].get('generation') or 1}")


def canonical_digest(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def judge(metrics: dict[str, float], thresholds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One check per bound: metric, value, bound, passed, and a line a human reads."""
    checks = []
    for t in thresholds:
        metric = t["metric"]
        value = metrics.get(metric)
        for side, op in (("min", ">="), ("max", "<=")):
            if t.get(side) is None:
                continue
            bound = float(t[side])
            if value is None:
                passed, line = False, f"{metric} was not computed"
            else:
                passed = value >= bound if side == "min" else value <= bound
                line = f"{metric} {value:.4f} {op if passed else ('<' if side == 'min' else '>')} {side} {bound:.4f}"
            check = {"metric": metric, "bound": f"{op} {bound}", "passed": passed, "message": line}
            if value is not None:
                check["value"] = value
            checks.append(check)
    return checks


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    dumped, refused = read_spec(body, sb, "trainingRunRef")
    if refused:
        return refused

    tr_name = dumped["trainingRunRef"]["name"]
    if observed.job is None:
        problem = dependency_problem(observed.trainingrun, "TrainingRun", tr_name, {"Succeeded"})
        if problem is None:
            lj_name = ((observed.trainingrun.get("spec") or {}).get("labelJobRef") or {}).get("name", "")
            problem = dependency_problem(observed.labeljob, "LabelJob", lj_name, {"Ready"})
        if problem:
            reason, message, fatal = problem
            sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
            return Plan(status=sb.build())

    state, result, message = finished_result(observed)
    if state == "absent":
        tr_status = observed.trainingrun["status"]
        test = observed.labeljob["status"]["splits"]["test"]
        task = {
            "model": tr_status["model"],
            "test": test,
            "idColumn": ((observed.dataset or {}).get("spec") or {}).get("idColumn", "id"),
            "labelColumn": (observed.labeljob.get("spec") or {}).get("labelColumn", "label"),
            "resultUri": result_uri(settings, body),
        }
        job = workload_job(
            name=job_name(body), namespace=ns, step="evaluate", task=task,
            owner=owner_reference(body), labels=labels_for(body), settings=settings,
        )
        sb.status.update({"model": tr_status["model"], "testSplit": test})
        sb.phase("Evaluating", "JobCreated", f"evaluation Job {job['metadata']['name']} created")
        return Plan(status=sb.build(), create=[job], events=[Event("Normal", "Evaluating", f"created Job {job['metadata']['name']}")])
    if state == "running":
        sb.phase("Evaluating", "JobRunning", f"evaluation Job {job_name(body)} is running")
        return Plan(status=sb.build())
    if state == "failed":
        sb.phase("Failed", "EvaluationFailed", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "EvaluationFailed", message)])

    assert result is not None
    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float))}
    checks = judge(metrics, dumped["thresholds"])
    sb.status.update({"metrics": metrics, "checks": checks, "model": result.get("model", sb.status.get("model"))})
    failing = [c["message"] for c in checks if not c["passed"]]
    # The verdict is an artifact of its own: a Deployment's lineage points at it by digest.
    report = {
        "uri": result_uri(settings, body),
        "digest": canonical_digest({"model": result.get("model"), "test": result.get("test"), "metrics": metrics, "checks": checks}),
    }
    sb.status["report"] = report
    lineage = LineageRecord(
        kind="evaluation", name=name, run_key=run_key(body),
        inputs=[{"uri": result["model"]["uri"], "digest": result["model"]["digest"]},
                {"uri": result["test"]["uri"], "digest": result["test"]["digest"]}],
        outputs=[report],
        facets={"metrics": metrics, "checks": checks, "verdict": "Failed" if failing else "Passed"},
    )
    if failing:
        message = "failed checks: " + "; ".join(failing)
        sb.condition("Passed", False, "ThresholdsNotMet", message)
        sb.phase("Failed", "ThresholdsNotMet", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "ThresholdsNotMet", message)], lineage=[lineage])
    message = "all checks passed: " + "; ".join(c["message"] for c in checks) if checks else "no thresholds declared"
    sb.condition("Passed", True, "ThresholdsMet", message)
    sb.phase("Passed", "ThresholdsMet", message, ready=True)
    return Plan(status=sb.build(), events=[Event("Normal", "Passed", message)], lineage=[lineage])
