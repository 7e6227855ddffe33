"""kubeflow.org/v1 PyTorchJobs, built with the kubeflow-training model classes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeflow.training import models as kf
from kubernetes import client as k8s

from loom.backends.jobs import workload_env
from loom.config import Settings

# The training operator finds the trainer by this container name.
CONTAINER = "pytorch"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery
SHM_VOLUME = "dshm"


@dataclass
class Topology:
    """What a TrainingRun asks of the cluster, whatever job kind runs it."""

    workers: int = 0
    nproc_per_node: int = 1
    cpu: str = "1"
    memory: str = "1Gi"
    gpus: int = 0
    gpu_type: str | None = None
    shm_size: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None
    queue: str | None = None
    priority_class: str | None = None
    min_available: int | None = None
    backoff_limit: int = 3
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    clean_pod_policy: str = "Running"
    storage_secret: str | None = None  # overrides settings.s3_secret for envFrom

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Topology":
        """From a TrainingRun spec as parse_spec dumps it (camelCase, defaults filled)."""
        res = spec.get("resources") or {}
        rp = spec.get("runPolicy") or {}
        return cls(
            workers=int(spec.get("workers", 1)), nproc_per_node=int(spec.get("nprocPerNode", 1)),
            cpu=str(res.get("cpu", "1")), memory=str(res.get("memory", "1Gi")), gpus=int(res.get("gpus", 0)),
            gpu_type=res.get("gpuType"), shm_size=str(res["shmSize"]) if res.get("shmSize") is not None else None,
            node_selector=dict(spec.get("nodeSelector") or {}), tolerations=list(spec.get("tolerations") or []),
            image=spec.get("image"), queue=spec.get("queue"), priority_class=spec.get("priorityClassName"),
            min_available=spec.get("minAvailable"), backoff_limit=int(rp.get("backoffLimit", 3)),
            active_deadline_seconds=rp.get("activeDeadlineSeconds"),
            ttl_seconds_after_finished=rp.get("ttlSecondsAfterFinished"),
            clean_pod_policy=rp.get("cleanPodPolicy", "Running"),
            storage_secret=(spec.get("storageSecretRef") or {}).get("name"),
        )

    @property
    def pods(self) -> int:
        return 1 + self.workers

    @property
    def world_size(self) -> int:
        return self.pods * self.nproc_per_node


def trainer_command(nproc_per_node: int) -> list[str]:
    """One process per pod runs the trainer directly; more need torchrun, which reads the
    PET_* variables the training operator injects and starts the local ranks."""
    if nproc_per_node > 1:
        return ["torchrun", "--module", "loom.workloads.train"]
    return ["python", "-m", "loom.workloads.train"]


def pod_labels(labels: dict[str, str], topo: Topology) -> dict[str, str]:
    out = dict(labels)
    if topo.queue:
        out[KUEUE_QUEUE_LABEL] = topo.queue
    return out


def container(settings: Settings, task: dict[str, Any], topo: Topology) -> k8s.V1Container:
    env, env_from = workload_env(settings, task)
    if topo.storage_secret:  # the tenant's own keys, by reference: never read by the operator
        env_from = [{"secretRef": {"name": topo.storage_secret}}]
    limits: dict[str, str] = {"cpu": topo.cpu, "memory": topo.memory}
    requests: dict[str, str] = {"cpu": topo.cpu, "memory": topo.memory}
    if topo.gpus:
        # Extended resources must have requests equal to limits.
        limits[GPU_RESOURCE] = requests[GPU_RESOURCE] = str(topo.gpus)
    mounts = [k8s.V1VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm")] if topo.shm_size else None
    return k8s.V1Container(
        name=CONTAINER,
        image=topo.image or settings.workload_image,
        command=trainer_command(topo.nproc_per_node),
        env=[k8s.V1EnvVar(name=e["name"], value=e["value"]) for e in env],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=s["secretRef"]["name"])) for s in env_from],
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
        volume_mounts=mounts,
        # The trainer checkpoints on SIGTERM; the last log lines explain a crash in the pod status.
        termination_message_policy="FallbackToLogsOnError",
    )


def pod_spec(settings: Settings, task: dict[str, Any], topo: Topology) -> k8s.V1PodSpec:
    selector = dict(topo.node_selector)
    tolerations = [k8s.V1Toleration(key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                     effect=t.get("effect"), toleration_seconds=t.get("tolerationSeconds"))
                   for t in topo.tolerations]
    if topo.gpus:
        if topo.gpu_type:
            selector[GPU_PRODUCT_LABEL] = topo.gpu_type
        # GPU nodes are usually tainted so that only GPU pods land there.
        if not any(t.key == GPU_RESOURCE for t in tolerations):
            tolerations.append(k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"))
    volumes = None
    if topo.shm_size:
        volumes = [k8s.V1Volume(name=SHM_VOLUME,
                                empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=topo.shm_size))]
    return k8s.V1PodSpec(
        containers=[container(settings, task, topo)],
        node_selector=selector or None,
        tolerations=tolerations or None,
        volumes=volumes,
        priority_class_name=topo.priority_class,
        # Long enough for the trainer to write its SIGTERM checkpoint.
        termination_grace_period_seconds=60,
    )


def owner_refs(owner: dict[str, Any]) -> list[k8s.V1OwnerReference]:
    return [k8s.V1OwnerReference(api_version=owner["apiVersion"], kind=owner["kind"], name=owner["name"],
                                 uid=owner["uid"], controller=True, block_owner_deletion=True)]


def pytorch_job(
    *,
    name: str,
    namespace: str,
    task: dict[str, Any],
    owner: dict[str, Any],
    labels: dict[str, str],
    settings: Settings,
    topology: Topology,
) -> dict[str, Any]:
    """The PyTorchJob of a TrainingRun: Master plus ``topology.workers`` Workers, one gang."""
    topo = topology
    spec = pod_spec(settings, task, topo)
    meta_labels = pod_labels(labels, topo)
    if topo.queue and topo.priority_class:
        meta_labels[KUEUE_PRIORITY_LABEL] = topo.priority_class

    def replica(count: int) -> kf.KubeflowOrgV1ReplicaSpec:
        return kf.KubeflowOrgV1ReplicaSpec(
            replicas=count,
            # Killed or evicted (exit code >= 128) restarts the gang, which resumes from its
            # checkpoint; a trainer error (1..127: bad data, a bug) fails the run at once.
            restart_policy="ExitCode",
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=meta_labels), spec=spec),
        )

    replicas = {"Master": replica(1)}
    if topo.workers > 0:
        replicas["Worker"] = replica(topo.workers)
    run_policy = kf.KubeflowOrgV1RunPolicy(
        backoff_limit=topo.backoff_limit,
        active_deadline_seconds=topo.active_deadline_seconds,
        ttl_seconds_after_finished=topo.ttl_seconds_after_finished,
        clean_pod_policy=topo.clean_pod_policy,
        # With a queue, Kueue admits the job by unsuspending it.
        suspend=bool(topo.queue),
        scheduling_policy=kf.KubeflowOrgV1SchedulingPolicy(
            min_available=topo.min_available or topo.pods,
            queue=topo.queue,
            priority_class=topo.priority_class,
        ),
    )
    job = kf.KubeflowOrgV1PyTorchJob(
        api_version="kubeflow.org/v1",
        kind="PyTorchJob",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=meta_labels, owner_references=owner_refs(owner)),
        spec=kf.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(topo.nproc_per_node),
            pytorch_replica_specs=replicas,
            run_policy=run_policy,
        ),
    )
    return k8s.ApiClient().sanitize_for_serialization(job)


def pytorchjob_outcome(job: dict[str, Any] | None) -> tuple[str, str]:
    """('absent'|'created'|'suspended'|'running'|'restarting'|'succeeded'|'failed', message)
    from the job's conditions."""
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


def is_suspended(job: dict[str, Any] | None) -> bool:
    """The job waits for admission (Kueue) or was preempted: spec.runPolicy.suspend."""
    return bool((((job or {}).get("spec") or {}).get("runPolicy") or {}).get("suspend"))
