"""Dataset: one ingest Job per generation; status from its content-addressed manifest.

Beyond the Job itself the planner decides what only it can know:

* a frozen test split taken from another Dataset (``split.frozenTestFrom``) waits for
  that Dataset to be Ready and hands its test split (uri, digest) to the ingest;
* the drift baseline is ``drift.baselineFrom`` if set, else the previous Ready
  version of this Dataset (its splits are still in status while the new
  generation ingests);
* a Ready generation is never rewritten: once status records a version for a
  generation, a later result for that generation cannot replace it;
* the split is immutable (a CEL transition rule at admission); the planner mirrors
  it: a split that differs from the one the frozen test split was made with fails
  with reason SplitImmutable.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loom.backends.jobs import workload_job
from loom.config import Settings
from loom.reconcile.common import Event, LineageRecord, Plan, StatusBuilder, child_name, owner_reference
from loom.reconcile.steps import (
    StepObserved,
    dependency_problem,
    finished_result,
    is_settled,
    labels_for,
    read_spec,
    result_uri,
    run_key,
)

#: Workload error reasons that are reported as they are (anything else is IngestFailed).
REASONS = {
    "SchemaViolation", "MissingColumn", "MalformedInput", "EmptySplit", "Leakage", "TooFewEntities",
    "DuplicateId", "SourceNotFound", "SourceUnreadable", "UnsupportedFormat", "EmptyDataset",
    "FrozenTestMismatch", "DigestMismatch", "DriftDetected", "InvalidSpec",
}


@dataclass
class Observed(StepObserved):
    frozen_from: dict[str, Any] | None = None  # the Dataset named by split.frozenTestFrom
    baseline: dict[str, Any] | None = None  # the Dataset named by drift.baselineFrom


def frozen_test_of(ds: dict[str, Any]) -> dict[str, Any] | None:
    """A Ready Dataset's frozen test split: status.frozenTest, else its test split."""
    status = ds.get("status") or {}
    ref = status.get("frozenTest") or (status.get("splits") or {}).get("test")
    if not ref:
        return None
    return {"uri": ref["uri"], "digest": ref["digest"], "rows": ref.get("rows", 0),
            "from": ref.get("from") or ds["metadata"]["name"]}


def baseline_for(body: dict[str, Any], dumped: dict[str, Any], observed: Observed) -> dict[str, Any] | None:
    """What the new version is compared with: drift.baselineFrom, else this Dataset's previous Ready version."""
    ref = (dumped.get("drift") or {}).get("baselineFrom")
    if ref:
        status = (observed.baseline or {}).get("status") or {}
        if status.get("phase") != "Ready" or not status.get("splits"):
            return None
        return {"name": ref["name"], "version": status["version"], "splits": status["splits"]}
    status = body.get("status") or {}
    generation = body["metadata"].get("generation") or 1
    ready_gen = status.get("readyGeneration")
    if status.get("version") and status.get("splits") and ready_gen is not None and ready_gen < generation:
        return {"name": body["metadata"]["name"], "version": status["version"], "splits": status["splits"]}
    return None


def task_for(body: dict[str, Any], dumped: dict[str, Any], settings: Settings,
             observed: Observed | None = None) -> dict[str, Any]:
    observed = observed or Observed()
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    split = dict(dumped["split"])
    frozen = frozen_test_of(observed.frozen_from) if split.get("frozenTestFrom") and observed.frozen_from else None
    drift = {k: v for k, v in (dumped.get("drift") or {}).items() if k != "baselineFrom"}
    return {
        "namespace": ns,
        "name": name,
        "sources": dumped["sources"],
        "idColumn": dumped["idColumn"],
        "labelColumn": dumped.get("labelColumn"),
        "schema": dumped.get("schema") or [],
        "deduplicate": dumped.get("deduplicate", True),
        "split": split,
        "frozenTest": frozen,
        "baseline": baseline_for(body, dumped, observed),
        "drift": drift,
        "outputPrefix": settings.prefix(ns, "datasets", name) + "/",
        "resultUri": result_uri(settings, body),
    }


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"ingest-g{body['metadata'].get('generation') or 1}")


def _fail(sb: StatusBuilder, reason: str, message: str) -> Plan:
    sb.phase("Failed", reason, message, failed=True)
    return Plan(status=sb.build(), events=[Event("Warning", reason, message)])


def _wait_for(sb: StatusBuilder, observed: dict[str, Any] | None, name: str, role: str,
              body: dict[str, Any]) -> Plan | None:
    """None when the referenced Dataset is Ready; else the waiting (or failed) plan."""
    problem = dependency_problem(observed, "Dataset", name, {"Ready"})
    if problem is None:
        return None
    reason, message, fatal = problem
    message = f"{role}: {message}"
    if fatal:
        return _fail(sb, reason, message)
    sb.phase("Pending", reason, message)
    return Plan(status=sb.build())


def split_digest(split: dict[str, Any]) -> str:
    from loom.lineage.digest import manifest_digest

    return manifest_digest(split)


def split_change_problem(body: dict[str, Any], dumped: dict[str, Any]) -> str | None:
    """Mirror of the split's CEL transition rule: the split a frozen test split was made with stays."""
    status = body.get("status") or {}
    recorded = status.get("splitDigest")
    if recorded is not None and recorded != split_digest(dumped["split"]):
        return ("spec.split changed after the test split was frozen "
                f"({(status.get('frozenTest') or {}).get('digest', '')[:19]}): the split is immutable; "
                "create a new Dataset, with split.frozenTestFrom to keep this test split")
    return None


