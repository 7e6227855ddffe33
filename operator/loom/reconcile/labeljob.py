"""LabelJob: agreement, adjudication and the quality gate run in a Job; the gate's verdict lands in status."""
from __future__ import annotations

import datetime as dt
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
    dataset: dict[str, Any] | None = None


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"label-g{body['metadata'].get('generation') or 1}")


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    dumped, refused = read_spec(body, sb, "datasetRef")
    if refused:
        return refused

    dataset_name = dumped["datasetRef"]["name"]
    problem = dependency_problem(observed.dataset, "Dataset", dataset_name, {"Ready"})
    if problem and observed.job is None:
        reason, message, fatal = problem
        sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
        return Plan(status=sb.build())

    state, result, message = finished_result(observed)
    if state == "absent":
        ds_status = observed.dataset["status"]
        task = {
            "dataset": {
                "name": dataset_name,
                "version": ds_status["version"],
                "idColumn": (observed.dataset.get("spec") or {}).get("idColumn", "id"),
                "splits": ds_status["splits"],
            },
            "annotations": dumped["annotations"],
            "labelColumn": dumped["labelColumn"],
            "metric": dumped["agreementMetric"],
            "minAgreement": dumped["minAgreement"],
            "adjudication": dumped["adjudication"],
            "outputPrefix": settings.prefix(ns, "labels", name) + "/",
            "resultUri": result_uri(settings, body),
        }
        job = workload_job(
            name=job_name(body), namespace=ns, step="label", task=task,
            owner=owner_reference(body), labels=labels_for(body), settings=settings,
        )
        sb.status["datasetVersion"] = ds_status["version"]
        sb.phase("Labelling", "JobCreated", f"label Job {job['metadata']['name']} created")
        return Plan(status=sb.build(), create=[job], events=[Event("Normal", "Labelling", f"created Job {job['metadata']['name']}")])
    if state == "running":
        sb.phase("Labelling", "JobRunning", f"label Job {job_name(body)} is running")
        return Plan(status=sb.build())
    if state == "failed":
        sb.phase("Failed", "LabellingFailed", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "LabellingFailed", message)])

    assert result is not None
    sb.status.update(
        {
            "agreement": result.get("agreement"),
            "annotators": list(result.get("annotators") or []),
            "items": result.get("items"),
            "ties": result.get("ties"),
        }
    )
    if not result.get("passed"):
        message = result.get("message") or "agreement is below spec.minAgreement"
        sb.phase("Failed", "AgreementBelowThreshold", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "AgreementBelowThreshold", message)])

    sb.status.update({"version": result["version"], "classes": result.get("classes"), "splits": result["splits"]})
    agreement = result["agreement"]
    message = f"{agreement['metric']} {agreement['value']:.3f} >= {float(dumped['minAgreement']):.2f}; labelled version {result['version'][:19]}"
    sb.phase("Ready", "LabelsPublished", message, ready=True)
    inputs = [{"uri": s["uri"], "digest": s["digest"]} for s in (observed.dataset or {}).get("status", {}).get("splits", {}).values()]
    inputs += [{"uri": a["uri"], "digest": a["digest"]} for a in result.get("annotationDigests", [])]
    lineage = LineageRecord(
        kind="labeljob", name=name, run_key=run_key(body), inputs=inputs,
        outputs=[{"uri": s["uri"], "digest": s["digest"]} for s in result["splits"].values()],
        facets={"agreement": agreement, "adjudication": dumped["adjudication"]},
    )
    return Plan(status=sb.build(), events=[Event("Normal", "LabelsPublished", message)], lineage=[lineage])

