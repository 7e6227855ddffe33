"""TrainingRun: train a model on a LabelJob's splits in a PyTorchJob, export ONNX."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .common import (
    DNS_SUBDOMAIN,
    ArtifactRef,
    BaseStatus,
    CelRule,
    LoomModel,
    ObjectReference,
    Quantity,
    StatusModel,
)

#: GPUs need a CUDA build of the workload image: the default image is CPU-only.
GPU_NEEDS_CUDA = (
    "resources.gpus > 0 needs an image with CUDA: set spec.image to a CUDA build of the "
    "workload image and declare it with spec.imageHasCuda: true (the default workload image is CPU-only)"
)
FP16_NEEDS_GPU = "precision fp16 needs a GPU (resources.gpus > 0); on CPU use bf16 or fp32"


class ModelSpec(LoomModel):
    """The model architecture."""

    type: Literal["mlp"] = Field(
        default="mlp",
        description="Architecture: mlp (a multilayer perceptron over the numeric feature columns).",
    )
    hidden_units: int = Field(
        default=16, ge=1, le=4096, description="Width of the hidden layer (1..4096)."
    )


class Hyperparameters(LoomModel):
    """Optimisation settings."""

    epochs: int = Field(default=20, ge=1, le=10000, description="Passes over the train split.")
    learning_rate: float = Field(
        default=0.05, gt=0, le=10, description="Optimizer learning rate (> 0)."
    )
    batch_size: int = Field(
        default=32, ge=1, le=65536, description="Rows per batch, per worker process."
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Seed of weight initialisation and shuffling, for reproducible runs.",
    )


class Resources(LoomModel):
    """Resources of each pod (requests equal limits)."""

    cpu: Quantity = Field(default="1", description='CPU per worker pod, e.g. "1", "500m".')
    memory: Quantity = Field(default="1Gi", description='Memory per worker pod, e.g. "1Gi".')
    gpus: int = Field(
        default=0,
        ge=0,
        le=16,
        description="nvidia.com/gpu per worker pod. 0 trains on CPU (gloo); more uses nccl.",
    )
    gpu_type: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="GPU model to schedule on: the node label nvidia.com/gpu.product "
        "(e.g. NVIDIA-H100-80GB-HBM3). Pods also tolerate the nvidia.com/gpu taint when gpus > 0.",
    )
    shm_size: Quantity | None = Field(
        default=None,
        description='Size of /dev/shm (an in-memory emptyDir) for DataLoader workers, e.g. "1Gi". '
        "Unset: the container runtime's default (64Mi).",
    )


class Toleration(LoomModel):
    """A core/v1 Toleration of the training pods."""

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated (>= 0)."
    )


class RunPolicy(LoomModel):
    """The PyTorchJob's runPolicy: restarts, deadlines, cleanup."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Gang restarts after a replica is killed or evicted (exit code >= 128) before the run "
        "fails; each restart resumes from the latest checkpoint. A trainer error (exit 1..127) is never retried.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the run when it has been running longer (seconds, >= 1)."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished PyTorchJob after this many seconds (>= 0)."
    )
    clean_pod_policy: Literal["All", "Running", "None"] = Field(
        default="Running", description="Pods to delete when the job finishes: All, Running or None."
    )


class CheckpointSpec(LoomModel):
    """Checkpoints (model, optimizer, RNG state, step, epoch) in object storage."""

    every_steps: int = Field(
        default=50,
        ge=1,
        le=10_000_000,
        description="Write a checkpoint every this many optimizer steps (and on SIGTERM); "
        "a restarted gang resumes from the latest one.",
    )
    keep: int = Field(default=2, ge=1, le=100, description="Checkpoints kept; older ones are deleted.")


