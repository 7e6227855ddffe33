"""Evaluation: score a TrainingRun's model on the frozen test split, gate on thresholds,
slices, calibration, robustness, latency and the champion; prove no leakage by lineage."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DNS_LABEL,
    ArtifactRef,
    BaseStatus,
    CelRule,
    LoomModel,
    ObjectReference,
    SplitRef,
    StatusModel,
)

#: Label metrics (scikit-learn, macro averages over the model's classes).
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
#: Metrics of the predicted probabilities (softmax of the model's outputs).
PROBABILITY_METRICS: tuple[str, ...] = ("roc_auc", "log_loss", "ece")
#: ONNX Runtime timings at spec.latency.batchSize.
LATENCY_METRICS: tuple[str, ...] = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_rps")
#: Every plain metric a threshold may name; ``robustness.<perturbation>.<label metric>`` too.
METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + PROBABILITY_METRICS + LATENCY_METRICS
#: Metrics that lie in 0..1 (their bounds must too).
UNIT_METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + ("roc_auc", "ece")
#: Metrics where higher is better: what a champion can be compared on.
CHAMPION_METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + ("roc_auc",)
MAX_THRESHOLDS = 32

_ALT = "|".join(CLASSIFICATION_METRICS)
ROBUSTNESS_METRIC = rf"^robustness\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.({_ALT})$"


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def is_metric_name(name: str) -> bool:
    return name in METRICS or re.match(ROBUSTNESS_METRIC, name) is not None


def is_unit_metric(name: str) -> bool:
    return name in UNIT_METRICS or name.startswith("robustness.")


METRIC_HELP = (
    f"one of {', '.join(METRICS)}, or robustness.<perturbation>.<{'|'.join(CLASSIFICATION_METRICS)}>"
)


class Threshold(LoomModel):
    """A bound on one test metric. The Evaluation passes only when every threshold holds."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=f"self.metric in {_cel_list(METRICS)} || self.metric.matches('{ROBUSTNESS_METRIC.replace(chr(92), chr(92) * 2)}')",
            message=f"unknown metric: use {METRIC_HELP}",
            field_path=".metric",
        ),
        CelRule(
            rule="has(self.min) || has(self.max)",
            message="a threshold needs min, max or both",
        ),
        CelRule(
            rule="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must be less than or equal to max",
            field_path=".min",
        ),
        CelRule(
            rule=(
                f"!(self.metric in {_cel_list(UNIT_METRICS)} || self.metric.startsWith('robustness.')) || "
                "((!has(self.min) || self.min <= 1.0) && (!has(self.max) || self.max <= 1.0))"
            ),
            message=f"bounds of {', '.join(UNIT_METRICS)} and robustness metrics lie in 0..1",
        ),
    )

    metric: str = Field(
        min_length=1,
        max_length=128,
        description=(
            "Metric on the test split: accuracy, f1_macro, precision_macro, recall_macro "
            "(label metrics, 0..1), roc_auc, log_loss, ece (from probabilities), latency_p50_ms, "
            "latency_p95_ms, latency_p99_ms, throughput_rps (ONNX Runtime at spec.latency.batchSize), "
            "or robustness.<perturbation>.<label metric> (under a perturbation of spec.robustness)."
        ),
    )
    min: float | None = Field(
        default=None, ge=0, description="Lowest acceptable value (inclusive; 0..1 for label metrics)."
    )
    max: float | None = Field(
        default=None, ge=0, description="Highest acceptable value (inclusive; 0..1 for label metrics)."
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        if not is_metric_name(value):
            raise ValueError(f"unknown metric {value!r}: use {METRIC_HELP}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "Threshold":
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must be less than or equal to max ({self.max:g})")
        if is_unit_metric(self.metric):
            for side, bound in (("min", self.min), ("max", self.max)):
                if bound is not None and bound > 1:
                    raise ValueError(f"{side} of {self.metric} must lie in 0..1 (got {bound:g})")
        return self


def _one_per_metric(value: list[Threshold]) -> list[Threshold]:
    seen: set[str] = set()
    for t in value:
        if t.metric in seen:
            raise ValueError(f"duplicate threshold for metric {t.metric}")
        seen.add(t.metric)
    return value


_THRESHOLD_LIST = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["metric"]}


class SliceSpec(LoomModel):
    """Group the test rows by the values of one column; score each group alone."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=f"!has(self.thresholds) || self.thresholds.all(t, t.metric in {_cel_list(CLASSIFICATION_METRICS)})",
            message=f"slice thresholds take a label metric: {', '.join(CLASSIFICATION_METRICS)}",
            field_path=".thresholds",
        ),
    )

    column: str = Field(
        min_length=1, max_length=253,
        description="A column of the test split (a feature, the label, or any other column); each distinct value is a slice.",
    )
    min_rows: int = Field(
        default=5, ge=1, le=1_000_000,
        description="Slices with fewer test rows are reported as skipped, not scored or gated.",
    )
    thresholds: list[Threshold] = Field(
        default_factory=list, max_length=len(CLASSIFICATION_METRICS),
        description="Bounds every scored slice must meet (label metrics only), at most one per metric.",
        json_schema_extra=_THRESHOLD_LIST,
    )

    @field_validator("thresholds")
    @classmethod
    def _slice_thresholds(cls, value: list[Threshold]) -> list[Threshold]:
        for t in value:
            if t.metric not in CLASSIFICATION_METRICS:
                raise ValueError(
                    f"slice threshold on {t.metric!r}: slices take a label metric ({', '.join(CLASSIFICATION_METRICS)})"
                )
        return _one_per_metric(value)


class CalibrationSpec(LoomModel):
    """Expected calibration error over equal-width confidence bins."""

    bins: int = Field(default=10, ge=2, le=100, description="Number of equal-width confidence bins (2..100).")


class Perturbation(LoomModel):
    """A declared, seeded change to the test features; the label metrics are recomputed under it."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(rule="self.type != 'gaussianNoise' || has(self.sigma)",
                message="a gaussianNoise perturbation needs sigma", field_path=".sigma"),
        CelRule(rule="self.type != 'dropValues' || has(self.rate)",
                message="a dropValues perturbation needs rate", field_path=".rate"),
    )

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL,
        description="Name of the perturbation; its metrics are robustness.<name>.<metric>.",
    )
    type: Literal["gaussianNoise", "dropValues"] = Field(
        description="gaussianNoise adds N(0, (sigma x column std)^2) to each value; dropValues replaces a share `rate` of values with the column mean or zero."
    )
    sigma: float | None = Field(
        default=None, gt=0, le=100,
        description="gaussianNoise: noise standard deviation in units of each column's standard deviation on the test split.",
    )
    rate: float | None = Field(default=None, gt=0, le=1, description="dropValues: share of values dropped (0..1].")
    fill: Literal["mean", "zero"] = Field(default="mean", description="dropValues: what a dropped value becomes.")
    columns: list[str] = Field(
        default_factory=list, max_length=256,
        description="Feature columns perturbed; empty means every feature of the model.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Random seed: the same seed gives the same perturbation.")

    @model_validator(mode="after")
    def _parameters(self) -> "Perturbation":
        if self.type == "gaussianNoise" and self.sigma is None:
            raise ValueError("a gaussianNoise perturbation needs sigma")
        if self.type == "dropValues" and self.rate is None:
            raise ValueError("a dropValues perturbation needs rate")
        return self


