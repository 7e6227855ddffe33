"""Evaluation: score a TrainingRun's model on the frozen test split, gate on thresholds."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import Field, field_validator, model_validator

from .common import (
    ArtifactRef,
    BaseStatus,
    CelRule,
    LoomModel,
    ObjectReference,
    SplitRef,
    StatusModel,
)

MetricName = Literal["accuracy", "f1_macro", "precision_macro", "recall_macro"]
METRICS: tuple[str, ...] = get_args(MetricName)


class Threshold(LoomModel):
    """A bound on one test metric. The Evaluation passes only when every threshold holds."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.min) || has(self.max)",
            message="a threshold needs min, max or both",
        ),
        CelRule(
            rule="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must be less than or equal to max",
            field_path=".min",
        ),
    )

    metric: MetricName = Field(
        description="Metric on the test split: accuracy, f1_macro, precision_macro or recall_macro."
    )
    min: float | None = Field(
        default=None, ge=0, le=1, description="Lowest acceptable value (inclusive, 0..1)."
    )
    max: float | None = Field(
        default=None, ge=0, le=1, description="Highest acceptable value (inclusive, 0..1)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> "Threshold":
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must be less than or equal to max ({self.max:g})")
        return self


class EvaluationSpec(LoomModel):
    """Desired state of an Evaluation: which model, which gates."""

    training_run_ref: ObjectReference = Field(
        description="The TrainingRun whose model is evaluated, in the same namespace."
    )
    thresholds: list[Threshold] = Field(
        min_length=1,
        max_length=len(METRICS),
        description="Gates on test metrics, at most one per metric; all must hold to pass.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["metric"],
        },
    )

    @field_validator("thresholds")
    @classmethod
    def _one_per_metric(cls, value: list[Threshold]) -> list[Threshold]:
        seen: set[str] = set()
        for t in value:
            if t.metric in seen:
                raise ValueError(f"duplicate threshold for metric {t.metric}")
            seen.add(t.metric)
        return value


class Check(StatusModel):
    """The outcome of one threshold."""

    metric: str = Field(description="The metric checked.")
    value: float | None = Field(default=None, description="Its value on the test split.")
    bound: str = Field(
        default="", description='The bound it was held to, e.g. ">= 0.8" or "0.8 <= x <= 0.95".'
    )
    passed: bool = Field(description="Whether the value is within the bound.")
    message: str = Field(default="", description="Human-readable verdict.")


class EvaluationStatus(BaseStatus):
    """Observed state of an Evaluation: what was scored, the metrics, the verdicts."""

    model: ArtifactRef | None = Field(
        default=None, description="The model evaluated (digest checked before scoring)."
    )
    test_split: SplitRef | None = Field(
        default=None, description="The test split scored (digest checked before scoring)."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Test metrics by name: accuracy, f1_macro, precision_macro, recall_macro.",
    )
    report: ArtifactRef | None = Field(
        default=None,
        description="The verdict as an artifact (result object and its digest); a Deployment's lineage points at it.",
    )
    checks: list[Check] = Field(
        default_factory=list, description="One verdict per threshold."
    )
