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
            "guidelines": dumped.get("guidelines"),
            "gold": dumped.get("gold"),
            "minGoldAccuracy": dumped.get("minGoldAccuracy"),
            "labelColumn": dumped["labelColumn"],
            "metric": dumped["agreementMetric"],
            "minAgreement": dumped["minAgreement"],
            "adjudication": dumped["adjudication"],
            "minConfidence": dumped.get("minConfidence"),
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
        # the workload names what was wrong with the input (UnknownItems, NotEnoughAnnotators, ...)
        reason = (result or {}).get("reason") or "LabellingFailed"
        sb.phase("Failed", reason, message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", reason, message)])

    assert result is not None
    sb.status.update(result_status(result))
    if not result.get("passed"):
        message = result.get("message") or "agreement is below spec.minAgreement"
        sb.phase("Failed", "AgreementBelowThreshold", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "AgreementBelowThreshold", message)])

    sb.status.update({"version": result["version"], "classes": result.get("classes"), "splits": result["splits"]})
    agreement = result["agreement"]
    queue = result.get("reviewQueue") or {}
    message = (f"{agreement['metric']} {agreement['value']:.3f} >= {float(dumped['minAgreement']):.2f}; "
               f"labelled version {result['version'][:19]}; {queue.get('items', 0)} item(s) in the review queue")
    sb.phase("Ready", "LabelsPublished", message, ready=True)
    return Plan(status=sb.build(), events=[Event("Normal", "LabelsPublished", message)],
                lineage=[lineage_record(body, observed, result, dumped)])


MAX_PAIRS, MAX_LABELS = 45, 50  # status stays small; the label card keeps every figure


def result_status(result: dict[str, Any]) -> dict[str, Any]:
    """The status fields a finished label Job's result fills (passed or not)."""
    figures = result.get("agreementFigures")
    if figures:
        cohen = dict(figures["cohenKappa"])
        pairs = sorted(cohen.get("pairs") or [], key=lambda p: (p["value"] is not None, p["value"] or 0.0))
        cohen.update(pairs=pairs[:MAX_PAIRS], pairsTotal=len(pairs))
        figures = {**figures, "cohenKappa": cohen, "perLabel": (figures.get("perLabel") or [])[:MAX_LABELS]}
    status = {
        "agreement": result.get("agreement"),
        "agreementFigures": figures,
        "annotators": list(result.get("annotators") or []),
        "excludedAnnotators": list(result.get("excludedAnnotators") or []),
        "items": result.get("items"),
        "ties": result.get("ties"),
        "guidelines": result.get("guidelines"),
        "gold": result.get("gold"),
        "adjudication": result.get("adjudication"),
        "reviewQueue": result.get("reviewQueue"),
        "labelCard": result.get("labelCard"),
    }
    return {k: v for k, v in status.items() if v is not None}


def _role(role: str, **extra: Any) -> dict[str, Any]:
    return {"loom_role": {"role": role, **extra}}


def lineage_record(body: dict[str, Any], observed: Observed, result: dict[str, Any], dumped: dict[str, Any]) -> LineageRecord:
    """The labelled version's links: the raw dataset's splits, every annotation file, the gold
    file and the guidelines (by digest where there is one) in; splits, label card and review queue out."""
    ds_status = (observed.dataset or {}).get("status", {})
    inputs = [{"uri": s["uri"], "digest": s["digest"], "facets": _role("dataset", version=ds_status.get("version"))}
              for s in ds_status.get("splits", {}).values()]
    inputs += [{"uri": a["uri"], "digest": a["digest"], "facets": _role("annotations", format=a.get("format", "csv"))}
               for a in result.get("annotationDigests", [])]
    if result.get("gold"):
        inputs.append({"uri": result["gold"]["uri"], "digest": result["gold"]["digest"], "facets": _role("gold")})
    if result.get("guidelines"):
        g = result["guidelines"]
        inputs.append({"uri": g["uri"], "digest": g.get("digest"), "facets": _role("guidelines", version=g["version"])})
    outputs = [{"uri": s["uri"], "digest": s["digest"], "facets": _role("split")} for s in result["splits"].values()]
    for key in ("labelCard", "reviewQueue"):
        if result.get(key):
            outputs.append({"uri": result[key]["uri"], "digest": result[key]["digest"],
                            "facets": _role("label-card" if key == "labelCard" else "review-queue")})
    return LineageRecord(
        kind="labeljob", name=body["metadata"]["name"], run_key=run_key(body), inputs=inputs, outputs=outputs,
        facets={"version": result["version"], "datasetVersion": ds_status.get("version"),
                "agreement": result["agreement"], "adjudication": dumped["adjudication"],
                "guidelines": result.get("guidelines"), "excludedAnnotators": result.get("excludedAnnotators") or []},
    )

