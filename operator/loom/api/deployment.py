"""Deployment (deployments.loom.dev, short name ldep): serve an evaluated model with
a KServe canary, analyse it, promote it or roll it back."""

from __future__ import annotations

from pydantic import Field

from .common import (
    DNS_SUBDOMAIN,
    ArtifactRef,
    BaseStatus,
    LoomModel,
    ObjectReference,
)


class CanarySpec(LoomModel):
    """How a new model is rolled out next to the serving one."""

    traffic_percent: int = Field(
        default=20,
        ge=1,
        le=99,
        description="Share of requests (1..99 %) sent to the new model during analysis.",
    )
    analysis_seconds: int = Field(
        default=10,
        ge=0,
        le=86400,
        description="How long the canary must stay healthy before it is promoted to 100 %.",
    )
    ready_deadline_seconds: int = Field(
        default=120,
        ge=1,
        le=86400,
        description="How long the canary may take to become Ready before it is rolled back.",
    )


class DeploymentSpec(LoomModel):
    """Desired state of a Deployment: which evaluated model to serve, and how to roll it out."""

    evaluation_ref: ObjectReference = Field(
        description=(
            "The Evaluation whose model is served, in the same namespace. "
            "Only a passed Evaluation is deployed."
        )
    )
    canary: CanarySpec = Field(
        default_factory=CanarySpec, description="Canary rollout and automatic rollback."
    )
    service_account_name: str = Field(
        default="loom-s3",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "ServiceAccount of the InferenceService; KServe's storage initializer reads the "
            "S3 key pair from the Secret attached to it."
        ),
    )


class DeploymentStatus(BaseStatus):
    """Observed state of a Deployment: what is serving, what is on canary, what was refused."""

    inference_service: str | None = Field(
        default=None, description="Name of the KServe InferenceService."
    )
    url: str | None = Field(default=None, description="URL of the InferenceService.")
    canary_start_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the current rollout (first or canary) started (RFC 3339).",
    )
    canary_ready_since: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Since when the canary has been Ready (RFC 3339); it is promoted after canary.analysisSeconds.",
    )
    model: ArtifactRef | None = Field(
        default=None, description="The model serving most traffic."
    )
    canary_model: ArtifactRef | None = Field(
        default=None, description="The model under canary analysis, if any."
    )
    previous_model: ArtifactRef | None = Field(
        default=None, description="The model served before the current one (rollback target)."
    )
    rejected_models: list[ArtifactRef] = Field(
        default_factory=list, description="Models that failed canary analysis and were rolled back."
    )
    traffic_percent: int | None = Field(
        default=None, ge=0, le=100, description="Share of traffic on the canary model now (0..100)."
    )
