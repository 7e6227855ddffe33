"""Deployment (deployments.loom.dev, short name ldep): serve an evaluated model through a
KServe InferenceService, roll later models out step by step (Flagger/Argo-style
progressive delivery), analyse each step, promote the canary or roll it back."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DIGEST_PATTERN,
    DNS_SUBDOMAIN,
    ArtifactRef,
    BaseStatus,
    CelRule,
    LoomModel,
    ObjectReference,
    StatusModel,
)

#: Metrics the model server reports itself (source builtin): error rate in %, latency in ms.
BUILTIN_METRICS: tuple[str, ...] = ("error-rate", "latency-p50", "latency-p95", "latency-p99")
MAX_STEPS = 10
#: Effective stepWeight/maxWeight when neither they nor steps are given.
DEFAULT_STEP_WEIGHT, DEFAULT_MAX_WEIGHT = 20, 60
WebhookType = Literal["pre-rollout", "confirm-promotion", "rollback"]

_HTTP_URL = r"^https?://[^\s/]+(/\S*)?$"


def _increasing_rule(n: int) -> str:
    """CEL for 'strictly increasing' over a list of at most n items (CEL has no index range)."""
    return " && ".join(f"(self.steps.size() <= {i + 1} || self.steps[{i}] < self.steps[{i + 1}])" for i in range(n - 1))


class CanarySpec(LoomModel):
    """The traffic steps a new model goes through next to the serving one."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="!has(self.steps) || (!has(self.stepWeight) && !has(self.maxWeight))",
            message="give either steps or stepWeight/maxWeight, not both",
            field_path=".steps",
        ),
        CelRule(
            rule="!has(self.stepWeight) || !has(self.maxWeight) || self.stepWeight <= self.maxWeight",
            message="stepWeight must be less than or equal to maxWeight",
            field_path=".stepWeight",
        ),
        CelRule(
            rule="!has(self.steps) || (" + _increasing_rule(MAX_STEPS) + ")",
            message="steps must be strictly increasing",
            field_path=".steps",
        ),
    )

    step_weight: int | None = Field(
        default=None, ge=1, le=100,
        description=(f"Traffic % added to the canary at each step (Flagger's stepWeight); the steps are "
                     f"stepWeight, 2*stepWeight, ... up to maxWeight. Default {DEFAULT_STEP_WEIGHT} when steps is not given."),
    )
    max_weight: int | None = Field(
        default=None, ge=1, le=100,
        description=f"Last traffic % before promotion (Flagger's maxWeight). Default {DEFAULT_MAX_WEIGHT} when steps is not given.",
    )
    steps: list[int] | None = Field(
        default=None, min_length=1, max_length=MAX_STEPS,
        description="Explicit traffic % of each step, strictly increasing, each 1..100 (Argo's setWeight steps).",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 100}},
    )
    progress_deadline_seconds: int = Field(
        default=120, ge=1, le=86400,
        description=("How long a rollout may go without progress (the canary becoming Ready, or a step "
                     "passing its analysis, inconclusive rounds included) before it is rolled back."),
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        for i, w in enumerate(value):
            if isinstance(w, bool) or not 1 <= w <= 100:
                raise ValueError(f"each step is a traffic percentage 1..100 (steps[{i}] is {w})")
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise ValueError(f"steps must be strictly increasing (steps[{i}] = {value[i]} follows {value[i - 1]})")
        return value

    @model_validator(mode="after")
    def _weights(self) -> "CanarySpec":
        if self.steps is not None and (self.step_weight is not None or self.max_weight is not None):
            raise ValueError("give either steps or stepWeight/maxWeight, not both")
        if self.step_weight is not None and self.max_weight is not None and self.step_weight > self.max_weight:
            raise ValueError(f"stepWeight ({self.step_weight}) must be less than or equal to maxWeight ({self.max_weight})")
        return self

    def weights(self) -> list[int]:
        """The traffic % of each step, in order."""
        if self.steps:
            return list(self.steps)
        step = self.step_weight or DEFAULT_STEP_WEIGHT
        top = self.max_weight or max(DEFAULT_MAX_WEIGHT, step)
        out, w = [], step
        while w < top:
            out.append(w)
            w += step
        return out + [top]


class ThresholdRange(LoomModel):
    """Acceptable values of an analysis metric (inclusive)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(rule="has(self.max) || has(self.min)", message="thresholdRange needs min, max or both"),
        CelRule(rule="!has(self.max) || !has(self.min) || self.min <= self.max",
                message="min must be less than or equal to max", field_path=".min"),
    )

    min: float | None = Field(default=None, description="Lowest acceptable value.")
    max: float | None = Field(default=None, description="Highest acceptable value.")

    @model_validator(mode="after")
    def _bounds(self) -> "ThresholdRange":
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must be less than or equal to max ({self.max:g})")
        return self


class PrometheusQuery(LoomModel):
    """A PromQL query that returns one number."""

    address: str = Field(
        min_length=8, max_length=1024, pattern=_HTTP_URL,
        description="Prometheus base URL, e.g. http://prometheus.monitoring:9090.",
    )
    query: str = Field(
        min_length=1, max_length=4096,
        description=("PromQL returning one sample. {{namespace}}, {{name}} (the InferenceService), "
                     "{{revision}} (the canary revision) and {{interval}} (e.g. 30s) are filled in."),
    )


class AnalysisMetric(LoomModel):
    """One check of every analysis round."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.prometheus) || self.name in [" + ", ".join(f"'{m}'" for m in BUILTIN_METRICS) + "]",
            message="a metric without prometheus must be a builtin one: " + ", ".join(BUILTIN_METRICS),
            field_path=".name",
        ),
    )

    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=("Metric name. Without prometheus it is a builtin metric of the model server: "
                     "error-rate (% of requests answered 5xx), latency-p50/p95/p99 (ms)."),
    )
    threshold_range: ThresholdRange = Field(description="The round passes this check when the value lies within.")
    prometheus: PrometheusQuery | None = Field(
        default=None, description="Read the value from Prometheus instead of the model server."
    )

    @model_validator(mode="after")
    def _known(self) -> "AnalysisMetric":
        if self.prometheus is None and self.name not in BUILTIN_METRICS:
            raise ValueError(f"unknown builtin metric {self.name!r}: use one of {', '.join(BUILTIN_METRICS)} "
                             "or give a prometheus query")
        return self


