"""LabelJob: measure annotator agreement, check annotators against gold items,
adjudicate, and publish labelled splits with a label card."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .common import (
    DIGEST_PATTERN,
    MAX_URI_LENGTH,
    ArtifactRef,
    BaseStatus,
    CelRule,
    LoomModel,
    ObjectReference,
    S3Source,
    S3Uri,
    Splits,
    StatusModel,
)


class AnnotationSource(S3Source):
    """A file of annotations: CSV (item, annotator, label) or a Label Studio JSON export."""

    uri: S3Uri = Field(
        description=(
            "s3://bucket/key, or s3://bucket/prefix/ for every object under the prefix. "
            "csv: columns item (the dataset's id column), annotator, label. "
            "labelstudio: a Label Studio JSON export (a list of tasks)."
        ),
    )
    format: Literal["csv", "labelstudio"] = Field(
        default="csv",
        description=(
            "File format: csv (with a header row) or labelstudio (JSON export: each task's "
            "annotations[].result[].value.choices, annotator from completed_by, item from "
            "data.<the dataset's idColumn> or else the task id)."
        ),
    )


class GoldSource(S3Source):
    """Items whose answer is known: a CSV with columns item, label."""

    uri: S3Uri = Field(
        description="s3://bucket/key.csv: a CSV with columns item (the dataset's id column) and label.",
    )
    format: Literal["csv"] = Field(default="csv", description="File format of the gold set. Only csv.")


GUIDELINES_URI_RULE = CelRule(
    rule="self.uri.startsWith('s3://') || self.uri.startsWith('https://') || self.uri.startsWith('http://')",
    message="uri must start with s3://, https:// or http://",
    field_path=".uri",
)


class Guidelines(LoomModel):
    """The annotation guidelines the annotators followed, recorded with the labels."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (GUIDELINES_URI_RULE,)

    uri: str = Field(
        min_length=6,
        max_length=MAX_URI_LENGTH,
        description=(
            "Where the guidelines live: s3:// (read and hashed by the LabelJob) or "
            "http(s):// (recorded, not fetched)."
        ),
    )
    version: str = Field(
        min_length=1, max_length=128, description="Version of the guidelines, e.g. v3 or 2026-11-01."
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: str) -> str:
        if not value.startswith(("s3://", "https://", "http://")):
            raise ValueError(f"must start with s3://, https:// or http:// (got {value!r})")
        return value


GOLD_BOUND_RULE = CelRule(
    rule="!has(self.minGoldAccuracy) || has(self.gold)",
    message="minGoldAccuracy needs a gold set (spec.gold)",
    field_path=".minGoldAccuracy",
)


class LabelJobSpec(LoomModel):
    """Desired state of a LabelJob: which dataset, which annotations, which quality bar."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (GOLD_BOUND_RULE,)

    dataset_ref: ObjectReference = Field(
        description="The Dataset whose rows are labelled, in the same namespace."
    )
    annotations: list[AnnotationSource] = Field(
        min_length=1,
        max_length=100,
        description="Annotation files, concatenated. Each annotation is one annotator's label for one item.",
    )
    guidelines: Guidelines | None = Field(
        default=None,
        description="The annotation guidelines (URI and version), recorded in status, the label card and lineage.",
    )
    label_column: str = Field(
        default="label",
        min_length=1,
        max_length=253,
        description="Name of the label column written into the published splits.",
    )
    agreement_metric: Literal["auto", "cohen", "fleiss", "krippendorff"] = Field(
        default="auto",
        description=(
            "The statistic the minAgreement gate uses (all are computed and kept in status): "
            "cohen (Cohen's kappa, mean over annotator pairs), fleiss (Fleiss' kappa, items "
            "labelled by every annotator), krippendorff (Krippendorff's alpha, nominal; allows "
            "missing labels), or auto (cohen for 2 annotators, fleiss when every annotator "
            "labelled every item, else krippendorff)."
        ),
    )
    min_agreement: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description=(
            "Quality gate: when agreement is below this value (0..1) nothing is published "
            "and the LabelJob fails with reason AgreementBelowThreshold."
        ),
    )
    gold: GoldSource | None = Field(
        default=None,
        description=(
            "Gold items (known answers), a CSV item,label. Each annotator's accuracy on them is "
            "reported; gold items are published with their gold label."
        ),
    )
    min_gold_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Annotators whose accuracy on the gold items is below this (0..1) are excluded "
            "from agreement and adjudication; status lists who and why. Needs spec.gold."
        ),
    )
    adjudication: Literal["majority", "dawid-skene"] = Field(
        default="majority",
        description=(
            "How one label is chosen per item: majority vote, or dawid-skene (EM over each "
            "annotator's confusion matrix, Dawid & Skene 1979). Ties are never guessed: "
            "they go to the review queue."
        ),
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Items whose adjudicated label has confidence below this (the posterior for "
            "dawid-skene, the vote share for majority) are not published; they go to the "
            "review queue with the ties."
        ),
    )

    @model_validator(mode="after")
    def _gold_bound_needs_gold(self) -> "LabelJobSpec":
        if self.min_gold_accuracy is not None and self.gold is None:
            raise ValueError("minGoldAccuracy needs a gold set (spec.gold)")
        return self


class Agreement(StatusModel):
    """The agreement figure the gate used."""

    metric: str = Field(description="Statistic used: cohen_kappa, fleiss_kappa or krippendorff_alpha.")
    value: float = Field(description="Its value: 1 is perfect agreement, 0 is chance.")


class PairKappa(StatusModel):
    """Cohen's kappa between two annotators."""

    annotators: list[str] = Field(description="The two annotators.")
    value: float | None = Field(default=None, description="Cohen's kappa (absent when undefined).")
    items: int = Field(ge=0, description="Items both annotators labelled.")


