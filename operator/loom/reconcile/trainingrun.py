"""TrainingRun: one training job per generation; status follows the job's conditions.

Phases (each with a reason on the Ready/Failed conditions):

    Pending    waiting for the LabelJob, the LocalQueue, or the job to start
    Queued     the job is suspended until Kueue admits it (or was preempted)
    Running    the gang runs; status.progress shows step, epoch, loss, throughput
    Restarting a replica was killed: the gang restarts from the latest checkpoint
    Succeeded  the model is exported (ONNX) and recorded in lineage
    Failed     a replica failed (the others are stopped), a deadline passed, bad input
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from loom.backends.pytorchjob import Topology, is_suspended, pytorch_job, pytorchjob_outcome
from loom.backends import trainjob
from loom.config import Settings
from loom.reconcile.common import (
    Event, LineageRecord, Plan, StatusBuilder, child_name, now_iso, owner_reference,
)
from loom.reconcile.steps import dependency_problem, is_settled, labels_for, result_uri, run_key, read_spec

GIT_COMMIT_ANNOTATION = "loom.dev/git-commit"


@dataclass
class Observed:
    labeljob: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None  # the LabelJob's Dataset: its id column
    job: dict[str, Any] | None = None  # the PyTorchJob (or TrainJob)
    result: dict[str, Any] | None = None
    result_error: str | None = None
    # Kueue: "found", "missing" (no such LocalQueue), "no-kueue" (the API is not served); None: no queue asked
    queue: str | None = None
    progress: dict[str, Any] | None = None  # the trainer's progress.json
    checkpoint: dict[str, Any] | None = None  # the trainer's checkpoints/latest.json


def job_name(body: dict[str, Any]) -> str:
    return child_name(body["metadata"]["name"], f"g{body['metadata'].get('generation') or 1}")


def output_prefix(settings: Settings, body: dict[str, Any]) -> str:
    """Where this generation's trainer writes model, checkpoints and progress (per tenant)."""
    meta = body["metadata"]
    return settings.prefix(meta["namespace"], "models", meta["name"], run_key(body)) + "/"


def progress_uri(settings: Settings, body: dict[str, Any]) -> str:
    return output_prefix(settings, body) + "progress.json"


def checkpoint_index_uri(settings: Settings, body: dict[str, Any]) -> str:
    return output_prefix(settings, body) + "checkpoints/latest.json"


def backend_of(body: dict[str, Any]) -> str:
    return ((body.get("spec") or {}).get("backend")) or "pytorchjob"