class LatencySpec(LoomModel):
    """How the model's inference time is measured (ONNX Runtime, CPU, in the evaluation pod)."""

    batch_size: int = Field(default=32, ge=1, le=65536, description="Rows per inference call.")
    iterations: int = Field(default=200, ge=10, le=100_000, description="Timed calls.")
    warmup: int = Field(default=10, ge=0, le=10_000, description="Untimed calls first.")


class ChampionSpec(LoomModel):
    """Compare with the model a Deployment serves now, on the same test split."""

    deployment_ref: ObjectReference = Field(
        description="The Deployment whose status.model is the champion, in the same namespace."
    )
    metric: Literal["accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc"] = Field(
        default="accuracy", description="The metric compared (higher is better)."
    )
    tolerance: float = Field(
        default=0.0, ge=0, le=1,
        description="Allowed regression: the check fails when candidate < champion - tolerance.",
    )


class EvaluationSpec(LoomModel):
    """Desired state of an Evaluation: which model, which gates."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=(
                "self.thresholds.all(t, !t.metric.startsWith('robustness.') || "
                "(has(self.robustness) && self.robustness.exists(r, t.metric.startsWith('robustness.' + r.name + '.'))))"
            ),
            message="a robustness.<name>.<metric> threshold must name a perturbation declared in spec.robustness",
            field_path=".thresholds",
        ),
    )

    training_run_ref: ObjectReference = Field(
        description="The TrainingRun whose model is evaluated, in the same namespace."
    )
    thresholds: list[Threshold] = Field(
        min_length=1,
        max_length=MAX_THRESHOLDS,
        description="Gates on test metrics, at most one per metric; all must hold to pass.",
        json_schema_extra=_THRESHOLD_LIST,
    )
    slices: list[SliceSpec] = Field(
        default_factory=list, max_length=16,
        description="Per-slice metrics (and optional per-slice thresholds), one entry per column.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["column"]},
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec, description="Expected calibration error and its reliability table."
    )
    robustness: list[Perturbation] = Field(
        default_factory=list, max_length=16,
        description="Perturbations of the test features; metrics under each are robustness.<name>.<metric>.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    latency: LatencySpec = Field(
        default_factory=LatencySpec, description="Latency and throughput measurement with ONNX Runtime."
    )
    champion: ChampionSpec | None = Field(
        default=None,
        description="Refuse a regression against the model a Deployment serves now. No champion yet: the check passes.",
    )

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[Threshold]) -> list[Threshold]:
        return _one_per_metric(value)

    @field_validator("slices")
    @classmethod
    def _one_per_column(cls, value: list[SliceSpec]) -> list[SliceSpec]:
        columns = [s.column for s in value]
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise ValueError(f"duplicate slice column {dup[0]}")
        return value

    @field_validator("robustness")
    @classmethod
    def _one_per_name(cls, value: list[Perturbation]) -> list[Perturbation]:
        names = [p.name for p in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate perturbation name {dup[0]}")
        return value

    @model_validator(mode="after")
    def _robustness_declared(self) -> "EvaluationSpec":
        declared = {p.name for p in self.robustness}
        for i, t in enumerate(self.thresholds):
            if t.metric.startswith("robustness."):
                name = t.metric.split(".")[1]
                if name not in declared:
                    raise ValueError(
                        f"thresholds[{i}] names perturbation {name!r}, which spec.robustness does not declare"
                        + (f" (declared: {', '.join(sorted(declared))})" if declared else "")
                    )
        return self


class Check(StatusModel):
    """The outcome of one check."""

    metric: str = Field(description="The metric checked (a slice check reads metric[column=value]).")
    value: float | None = Field(default=None, description="Its value on the test split.")
    bound: str = Field(
        default="", description='The bound it was held to, e.g. ">= 0.8" or "<= 250".'
    )
    passed: bool = Field(description="Whether the value is within the bound.")
    message: str = Field(default="", description="Human-readable verdict.")


class SliceResult(StatusModel):
    """One slice of the test split."""

    column: str = Field(description="The slicing column.")
    value: str = Field(description="The column value that defines the slice.")
    rows: int = Field(ge=0, description="Test rows in the slice.")
    skipped: bool = Field(default=False, description="True when rows < minRows: not scored, not gated.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Label metrics on the slice.")


class ChampionStatus(StatusModel):
    """The champion the candidate was compared with."""

    deployment: str = Field(description="The Deployment whose served model is the champion.")
    model: ArtifactRef | None = Field(default=None, description="The champion model; absent when none is served yet.")
    metric: str = Field(description="The metric compared.")
    value: float | None = Field(default=None, description="The champion's value on the same test split.")


class ModelCard(StatusModel):
    """The model card in object storage, as JSON and as Markdown."""

    uri: str = Field(description="s3:// URI of model-card.json.")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of model-card.json.")
    markdown_uri: str = Field(description="s3:// URI of model-card.md.")
    markdown_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of model-card.md.")


class EvaluationStatus(BaseStatus):
    """Observed state of an Evaluation: what was scored, the metrics, the verdicts."""

    model: ArtifactRef | None = Field(
        default=None, description="The model evaluated (digest checked before scoring)."
    )
    test_split: SplitRef | None = Field(
        default=None, description="The labelled test split scored (the LabelJob's; digest checked before scoring)."
    )
    dataset_test_split: SplitRef | None = Field(
        default=None,
        description="The Dataset's frozen test split the labelled one was derived from (digest checked; every scored row is in it).",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Test metrics by name (see spec.thresholds[].metric).",
    )
    slices: list[SliceResult] = Field(default_factory=list, description="Per-slice results, skipped ones included.")
    champion: ChampionStatus | None = Field(default=None, description="The champion comparison, when spec.champion is set.")
    report: ArtifactRef | None = Field(
        default=None,
        description="The verdict as an artifact (result object and its digest); a Deployment's lineage points at it.",
    )
    model_card: ModelCard | None = Field(default=None, description="The model card (JSON and Markdown) in object storage.")
    checks: list[Check] = Field(
        default_factory=list, description="One verdict per check."
    )
