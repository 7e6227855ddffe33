"""Evaluation: prove by lineage that the test split was never trained on, score the model
on it in a Job, then judge it here (loom.reconcile.gate)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from loom.backends.jobs import workload_job
from loom.config import Settings
from loom.lineage.openlineage import dataset_digest, dataset_uri
from loom.reconcile import gate
from loom.reconcile.common import (
    Event, LineageRecord, Plan, StatusBuilder, child_name, owner_reference,
)
from loom.reconcile.steps import StepObserved, dependency_problem, finished_result, is_settled, labels_for, result_uri, run_key, read_spec


@dataclass
class Observed(StepObserved):
    trainingrun: dict[str, Any] | None = None
    labeljob: dict[str, Any] | None = None  # holds the labelled test split
    dataset: dict[str, Any] | None = None  # holds the frozen test split
    # The TrainingRun's OpenLineage RunEvents (each with "_uri"), read before the Job is created.
    training_lineage: list[dict[str, Any]] = field(default_factory=list)
    lineage_error: str | None = None  # why they could not be read
    champion: dict[str, Any] | None = None  # the Deployment named by spec.champion.deploymentRef


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"eval-g{body['metadata'].get('generation') or 1}")


def canonical_digest(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def training_inputs(events: list[dict[str, Any]], model_digest: str) -> list[dict[str, str]] | None:
    """Inputs of the TrainingRun events that output this model ({uri, digest, event}); None when no
    event outputs it (the model has no lineage)."""
    producing = [e for e in events if any(dataset_digest(o) == model_digest for o in e.get("outputs") or [])]
    if not producing:
        return None
    out = []
    for e in producing:
        for i in e.get("inputs") or []:
            if dataset_digest(i):
                out.append({"uri": dataset_uri(i), "digest": dataset_digest(i), "event": e.get("_uri", "")})
    return out


def find_leak(inputs: list[dict[str, str]], test_splits: dict[str, dict[str, Any]], tr_name: str) -> str | None:
    """A message naming the test digest and the lineage event that lists it among training inputs."""
    for where, split in test_splits.items():
        for i in inputs:
            if i["digest"] == split["digest"]:
                return (f"test split {split['digest']} ({where}) is an input of TrainingRun {tr_name!r}: "
                        f"its lineage event {i['event']} lists {i['uri']} with that digest")
    return None


def _fail(sb: StatusBuilder, reason: str, message: str, lineage: list[LineageRecord] | None = None) -> Plan:
    sb.condition("Passed", False, reason, message)
    sb.phase("Failed", reason, message, failed=True)
    return Plan(status=sb.build(), events=[Event("Warning", reason, message)], lineage=lineage or [])


def _champion_task(spec: dict[str, Any] | None, deployment: dict[str, Any] | None) -> dict[str, Any] | None:
    if not spec:
        return None
    name = spec["deploymentRef"]["name"]
    out = {"deployment": name, "metric": spec["metric"], "tolerance": spec["tolerance"]}
    model = ((deployment or {}).get("status") or {}).get("model")
    if deployment is None:
        out["reason"] = f"Deployment {name!r} does not exist"
    elif not (isinstance(model, dict) and model.get("uri") and model.get("digest")):
        out["reason"] = f"Deployment {name!r} serves no model yet"
    else:
        out["model"] = {"uri": model["uri"], "digest": model["digest"]}
    return out


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    dumped, refused = read_spec(body, sb, "trainingRunRef", "champion.deploymentRef")
    if refused:
        return refused

    tr_name = dumped["trainingRunRef"]["name"]
    if observed.job is None:
        problem = dependency_problem(observed.trainingrun, "TrainingRun", tr_name, {"Succeeded"})
        if problem is None:
            lj_name = ((observed.trainingrun.get("spec") or {}).get("labelJobRef") or {}).get("name", "")
            problem = dependency_problem(observed.labeljob, "LabelJob", lj_name, {"Ready"})
        if problem is None:
            ds_name = ((observed.labeljob.get("spec") or {}).get("datasetRef") or {}).get("name", "")
            problem = dependency_problem(observed.dataset, "Dataset", ds_name, {"Ready"})
        if problem:
            reason, message, fatal = problem
            sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
            return Plan(status=sb.build())

    state, result, message = finished_result(observed)
    if state == "absent":
        return _start(body, dumped, observed, settings, sb)
    if state == "running":
        sb.phase("Evaluating", "JobRunning", f"evaluation Job {job_name(body)} is running")
        return Plan(status=sb.build())
    if state == "failed":
        sb.phase("Failed", "EvaluationFailed", message, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "EvaluationFailed", message)])

    assert result is not None
    return _verdict(body, dumped, result, settings, sb)


def _start(body: dict[str, Any], dumped: dict[str, Any], observed: Observed, settings: Settings,
           sb: StatusBuilder) -> Plan:
    """Prove by lineage that the test split was not trained on, then create the Job."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    tr, lj, ds = observed.trainingrun, observed.labeljob, observed.dataset
    tr_name, lj_name, ds_name = tr["metadata"]["name"], lj["metadata"]["name"], ds["metadata"]["name"]
    model = tr["status"]["model"]
    test = lj["status"]["splits"]["test"]  # the labelled rows: what is scored
    ds_test = ds["status"]["splits"]["test"]  # the frozen rows they come from
    for stale in ("metrics", "checks", "slices", "champion", "report", "modelCard"):  # a previous generation's verdict
        sb.status.pop(stale, None)
    sb.status.update({"model": model, "testSplit": test, "datasetTestSplit": ds_test})

    if lj["status"].get("datasetVersion") and lj["status"]["datasetVersion"] != ds["status"].get("version"):
        return _fail(sb, "LineageMismatch",
                     f"LabelJob {lj_name!r} labelled Dataset version {lj['status']['datasetVersion']}, but Dataset "
                     f"{ds_name!r} is now version {ds['status'].get('version')}: the scored test split is not "
                     "the Dataset's frozen one")
    if observed.lineage_error:
        sb.phase("Pending", "LineageUnavailable",
                 f"cannot read TrainingRun {tr_name!r}'s lineage yet: {observed.lineage_error}")
        return Plan(status=sb.build())
    inputs = training_inputs(observed.training_lineage, model["digest"])
    if inputs is None:
        return _fail(sb, "LineageMissing",
                     f"no lineage event of TrainingRun {tr_name!r} outputs model {model['digest']}: "
                     "cannot prove the test split was not trained on")
    test_splits = {f"LabelJob {lj_name} status.splits.test": test, f"Dataset {ds_name} status.splits.test": ds_test}
    frozen = ds["status"].get("frozenTest")  # a Dataset may keep another version's frozen test split
    if isinstance(frozen, dict) and frozen.get("digest") and frozen["digest"] != ds_test["digest"]:
        test_splits[f"Dataset {ds_name} status.frozenTest"] = frozen
    leak = find_leak(inputs, test_splits, tr_name)
    if leak:
        sb.status["checks"] = [{"metric": gate.LEAKAGE, "bound": "no shared digest or row", "passed": False, "message": leak}]
        return _fail(sb, "Leakage", leak)

    champion = _champion_task(dumped.get("champion"), observed.champion)
    spec_parts = {k: dumped[k] for k in ("thresholds", "slices", "calibration", "robustness", "latency") if k in dumped}
    task = {
        "namespace": ns, "name": name, "trainingRun": tr_name,
        "model": model, "test": test, "datasetTest": ds_test,
        "idColumn": (ds.get("spec") or {}).get("idColumn", "id"),
        "labelColumn": (lj.get("spec") or {}).get("labelColumn", "label"),
        "versions": {"dataset": ds["status"].get("version"), "labels": lj["status"].get("version")},
        "trainingInputs": inputs,
        "spec": spec_parts,
        "outputPrefix": settings.prefix(ns, "evaluations", name, run_key(body)) + "/",
        "resultUri": result_uri(settings, body),
    }
    if champion:
        task["champion"] = champion
        sb.status["champion"] = {k: champion[k] for k in ("deployment", "metric", "model") if k in champion}
    job = workload_job(
        name=job_name(body), namespace=ns, step="evaluate", task=task,
        owner=owner_reference(body), labels=labels_for(body), settings=settings,
    )
    sb.phase("Evaluating", "JobCreated", f"evaluation Job {job['metadata']['name']} created")
    return Plan(status=sb.build(), create=[job], events=[Event("Normal", "Evaluating", f"created Job {job['metadata']['name']}")])


