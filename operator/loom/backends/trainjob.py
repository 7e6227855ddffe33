"""Kubeflow Trainer v2: trainer.kubeflow.org/v1alpha1 TrainJob (spec.backend: trainjob).

The TrainJob names a runtime (the ClusterTrainingRuntime ``torch-distributed`` that
Kubeflow Trainer installs) and overrides its trainer: image, command, nodes, processes
per node, resources per node. Pod-level settings (node selector, tolerations, /dev/shm,
priority class) go in ``podSpecOverrides`` for the ``node`` replicated job. TrainJob's
trainer has no envFrom, so the S3 keys come by ``secretKeyRef``: still by reference.

Plain dicts (the Trainer v2 SDK is not a dependency); tests check the shape.
"""
from __future__ import annotations

from typing import Any

from loom.backends.jobs import workload_env
from loom.backends.pytorchjob import (
    GPU_PRODUCT_LABEL, GPU_RESOURCE, KUEUE_PRIORITY_LABEL, SHM_VOLUME, Topology, pod_labels, trainer_command,
)
from loom.config import Settings

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
RUNTIME = "torch-distributed"
NODE_JOB = "node"  # the runtime's replicated job that runs the trainer
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def train_job(*, name: str, namespace: str, task: dict[str, Any], owner: dict[str, Any], labels: dict[str, str],
              settings: Settings, topology: Topology, runtime: str = RUNTIME) -> dict[str, Any]:
    topo = topology
    env, _ = workload_env(settings, task)
    secret = topo.storage_secret or settings.s3_secret
    env = [*env, *({"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in S3_KEYS)]
    resources: dict[str, Any] = {"requests": {"cpu": topo.cpu, "memory": topo.memory},
                                 "limits": {"cpu": topo.cpu, "memory": topo.memory}}
    if topo.gpus:
        resources["requests"][GPU_RESOURCE] = resources["limits"][GPU_RESOURCE] = str(topo.gpus)
    meta_labels = pod_labels(labels, topo)
    if topo.queue and topo.priority_class:
        meta_labels[KUEUE_PRIORITY_LABEL] = topo.priority_class
    override: dict[str, Any] = {"targetJobs": [{"name": NODE_JOB}]}
    selector = dict(topo.node_selector)
    tolerations = list(topo.tolerations)
    if topo.gpus:
        if topo.gpu_type:
            selector[GPU_PRODUCT_LABEL] = topo.gpu_type
        if not any(t.get("key") == GPU_RESOURCE for t in tolerations):
            tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if selector:
        override["nodeSelector"] = selector
    if tolerations:
        override["tolerations"] = tolerations
    if topo.shm_size:
        override["volumes"] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": topo.shm_size}}]
        override["containers"] = [{"name": "node", "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]}]
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"},
        "trainer": {
            "image": topo.image or settings.workload_image,
            "command": trainer_command(topo.nproc_per_node),
            "env": env,
            "numNodes": topo.pods,
            "numProcPerNode": topo.nproc_per_node,
            "resourcesPerNode": resources,
        },
        "suspend": bool(topo.queue),
    }
    if len(override) > 1:
        spec["podSpecOverrides"] = [override]
    if topo.priority_class:
        spec["annotations"] = {"loom.dev/priority-class": topo.priority_class}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels, "ownerReferences": [owner]},
        "spec": spec,
    }


def trainjob_outcome(job: dict[str, Any] | None) -> tuple[str, str]:
    """('absent'|'created'|'suspended'|'running'|'succeeded'|'failed', message) from TrainJob conditions
    (Created, Suspended, Complete, Failed)."""
    if job is None:
        return "absent", ""
    conds = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds:
        return "succeeded", conds["Complete"].get("message", "")
    if "Failed" in conds:
        return "failed", conds["Failed"].get("message", "")
    if "Suspended" in conds:
        return "suspended", conds["Suspended"].get("message", "")
    active = sum(int(s.get("active") or 0) for s in (job.get("status") or {}).get("jobsStatus") or [])
    return ("running", "") if active else ("created", "")
