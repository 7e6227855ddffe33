"""TrainingRun: train a model on a LabelJob's splits in a PyTorchJob, export ONNX."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import (
    ArtifactRef,
    BaseStatus,
    LoomModel,
    ObjectReference,
    Quantity,
)


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
    """Resources of each worker pod (requests equal limits)."""

    cpu: Quantity = Field(default="1", description='CPU per worker pod, e.g. "1", "500m".')
    memory: Quantity = Field(default="1Gi", description='Memory per worker pod, e.g. "1Gi".')
    gpus: int = Field(
        default=0,
        ge=0,
        le=16,
        description="nvidia.com/gpu per worker pod. 0 trains on CPU (gloo); more uses nccl.",
    )


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
        description="Workload image override. Default: the operator's LOOM_WORKLOAD_IMAGE.",
    )


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
