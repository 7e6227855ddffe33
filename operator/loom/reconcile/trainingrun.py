"""TrainingRun: one PyTorchJob per generation; status follows the job's conditions."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loom.backends.pytorchjob import pytorch_job, pytorchjob_outcome
from loom.config import Settings
from loom.reconcile.common import (
    Event, LineageRecord, Plan, StatusBuilder, child_name, now_iso, owner_reference,
)
from loom.reconcile.steps import dependency_problem, is_settled, labels_for, result_uri, run_key, read_spec


@dataclass
class Observed:
    labeljob: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None  # the LabelJob's Dataset: its id column
    job: dict[str, Any] | None = None  # the PyTorchJob
    result: dict[str, Any] | None = None
    result_error: str | None = None


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"g{body['metadata'].get('generation') or 1}")


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    dumped, refused = read_spec(body, sb, "labelJobRef")
    if refused:
        return refused

    lj_name = dumped["labelJobRef"]["name"]
    if observed.job is None:
        problem = dependency_problem(observed.labeljob, "LabelJob", lj_name, {"Ready"})
        if problem:
            reason, message, fatal = problem
            sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
            return Plan(status=sb.build())
        lj_status = observed.labeljob["status"]
        resources = dumped["resources"]
        task = {
            "splits": {k: lj_status["splits"][k] for k in ("train", "validation")},
            "idColumn": ((observed.dataset or {}).get("spec") or {}).get("idColumn", "id"),
            "labelColumn": (observed.labeljob.get("spec") or {}).get("labelColumn", "label"),
            "classes": lj_status.get("classes"),
            "model": dumped["model"],
            "hyperparameters": dumped["hyperparameters"],
            "outputPrefix": settings.prefix(ns, "models", name, run_key(body)) + "/",
            "resultUri": result_uri(settings, body),
        }
        job = pytorch_job(
            name=job_name(body), namespace=ns, task=task, owner=owner_reference(body), labels=labels_for(body),
            settings=settings, workers=dumped["workers"], nproc_per_node=dumped["nprocPerNode"],
            cpu=str(resources["cpu"]), memory=str(resources["memory"]),
            gpus=int(resources["gpus"]), image=dumped.get("image"),
        )
        sb.status.update({"jobName": job["metadata"]["name"], "labelVersion": lj_status.get("version")})
        sb.phase("Pending", "JobCreated", f"PyTorchJob {job['metadata']['name']} created")
        return Plan(status=sb.build(), create=[job], events=[Event("Normal", "Created", f"created PyTorchJob {job['metadata']['name']}")])

    state, message = pytorchjob_outcome(observed.job)
    job_status = observed.job.get("status") or {}
    if job_status.get("startTime"):
        sb.status["startTime"] = job_status["startTime"]
    if state in ("created", "running", "restarting"):
        phase = {"created": "Pending", "running": "Running", "restarting": "Restarting"}[state]
        sb.phase(phase, f"PyTorchJob{state.capitalize()}", message or f"PyTorchJob {job_name(body)} is {state}")
        return Plan(status=sb.build())
    result = observed.result or {}
    if state == "failed":
        reason_text = result.get("error") or message or "the PyTorchJob failed"
        sb.phase("Failed", "TrainingFailed", reason_text, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "TrainingFailed", reason_text)])
    if observed.result is None or "error" in result:
        reason_text = result.get("error") or f"training finished but its result could not be read: {observed.result_error}"
        sb.phase("Failed", "ResultUnreadable", reason_text, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "TrainingFailed", reason_text)])

    sb.status.update(
        {
            "model": result["model"],
            "metrics": result.get("metrics") or {},
            "classes": result.get("classes"),
            "features": result.get("features"),
            "worldSize": result.get("worldSize"),
            "completionTime": job_status.get("completionTime") or now_iso(now),
        }
    )
    val = (result.get("metrics") or {}).get("val_accuracy")
    message = f"model {result['model']['digest'][:19]}" + (f", validation accuracy {val:.3f}" if val is not None else "")
    sb.phase("Succeeded", "TrainingSucceeded", message, ready=True)
    lj_splits = ((observed.labeljob or {}).get("status") or {}).get("splits") or {}
    lineage = LineageRecord(
        kind="trainingrun", name=name, run_key=run_key(body),
        inputs=[{"uri": lj_splits[k]["uri"], "digest": lj_splits[k]["digest"]} for k in ("train", "validation") if k in lj_splits],
        outputs=[{"uri": result["model"]["uri"], "digest": result["model"]["digest"]}],
        facets={
            "hyperparameters": dumped["hyperparameters"],
            "model": dumped["model"],
            "metrics": result.get("metrics") or {},
            "worldSize": result.get("worldSize"),
            "backend": result.get("backend"),
        },
    )
    return Plan(status=sb.build(), events=[Event("Normal", "Succeeded", message)], lineage=[lineage])