def plan(body: dict[str, Any], observed: StepObserved, settings: Settings, now: dt.datetime) -> Plan:
    if not isinstance(observed, Observed):
        observed = Observed(job=observed.job, result=observed.result, result_error=observed.result_error)
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    dumped, refused = read_spec(body, sb, "split.frozenTestFrom", "drift.baselineFrom")
    if refused:
        return refused
    changed = split_change_problem(body, dumped)
    if changed:
        return _fail(sb, "SplitImmutable", changed)

    for ref, seen, role in (
        ((dumped["split"].get("frozenTestFrom")), observed.frozen_from, "split.frozenTestFrom"),
        (((dumped.get("drift") or {}).get("baselineFrom")), observed.baseline, "drift.baselineFrom"),
    ):
        if not ref:
            continue
        if ref["name"] == body["metadata"]["name"]:
            return _fail(sb, "InvalidReference", f"spec.{role} names this Dataset itself")
        waiting = _wait_for(sb, seen, ref["name"], f"spec.{role}", body)
        if waiting:
            return waiting
        if role == "split.frozenTestFrom" and frozen_test_of(seen) is None:
            return _fail(sb, "FrozenTestMissing", f"Dataset {ref['name']!r} is Ready but records no test split")

    task = task_for(body, dumped, settings, observed)
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
        reason = (result or {}).get("reason")
        return _fail(sb, reason if reason in REASONS else "IngestFailed", message)

    assert result is not None
    return ready(body, sb, task, result)


def ready(body: dict[str, Any], sb: StatusBuilder, task: dict[str, Any], result: dict[str, Any]) -> Plan:
    generation = sb.generation
    status = body.get("status") or {}
    if status.get("readyGeneration") == generation and status.get("version") not in (None, result["version"]):
        # A Ready version never changes: keep what this generation already published.
        sb.phase("Ready", "Ingested", f"version {status['version'][:19]} (kept; a later result differs)", ready=True)
        return Plan(status=sb.build(), events=[Event("Warning", "VersionKept",
                                                     f"ingest gave {result['version'][:19]}, Ready version kept")])
    previous = status.get("version") if status.get("version") != result["version"] else status.get("previousVersion")
    frozen = result.get("frozenTest") or result["splits"]["test"]
    sb.status.update(
        {
            "version": result["version"],
            "rows": result["rows"],
            "columns": list(result.get("columns") or []),
            "manifestUri": result.get("manifestUri"),
            "splits": result["splits"],
            "readyGeneration": generation,
            "previousVersion": previous,
            "frozenTest": {k: frozen[k] for k in ("uri", "digest", "rows", "from") if frozen.get(k) is not None},
            "splitDigest": split_digest(task["split"]),
            "rowsRead": result.get("rowsRead"),
            "duplicatesRemoved": result.get("duplicatesRemoved"),
            "excludedRows": result.get("excludedRows"),
            "nulls": result.get("nulls"),
            "leakage": result.get("leakage"),
            "drift": result.get("drift"),
            "report": result.get("report"),
            "dataCard": result.get("dataCard"),
        }
    )
    sb.status = {k: v for k, v in sb.status.items() if v is not None}
    rows = ", ".join(f"{k} {v['rows']}" for k, v in result["splits"].items())
    message = f"version {result['version'][:19]}: {result['rows']} rows ({rows})"
    if result.get("duplicatesRemoved"):
        message += f"; {result['duplicatesRemoved']} duplicate rows removed"
    sb.phase("Ready", "Ingested", message, ready=True)
    events = [Event("Normal", "Ready", message)]
    drift = result.get("drift")
    if not drift:  # no baseline this time: an older generation's drift verdict does not apply
        sb.status["conditions"] = [c for c in sb.status["conditions"] if c.get("type") != "DriftDetected"]
    if drift:
        sb.condition("DriftDetected", bool(drift.get("detected")), "DriftDetected" if drift.get("detected") else "NoDrift",
                     drift.get("message") or "")
        if drift.get("detected"):
            events.append(Event("Warning", "DriftDetected", drift.get("message") or "drift detected"))
    outputs = [{"uri": result.get("manifestUri") or task["outputPrefix"], "digest": result["version"]}]
    outputs += [{"uri": s["uri"], "digest": s["digest"]} for s in result["splits"].values()]
    for art in (result.get("report"), result.get("dataCard")):
        if art:
            outputs.append({"uri": art["uri"], "digest": art["digest"]})
    card = result.get("dataCard") or {}
    if card.get("markdownUri") and card.get("markdownDigest"):
        outputs.append({"uri": card["markdownUri"], "digest": card["markdownDigest"]})
    inputs = [{"uri": o["uri"], "digest": o["digest"]} for o in result.get("objects", [])]
    if task.get("frozenTest"):
        inputs.append({"uri": task["frozenTest"]["uri"], "digest": task["frozenTest"]["digest"]})
    lineage = LineageRecord(
        kind="dataset",
        name=body["metadata"]["name"],
        run_key=run_key(body),
        inputs=inputs,
        outputs=outputs,
        facets={"provenance": [s.get("provenance") for s in task["sources"]],
                **({"dataCard": card.get("uri")} if card.get("uri") else {})},
    )
    return Plan(status=sb.build(), events=events, lineage=[lineage])
