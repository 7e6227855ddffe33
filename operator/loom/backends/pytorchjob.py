"""kubeflow.org/v1 PyTorchJobs, built with the kubeflow-training model classes."""
from __future__ import annotations

from typing import Any

from kubeflow.training import models as kf
from kubernetes import client as k8s

from loom.backends.jobs import workload_env
from loom.config import Settings

# The training operator finds the trainer by this container name.
CONTAINER = "pytorch"


def trainer_command(nproc_per_node: int) -> list[str]:
    """One process per pod runs the trainer directly; more need torchrun, which reads the
    PET_* variables the training operator injects and starts the local ranks."""
    if nproc_per_node > 1:
        return ["torchrun", "--module", "loom.workloads.train"]
    return ["python", "-m", "loom.workloads.train"]


def _container(image: str, env: list[dict], env_from: list[dict], cpu: str, memory: str, gpus: int,
               nproc_per_node: int = 1) -> k8s.V1Container:
    limits: dict[str, str] = {"memory": memory}
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    return k8s.V1Container(
        name=CONTAINER,
        image=image,
        command=trainer_command(nproc_per_node),
        env=[k8s.V1EnvVar(name=e["name"], value=e["value"]) for e in env],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=s["secretRef"]["name"])) for s in env_from],
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
    )


def pytorch_job(
    *,
    name: str,
    namespace: str,
    task: dict[str, Any],
    owner: dict[str, Any],
    labels: dict[str, str],
    settings: Settings,
    workers: int,
    nproc_per_node: int,
    cpu: str,
    memory: str,
    gpus: int,
    image: str | None = None,
) -> dict[str, Any]:
    env, env_from = workload_env(settings, task)
    container = _container(image or settings.workload_image, env, env_from, cpu, memory, gpus, nproc_per_node)

    def replica(count: int) -> kf.KubeflowOrgV1ReplicaSpec:
        return kf.KubeflowOrgV1ReplicaSpec(
            replicas=count,
            restart_policy="Never",
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[container]),
            ),
        )

    replicas = {"Master": replica(1)}
    if workers > 0:
        replicas["Worker"] = replica(workers)
    job = kf.KubeflowOrgV1PyTorchJob(
        api_version="kubeflow.org/v1",
        kind="PyTorchJob",
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels=labels,
            owner_references=[
                k8s.V1OwnerReference(
                    api_version=owner["apiVersion"],
                    kind=owner["kind"],
                    name=owner["name"],
                    uid=owner["uid"],
                    controller=True,
                    block_owner_deletion=True,
                )
            ],
        ),
        spec=kf.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(nproc_per_node),
            pytorch_replica_specs=replicas,
            # One failed replica fails the job: no silent restarts that lose progress.
            run_policy=kf.KubeflowOrgV1RunPolicy(backoff_limit=0, clean_pod_policy="Running"),
        ),
    )
    return k8s.ApiClient().sanitize_for_serialization(job)


def pytorchjob_outcome(job: dict[str, Any] | None) -> tuple[str, str]:
    """('absent'|'created'|'running'|'restarting'|'succeeded'|'failed', message) from the job's conditions."""
    if job is None:
        return "absent", ""
    conditions = (job.get("status") or {}).get("conditions") or []
    for terminal in ("Succeeded", "Failed"):
        for cond in conditions:
            if cond.get("type") == terminal and cond.get("status") == "True":
                return terminal.lower(), cond.get("message", "")
    # The latest True condition is the job's current state.
    current = [c for c in conditions if c.get("status") == "True"]
    if current:
        last = current[-1]
        return last.get("type", "Created").lower(), last.get("message", "")
    return "created", ""