class Figure(StatusModel):
    """One agreement statistic."""

    value: float | None = Field(default=None, description="The statistic (absent when undefined on these data).")
    items: int = Field(ge=0, description="Items it was computed on.")


class CohenFigure(Figure):
    """Cohen's kappa: the mean over annotator pairs, and each pair."""

    pairs: list[PairKappa] = Field(
        default_factory=list, description="Each pair's kappa, lowest first (at most 45 kept in status; the label card has all)."
    )
    pairs_total: int | None = Field(default=None, ge=0, description="Number of annotator pairs.")


class LabelFigures(StatusModel):
    """Agreement on one label, one-vs-rest."""

    label: str = Field(description="The label.")
    cohen_kappa: float | None = Field(default=None, description="Mean pairwise Cohen's kappa, one-vs-rest.")
    fleiss_kappa: float | None = Field(default=None, description="Fleiss' kappa, one-vs-rest.")
    krippendorff_alpha: float | None = Field(default=None, description="Krippendorff's alpha, one-vs-rest.")


class AgreementFigures(StatusModel):
    """Every agreement statistic, overall and per label."""

    cohen_kappa: CohenFigure | None = Field(default=None, description="Cohen's kappa, mean over pairs.")
    fleiss_kappa: Figure | None = Field(default=None, description="Fleiss' kappa (items labelled by every annotator).")
    krippendorff_alpha: Figure | None = Field(default=None, description="Krippendorff's alpha, nominal.")
    per_label: list[LabelFigures] = Field(
        default_factory=list, description="One-vs-rest figures per label (at most 50 labels kept in status)."
    )


class GoldAccuracy(StatusModel):
    """One annotator measured against the gold items."""

    annotator: str = Field(description="The annotator.")
    accuracy: float | None = Field(default=None, description="Share of the gold items seen that they got right.")
    gold_items: int = Field(ge=0, description="Gold items this annotator labelled.")
    excluded: bool = Field(description="True when excluded from agreement and adjudication.")
    reason: str | None = Field(default=None, description="Why excluded, e.g. accuracy 0.55 < minGoldAccuracy 0.8 on 20 gold items.")


class GoldStatus(StatusModel):
    """The gold set and the annotators' accuracy against it."""

    uri: str = Field(description="The gold file.")
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN, description="sha256 of the gold file.")
    items: int = Field(ge=0, description="Gold items.")
    annotators: list[GoldAccuracy] = Field(default_factory=list, description="Accuracy per annotator.")


class GuidelinesStatus(StatusModel):
    """The guidelines the labels were made under."""

    uri: str = Field(description="Where the guidelines live.")
    version: str = Field(description="Their version.")
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN, description="sha256 of the guidelines (s3:// only).")


class Adjudication(StatusModel):
    """How labels were chosen and how many were confident."""

    method: str = Field(description="majority or dawid-skene.")
    labelled: int = Field(ge=0, description="Items published with a label (gold items included).")
    ties: int = Field(ge=0, description="Items whose top label was tied (not published; in the review queue).")
    low_confidence: int = Field(ge=0, description="Items below minConfidence (not published; in the review queue).")
    iterations: int | None = Field(default=None, ge=0, description="EM iterations (dawid-skene).")


class ReviewQueue(StatusModel):
    """Items for the next labelling round, most uncertain first."""

    uri: str = Field(description="The queue as JSON Lines (item, reason, confidence, entropy, votes).")
    csv_uri: str | None = Field(default=None, description="The same queue as CSV.")
    digest: str = Field(
        pattern=DIGEST_PATTERN, description="sha256 of the JSON Lines file, written sha256:<64 hex digits>."
    )
    items: int = Field(ge=0, description="Items in the queue.")


class LabelCard(ArtifactRef):
    """The label card: guidelines, annotators, agreement, gold accuracy, adjudication."""

    markdown_uri: str | None = Field(default=None, description="The same card as Markdown.")


class LabelJobStatus(BaseStatus):
    """Observed state of a LabelJob: the agreement and the labelled dataset version."""

    agreement: Agreement | None = Field(default=None, description="The figure the gate used.")
    agreement_figures: AgreementFigures | None = Field(
        default=None, description="Every agreement figure: Cohen (pairs), Fleiss, Krippendorff, overall and per label."
    )
    annotators: list[str] = Field(
        default_factory=list, description="Distinct annotators found in the annotations."
    )
    excluded_annotators: list[str] = Field(
        default_factory=list, description="Annotators excluded by the gold set (see gold.annotators for why)."
    )
    items: int | None = Field(default=None, ge=0, description="Number of items annotated.")
    ties: int | None = Field(
        default=None, ge=0, description="Items whose vote was tied: not published, never guessed; in the review queue."
    )
    guidelines: GuidelinesStatus | None = Field(default=None, description="The guidelines recorded.")
    gold: GoldStatus | None = Field(default=None, description="The gold set and accuracy per annotator.")
    adjudication: Adjudication | None = Field(default=None, description="Adjudication method and counts.")
    review_queue: ReviewQueue | None = Field(default=None, description="Ties and low-confidence items for review.")
    label_card: LabelCard | None = Field(default=None, description="The label card (JSON; Markdown beside it).")
    dataset_version: str | None = Field(
        default=None, description="The Dataset version (sha256 manifest digest) these labels were made for."
    )
    version: str | None = Field(
        default=None,
        description="sha256 of the labelled version (set only when the agreement gate passed).",
    )
    classes: list[str] = Field(
        default_factory=list, description="The label classes, sorted."
    )
    splits: Splits | None = Field(
        default=None, description="The labelled train, validation and test splits."
    )