def training_config(dumped: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration that decides the trained weights (hashed into lineage)."""
    return {k: dumped.get(k) for k in ("model", "hyperparameters", "precision", "deterministic", "earlyStopping",
                                       "workers", "nprocPerNode")}


def config_hash(config: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def image_digest(image: str) -> str | None:
    """The digest of an image pinned as ``repo@sha256:...``; a tag alone names no digest."""
    _, sep, digest = image.partition("@")
    return digest if sep and digest.startswith("sha256:") else None


def _progress_status(progress: dict[str, Any] | None) -> dict[str, Any] | None:
    if not progress:
        return None
    out = {k: progress[k] for k in ("step", "totalSteps", "epoch", "loss", "samplesPerSecond", "updatedAt")
           if progress.get(k) is not None}
    return out or None


def _checkpoint_status(index: dict[str, Any] | None) -> dict[str, Any] | None:
    latest = (index or {}).get("latest")
    if not latest or "uri" not in latest or "step" not in latest:
        return None
    return {k: latest[k] for k in ("uri", "step", "epoch") if latest.get(k) is not None}


def plan(body: dict[str, Any], observed: Observed, settings: Settings, now: dt.datetime) -> Plan:
    sb = StatusBuilder(body, now)
    if is_settled(body):
        return Plan(status=sb.build())
    ns = body["metadata"]["namespace"]
    dumped, refused = read_spec(body, sb, "labelJobRef", "storageSecretRef")
    if refused:
        return refused
    backend = dumped.get("backend", "pytorchjob")
    kind = "TrainJob" if backend == "trainjob" else "PyTorchJob"
    topo = Topology.from_spec(dumped)
    sb.status["backend"] = kind
    sb.status["hyperparametersHash"] = config_hash(training_config(dumped))
    if topo.queue:
        sb.status["queue"] = topo.queue

    lj_name = dumped["labelJobRef"]["name"]
    if observed.job is None:
        problem = dependency_problem(observed.labeljob, "LabelJob", lj_name, {"Ready"})
        if problem:
            reason, message, fatal = problem
            sb.phase("Failed" if fatal else "Pending", reason, message, failed=fatal)
            return Plan(status=sb.build())
        if topo.queue and observed.queue == "no-kueue":
            msg = (f"spec.queue {topo.queue!r} needs Kueue, but this cluster does not serve the "
                   "kueue.x-k8s.io/v1beta1 API (LocalQueue): install Kueue or remove spec.queue")
            sb.phase("Failed", "KueueNotInstalled", msg, failed=True)
            return Plan(status=sb.build(), events=[Event("Warning", "KueueNotInstalled", msg)])
        if topo.queue and observed.queue == "missing":
            msg = (f"LocalQueue {topo.queue!r} does not exist in namespace {ns!r}: create it "
                   "(kueue.x-k8s.io/v1beta1 LocalQueue) or fix spec.queue; waiting")
            sb.phase("Pending", "LocalQueueNotFound", msg)
            return Plan(status=sb.build())
        lj_status = observed.labeljob["status"]
        task = {
            "splits": {k: lj_status["splits"][k] for k in ("train", "validation")},
            "idColumn": ((observed.dataset or {}).get("spec") or {}).get("idColumn", "id"),
            "labelColumn": (observed.labeljob.get("spec") or {}).get("labelColumn", "label"),
            "classes": lj_status.get("classes"),
            "model": dumped["model"],
            "hyperparameters": dumped["hyperparameters"],
            "precision": dumped.get("precision", "fp32"),
            "deterministic": dumped.get("deterministic", False),
            "earlyStopping": dumped.get("earlyStopping"),
            "checkpoint": dumped.get("checkpoint") or {},
            "outputPrefix": output_prefix(settings, body),
            "resultUri": result_uri(settings, body),
        }
        common = dict(name=job_name(body), namespace=ns, task=task, owner=owner_reference(body),
                      labels=labels_for(body), settings=settings, topology=topo)
        job = trainjob.train_job(**common) if backend == "trainjob" else pytorch_job(**common)
        sb.status.update({"jobName": job["metadata"]["name"], "labelVersion": lj_status.get("version")})
        if topo.queue:
            sb.phase("Queued", "WaitingForAdmission",
                     f"{kind} {job['metadata']['name']} created suspended in LocalQueue {topo.queue!r}; "
                     "waiting for Kueue to admit it")
        else:
            # The words the next ticks use for a job that exists and has not started (see
            # below): one status write, not a second one that only rewords the first.
            sb.phase("Pending", f"{kind}Created", f"{kind} {job['metadata']['name']} is created")
        return Plan(status=sb.build(), create=[job], events=[Event("Normal", "Created", f"created {kind} {job['metadata']['name']}")])

    outcome = trainjob.trainjob_outcome if backend == "trainjob" else pytorchjob_outcome
    state, message = outcome(observed.job)
    job_status = observed.job.get("status") or {}
    if job_status.get("startTime"):
        sb.status["startTime"] = job_status["startTime"]
    progress = _progress_status(observed.progress)
    if progress:
        sb.status["progress"] = progress
    ckpt = _checkpoint_status(observed.checkpoint)
    if ckpt:
        sb.status["latestCheckpoint"] = ckpt
    resumes = (observed.progress or {}).get("resumes") or []
    if resumes:
        sb.status["restarts"] = len(resumes)
    jname = job_name(body)
    if state not in ("succeeded", "failed") and is_suspended(observed.job):
        where = f" in LocalQueue {topo.queue!r}" if topo.queue else ""
        was_running = bool(progress)
        reason = "Preempted" if was_running else "WaitingForAdmission"
        text = (f"{kind} {jname} is suspended{where}: preempted, it resumes from its latest checkpoint when "
                "admitted again" if was_running else f"{kind} {jname} waits for Kueue to admit it{where}")
        sb.phase("Queued", reason, text)
        return Plan(status=sb.build())
    if state in ("created", "suspended", "running", "restarting"):
        phase = {"created": "Pending", "suspended": "Pending", "running": "Running", "restarting": "Restarting"}[state]
        text = message or f"{kind} {jname} is {state}"
        if state == "running" and progress and progress.get("step") is not None:
            text = f"step {progress['step']}/{progress.get('totalSteps', '?')}, epoch {progress.get('epoch', 0)}"
            if progress.get("loss") is not None:
                text += f", loss {progress['loss']:.4f}"
        if state == "restarting" and ckpt:
            text += f"; resuming from the checkpoint at step {ckpt['step']}"
        sb.phase(phase, f"{kind}{state.capitalize()}", text)
        return Plan(status=sb.build())
    result = observed.result or {}
    if state == "failed":
        reason_text = result.get("error") or message or f"the {kind} failed"
        sb.phase("Failed", "TrainingFailed", reason_text, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "TrainingFailed", reason_text)])
    if observed.result is None or "error" in result:
        reason_text = result.get("error") or f"training finished but its result could not be read: {observed.result_error}"
        sb.phase("Failed", "ResultUnreadable", reason_text, failed=True)
        return Plan(status=sb.build(), events=[Event("Warning", "TrainingFailed", reason_text)])

    sb.status.update(
        {
            "model": result["model"],
            "metrics": {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float))},
            "classes": result.get("classes"),
            "features": result.get("features"),
            "worldSize": result.get("worldSize"),
            "completionTime": job_status.get("completionTime") or now_iso(now),
        }
    )
    if result.get("resumes"):
        sb.status["restarts"] = len(result["resumes"])
    if result.get("steps") is not None:  # the final figures, whatever the last tick read of progress.json
        history = result.get("history") or [{}]
        final = {"step": result["steps"], "totalSteps": result.get("totalSteps"), "epoch": result.get("epochs"),
                 "loss": history[-1].get("loss")}
        sb.status["progress"] = {**(sb.status.get("progress") or {}), **{k: v for k, v in final.items() if v is not None}}
    checkpoints = result.get("checkpoints") or []
    if checkpoints and {"uri", "step"} <= set(checkpoints[-1]):
        sb.status["latestCheckpoint"] = {k: checkpoints[-1][k] for k in ("uri", "step", "epoch") if k in checkpoints[-1]}
    val = (result.get("metrics") or {}).get("val_accuracy")
    message = f"model {result['model']['digest'][:19]}" + (f", validation accuracy {val:.3f}" if val is not None else "")
    if result.get("stoppedEarly"):
        message += f", stopped early after epoch {result.get('epochs')} (best epoch {result.get('bestEpoch')})"
    sb.phase("Succeeded", "TrainingSucceeded", message, ready=True)
    return Plan(status=sb.build(), events=[Event("Normal", "Succeeded", message)],
                lineage=[lineage_record(body, dumped, observed, settings, result)])


def lineage_record(body: dict[str, Any], dumped: dict[str, Any], observed: Observed, settings: Settings,
                   result: dict[str, Any]) -> LineageRecord:
    """The experiment record: inputs (split digests), output (the ONNX digest), and how it was made."""
    lj = observed.labeljob or {}
    lj_status = lj.get("status") or {}
    lj_splits = lj_status.get("splits") or {}
    image = dumped.get("image") or settings.workload_image
    annotations = body["metadata"].get("annotations") or {}
    config = training_config(dumped)
    facets = {
        "hyperparameters": dumped["hyperparameters"],
        "model": dumped["model"],
        "config": config,
        "configHash": config_hash(config),
        "seed": dumped["hyperparameters"].get("seed", 0),
        "precision": result.get("precision", dumped.get("precision")),
        "deterministic": result.get("deterministic", dumped.get("deterministic")),
        "metrics": result.get("metrics") or {},
        "history": result.get("history") or [],
        "worldSize": result.get("worldSize"),
        "backend": result.get("backend"),
        "jobKind": "TrainJob" if dumped.get("backend") == "trainjob" else "PyTorchJob",
        "image": image,
        "imageDigest": image_digest(image),
        "gitCommit": annotations.get(GIT_COMMIT_ANNOTATION) or result.get("gitCommit"),
        "datasetVersion": lj_status.get("datasetVersion"),
        "labelVersion": lj_status.get("version"),
        "labelJob": (lj.get("metadata") or {}).get("name"),
        "steps": result.get("steps"),
        "stoppedEarly": result.get("stoppedEarly"),
        "checkpoints": [{k: c[k] for k in ("uri", "digest", "step") if k in c} for c in result.get("checkpoints") or []],
        "resumes": result.get("resumes") or [],
        "modelDigest": result["model"]["digest"],
    }
    return LineageRecord(
        kind="trainingrun", name=body["metadata"]["name"], run_key=run_key(body),
        inputs=[{"uri": lj_splits[k]["uri"], "digest": lj_splits[k]["digest"]} for k in ("train", "validation") if k in lj_splits],
        outputs=[{"uri": result["model"]["uri"], "digest": result["model"]["digest"]}],
        facets=facets,
    )