class Webhook(LoomModel):
    """An HTTP POST with Flagger's payload ({name, namespace, phase, checksum, metadata})."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="Webhook name (unique).")
    type: WebhookType = Field(
        description=("pre-rollout: must answer 2xx before the canary gets traffic (a failure counts toward "
                     "failureLimit); confirm-promotion: must answer 2xx before promotion (waits until it does); "
                     "rollback: a 2xx answer rolls the canary back (polled each analysis round).")
    )
    url: str = Field(min_length=8, max_length=1024, pattern=_HTTP_URL, description="http(s) URL to POST to.")
    timeout_seconds: int = Field(default=10, ge=1, le=60, description="Request timeout.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Sent as the payload's metadata.")


class AnalysisSpec(LoomModel):
    """How each step is judged."""

    interval: int = Field(default=10, ge=1, le=3600, description="Seconds between analysis rounds (one round per step).")
    failure_limit: int = Field(
        default=2, ge=1, le=100,
        description="Failed rounds (a check out of its range, a failed pre-rollout webhook) that roll the canary back.",
    )
    min_requests: int = Field(
        default=5, ge=1, le=1000000,
        description="Canary requests a round needs for builtin metrics; fewer is inconclusive (the step pauses).",
    )
    metrics: list[AnalysisMetric] = Field(
        default_factory=list, max_length=10,
        description="Checks of every round; none means a step passes once its interval has elapsed.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    webhooks: list[Webhook] = Field(
        default_factory=list, max_length=10, description="Gates called during the rollout.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("metrics", "webhooks")
    @classmethod
    def _unique(cls, value: list) -> list:
        seen: set[str] = set()
        for item in value:
            if item.name in seen:
                raise ValueError(f"duplicate name {item.name!r}")
            seen.add(item.name)
        return value


class DeploymentSpec(LoomModel):
    """Desired state of a Deployment: which evaluated model to serve, and how to roll it out."""

    evaluation_ref: ObjectReference = Field(
        description=(
            "The Evaluation whose model is served, in the same namespace. "
            "Only a passed Evaluation is deployed."
        )
    )
    model_digest: str | None = Field(
        default=None, pattern=DIGEST_PATTERN,
        description=("Pin: serve only this model digest. An Evaluation for another digest is refused "
                     "(reason EvaluationModelMismatch)."),
    )
    mode: Literal["Serverless", "RawDeployment"] | None = Field(
        default=None,
        description=("KServe deployment mode, set as the serving.kserve.io/deploymentMode annotation. Serverless "
                     "drives predictor.canaryTrafficPercent; RawDeployment drives spec.canary (KServe 0.20+). "
                     "Default: the cluster's default (Serverless)."),
    )
    runtime: Literal["loom-onnx", "triton"] = Field(
        default="loom-onnx",
        description="Model server: loom-onnx (Loom's ONNX Runtime model class, the chart's ServingRuntime) or triton.",
    )
    canary: CanarySpec = Field(
        default_factory=CanarySpec, description="Traffic steps of a rollout and its deadline."
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="Metrics, webhooks and limits that judge each step."
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


class AnalysisCheck(StatusModel):
    """The outcome of one metric in the last analysis round."""

    metric: str = Field(description="The metric.")
    value: float | None = Field(default=None, description="Its value (absent when inconclusive).")
    bound: str = Field(default="", description='The range it was held to, e.g. "<= 1" or "0 <= x <= 50".')
    result: Literal["pass", "fail", "inconclusive"] = Field(description="pass, fail, or inconclusive (no data, query error).")
    message: str = Field(default="", description="Human-readable verdict.")


class RolloutStatus(StatusModel):
    """The progress of the current (or last) rollout: the state of the step machine."""

    model: ArtifactRef | None = Field(default=None, description="The canary model of this rollout.")
    steps: list[int] = Field(default_factory=list, description="The traffic % of each step.")
    step_index: int = Field(default=0, ge=0, description="Index of the current step in steps.")
    weight: int = Field(default=0, ge=0, le=100, description="Traffic % on the canary now.")
    pre_rollout_passed: bool = Field(default=False, description="Whether the pre-rollout webhooks have passed.")
    awaiting_promotion: bool = Field(default=False, description="All steps passed; waiting for confirm-promotion.")
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"}, description="When the rollout started.")
    step_started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"}, description="When the current step started.")
    last_analysis_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"}, description="When the last analysis round ran.")
    last_progress_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"}, description="When the rollout last made progress.")
    analysis_rounds: int = Field(default=0, ge=0, description="Analysis rounds run in this rollout.")
    failed_checks: int = Field(default=0, ge=0, description="Failed rounds in this rollout (rollback at failureLimit).")
    inconclusive_rounds: int = Field(default=0, ge=0, description="Inconclusive rounds in this rollout.")
    steps_passed: list[int] = Field(default_factory=list, description="Weights whose analysis passed, in order.")
    checks: list[AnalysisCheck] = Field(default_factory=list, description="The checks of the last round.")
    result: str | None = Field(default=None, description="How the rollout ended: Promoted, RolledBack or Aborted.")
    reason: str | None = Field(default=None, description="Reason of the last decision, e.g. StepPassed, Inconclusive, AnalysisFailed.")
    message: str | None = Field(default=None, description="The last decision, for humans.")


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
        description="Since when the canary has been Ready (RFC 3339).",
    )
    model: ArtifactRef | None = Field(
        default=None, description="The champion: the model serving the stable traffic now."
    )
    canary_model: ArtifactRef | None = Field(
        default=None, description="The model under canary analysis, if any."
    )
    previous_model: ArtifactRef | None = Field(
        default=None, description="The model served before the current one."
    )
    rejected_models: list[ArtifactRef] = Field(
        default_factory=list, description="Models that failed canary analysis and were rolled back."
    )
    traffic_percent: int | None = Field(
        default=None, ge=0, le=100, description="Share of traffic on the canary model now (0..100)."
    )
    rollout: RolloutStatus | None = Field(default=None, description="The current or last progressive rollout.")
    promote_handled: str | None = Field(
        default=None, description="Value of the loom.dev/promote annotation already acted on (acted on once per value)."
    )
    abort_handled: str | None = Field(
        default=None, description="Value of the loom.dev/abort annotation already acted on (acted on once per value)."
    )