class EarlyStopping(LoomModel):
    """Stop when the validation metric has not improved for `patience` epochs."""

    metric: Literal["val_accuracy", "val_loss"] = Field(
        default="val_loss", description="Validation metric watched: val_loss (lower is better) or val_accuracy."
    )
    patience: int = Field(default=3, ge=1, le=10000, description="Epochs without improvement before stopping.")
    min_delta: float = Field(default=0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainingRunSpec(LoomModel):
    """Desired state of a TrainingRun: data, model, hyperparameters and scale."""

    label_job_ref: ObjectReference = Field(
        description="The LabelJob whose labelled splits are trained on, in the same namespace."
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The model architecture.")
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Optimisation settings."
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Worker replicas beside the Master (0 trains on the Master alone); "
        "world size is (1 + workers) x nprocPerNode.",
    )
    nproc_per_node: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Training processes per pod (more than 1 runs under torchrun); world size is (1 + workers) x nprocPerNode.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="CPU, memory and GPUs of each pod."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Workload image override. Default: the operator's LOOM_WORKLOAD_IMAGE. "
        "Pin it by digest (image@sha256:...) to record the digest in lineage.",
    )
    image_has_cuda: bool = Field(
        default=False,
        description="Declares that spec.image is a CUDA build of the workload image; required for gpus > 0.",
    )
    backend: Literal["pytorchjob", "trainjob"] = Field(
        default="pytorchjob",
        description="pytorchjob: Kubeflow Training Operator kubeflow.org/v1 PyTorchJob; "
        "trainjob: Kubeflow Trainer v2 trainer.kubeflow.org/v1alpha1 TrainJob.",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=DNS_SUBDOMAIN,
        description="Kueue LocalQueue in this namespace: the job is created suspended with the label "
        "kueue.x-k8s.io/queue-name and runs when Kueue admits it (status Queued until then).",
    )
    priority_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PriorityClass of the pods (and of the workload, for Kueue preemption).",
    )
    min_available: int | None = Field(
        default=None,
        ge=1,
        le=65,
        description="Gang scheduling: pods that must be schedulable together. Default: all (1 + workers).",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods must run on (merged with resources.gpuType)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pods tolerate."
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Restarts, deadlines and cleanup.")
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="Checkpoints for resuming after a failure or preemption."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="Mixed precision: fp32 (off), bf16 (autocast; CPU or GPU with bf16 support), "
        "fp16 (autocast with a gradient scaler; GPU only).",
    )
    deterministic: bool = Field(
        default=False,
        description="Deterministic algorithms and seeded RNGs: two runs on the same data, "
        "world size and hardware give bit-identical weights.",
    )
    early_stopping: EarlyStopping | None = Field(
        default=None, description="Stop on the validation split when it stops improving (unset: train all epochs)."
    )
    storage_secret_ref: ObjectReference | None = Field(
        default=None,
        description="Secret in this namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "passed to the pods by envFrom (never copied). Default: the operator's LOOM_S3_SECRET.",
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(rule="self.resources.gpus == 0 || self.imageHasCuda", message=GPU_NEEDS_CUDA,
                field_path=".resources"),
        CelRule(rule="!self.imageHasCuda || has(self.image)",
                message="imageHasCuda declares spec.image: set spec.image too", field_path=".imageHasCuda"),
        CelRule(rule="self.precision != 'fp16' || self.resources.gpus > 0", message=FP16_NEEDS_GPU,
                field_path=".precision"),
        CelRule(rule="!has(self.minAvailable) || self.minAvailable <= 1 + self.workers",
                message="minAvailable cannot exceed the pods of the job (1 + workers)", field_path=".minAvailable"),
    )

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingRunSpec":
        if self.resources.gpus > 0 and not self.image_has_cuda:
            raise ValueError(GPU_NEEDS_CUDA)
        if self.image_has_cuda and not self.image:
            raise ValueError("imageHasCuda declares spec.image: set spec.image too")
        if self.precision == "fp16" and self.resources.gpus == 0:
            raise ValueError(FP16_NEEDS_GPU)
        if self.min_available is not None and self.min_available > 1 + self.workers:
            raise ValueError(f"minAvailable {self.min_available} cannot exceed the pods of the job (1 + workers = {1 + self.workers})")
        return self


class Progress(StatusModel):
    """Live progress reported by the rank-0 trainer."""

    step: int | None = Field(default=None, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Steps the run will take if not stopped early.")
    epoch: int | None = Field(default=None, ge=0, description="Epochs completed.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    samples_per_second: float | None = Field(default=None, ge=0, description="Throughput, all ranks together.")
    updated_at: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When the trainer wrote it."
    )


class CheckpointRef(StatusModel):
    """The latest checkpoint."""

    uri: str = Field(description="Location of the checkpoint file.")
    step: int = Field(ge=0, description="Optimizer step it was taken at.")
    epoch: int | None = Field(default=None, ge=0, description="Epoch it was taken in (0-based).")


class TrainingRunStatus(BaseStatus):
    """Observed state of a TrainingRun: the job, the exported model and its metrics."""

    job_name: str | None = Field(default=None, description="Name of the PyTorchJob.")
    label_version: str | None = Field(
        default=None, description="The labelled data version (sha256) this run trained on."
    )
    world_size: int | None = Field(
        default=None, ge=1, description="Number of training processes that ran."
    )
    model: ArtifactRef | None = Field(
        default=None, description="The exported ONNX model (content-addressed)."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Final training metrics by name, e.g. train_loss, val_accuracy.",
    )
    classes: list[str] = Field(
        default_factory=list, description="Output classes, in the order of the model's outputs."
    )
    features: list[str] = Field(
        default_factory=list, description="Input feature columns, in the order the model expects."
    )
    start_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When training started (RFC 3339).",
    )
    completion_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When training finished (RFC 3339).",
    )
    backend: str | None = Field(default=None, description="Job kind that runs the training (PyTorchJob or TrainJob).")
    queue: str | None = Field(default=None, description="Kueue LocalQueue the job waits in.")
    progress: Progress | None = Field(default=None, description="Live progress from the trainer.")
    latest_checkpoint: CheckpointRef | None = Field(
        default=None, description="The checkpoint a restarted gang resumes from."
    )
    restarts: int | None = Field(default=None, ge=0, description="Times the gang restarted from a checkpoint.")
    hyperparameters_hash: str | None = Field(
        default=None, description="sha256 of the resolved training configuration (hyperparameters, model, precision, seed...)."
    )