def _verdict(body: dict[str, Any], dumped: dict[str, Any], result: dict[str, Any], settings: Settings,
             sb: StatusBuilder) -> Plan:
    name = body["metadata"]["name"]
    leakage = result.get("leakage") or {}
    if leakage and not leakage.get("passed", True):
        sb.status["checks"] = [result["leakageCheck"]]
        return _fail(sb, "Leakage", leakage.get("message") or "the test split leaked into training")

    metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    result = dict(result, metrics=metrics)
    checks = gate.all_checks(dumped, result)
    sb.status.update({"metrics": metrics, "checks": checks, "model": result.get("model", sb.status.get("model"))})
    if result.get("slices") is not None:
        sb.status["slices"] = [{k: s[k] for k in ("column", "value", "rows", "skipped", "metrics") if k in s}
                               for s in result["slices"]]
    champ = result.get("champion")
    if champ:
        sb.status["champion"] = {k: champ[k] for k in ("deployment", "metric", "model", "value")
                                 if champ.get(k) is not None}
    card = result.get("modelCard")
    if card:
        sb.status["modelCard"] = card
    # The verdict is an artifact of its own: a Deployment's lineage points at it by digest.
    report = {
        "uri": result_uri(settings, body),
        "digest": canonical_digest({"model": result.get("model"), "test": result.get("test"), "metrics": metrics, "checks": checks}),
    }
    sb.status["report"] = report
    reason = gate.verdict_reason(checks)
    inputs = [{"uri": result["model"]["uri"], "digest": result["model"]["digest"]},
              {"uri": result["test"]["uri"], "digest": result["test"]["digest"]}]
    if result.get("datasetTest"):
        inputs.append({"uri": result["datasetTest"]["uri"], "digest": result["datasetTest"]["digest"]})
    if champ and champ.get("model"):
        inputs.append({"uri": champ["model"]["uri"], "digest": champ["model"]["digest"]})
    outputs = [report]
    if card:
        outputs += [{"uri": card["uri"], "digest": card["digest"]},
                    {"uri": card["markdownUri"], "digest": card["markdownDigest"]}]
    lineage = LineageRecord(
        kind="evaluation", name=name, run_key=run_key(body), inputs=inputs, outputs=outputs,
        facets={"metrics": metrics, "checks": checks, "verdict": "Failed" if reason else "Passed",
                **({"modelCard": card["uri"]} if card else {})},
    )
    if reason:
        message = "failed checks: " + "; ".join(c["message"] for c in checks if not c["passed"])
        return _fail(sb, reason, message, [lineage])
    shown = [c["message"] for c in checks if c["metric"] != gate.LEAKAGE]
    more = f"; and {len(shown) - 3} more in status.checks" if len(shown) > 3 else ""
    message = f"all {len(checks)} checks passed: " + "; ".join(shown[:3]) + more
    sb.condition("Passed", True, "ChecksPassed", message)
    sb.phase("Passed", "ChecksPassed", message, ready=True)
    return Plan(status=sb.build(), events=[Event("Normal", "Passed", message)], lineage=[lineage])
