"""batch/v1 Jobs that run one workload step (ingest, label, evaluate)."""
from __future__ import annotations

import json
from typing import Any

from loom.config import Settings


def workload_env(settings: Settings, task: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The env a workload pod needs: its task, where storage is, and the keys by reference."""
    env = [
        {"name": "LOOM_TASK", "value": json.dumps(task, sort_keys=True)},
        {"name": "LOOM_S3_ENDPOINT", "value": settings.s3_endpoint},
        {"name": "LOOM_S3_BUCKET", "value": settings.bucket},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env_from = [{"secretRef": {"name": settings.s3_secret}}]
    return env, env_from


def workload_job(
    *,
    name: str,
    namespace: str,
    step: str,
    task: dict[str, Any],
    owner: dict[str, Any],
    labels: dict[str, str],
    settings: Settings,
    image: str | None = None,
) -> dict[str, Any]:
    env, env_from = workload_env(settings, task)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            # Workload failures are deterministic (bad data, failed gate): retrying hides them.
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": step,
                            "image": image or settings.workload_image,
                            "command": ["python", "-m", f"loom.workloads.{step}"],
                            "env": env,
                            "envFrom": env_from,
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"memory": "2Gi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def job_outcome(job: dict[str, Any] | None) -> str:
    """'absent', 'running', 'succeeded' or 'failed', read as the Job controller writes it."""
    if job is None:
        return "absent"
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") == "Complete":
            return "succeeded"
        if cond.get("status") == "True" and cond.get("type") == "Failed":
            return "failed"
    return "running"


def job_failure_message(job: dict[str, Any]) -> str:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip(": ")
    return "the Job failed"
