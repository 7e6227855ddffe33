"""Dataset: one ingest Job per generation; status from its content-addressed manifest."""
from __future__ import annotations

import datetime as dt
from typing import Any

from loom.backends.jobs import workload_job
from loom.config import Settings
from loom.reconcile.common import Event, LineageRecord, Plan, StatusBuilder, child_name, owner_reference
from loom.reconcile.steps import StepObserved, finished_result, is_settled, labels_for, read_spec, result_uri, run_key


def task_for(body: dict[str, Any], dumped: dict[str, Any], settings: Settings) -> dict[str, Any]:
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    return {
        "namespace": ns,
        "name": name,
        "sources": dumped["sources"],
        "idColumn": dumped["idColumn"],
        "labelColumn": dumped.get("labelColumn"),
        "split": dumped["split"],
        "outputPrefix": settings.prefix(ns, "datasets", name) + "/",
        "resultUri": result_uri(settings, body),
    }


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"ingest-g{body['metadata'].get('generation') or 1}")


def plan(body: dict[str, Any], observed: StepObserved, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    dumped, refused = read_spec(body, sb)
    if refused:
        return refused

    task = task_for(body, dumped, settings)
    state, result, message = finished_result(observed)
    if state == "absent":
        job = workload_job(
            name=job_name(body), namespace=body["metadata"]["namespace"], step="ingest", task=task,
            owner=owner_reference(body), labels=labels_for(body), settings=settings,
        )
        sb.phase("Ingesting", "JobCreated", f"ingest Job {job['metadata']['name']} created")
        return Plan(status=sb.build(), create=[job], events=[Event("Normal", "Ingesting", f"created Job {job['metadata']['name']}")])
    if state == "running":
        sb.phase("Ingesting", "JobRunning", f"ingest Job {job_name(body)} is running")
        return Plan(status=sb.build())
    if state == "failed":
        sb.phase("Failed", "IngestFailed", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "IngestFailed", message)])

    assert result is not None
    sb.status.update(
        {
            "version": result["version"],
            "rows": result["rows"],
            "columns": list(result.get("columns") or []),
            "manifestUri": result.get("manifestUri"),
            "splits": result["splits"],
        }
    )
    rows = ", ".join(f"{k} {v['rows']}" for k, v in result["splits"].items())
    message = f"version {result['version'][:19]}: {result['rows']} rows ({rows})"
    sb.phase("Ready", "Ingested", message, ready=True)
    lineage = LineageRecord(
        kind="dataset",
        name=body["metadata"]["name"],
        run_key=run_key(body),
        inputs=[{"uri": o["uri"], "digest": o["digest"]} for o in result.get("objects", [])],
        outputs=[{"uri": result.get("manifestUri") or task["outputPrefix"], "digest": result["version"]}]
        + [{"uri": s["uri"], "digest": s["digest"]} for s in result["splits"].values()],
        facets={"provenance": [s.get("provenance") for s in task["sources"]]},
    )
    return Plan(status=sb.build(), events=[Event("Normal", "Ready", message)], lineage=[lineage])
