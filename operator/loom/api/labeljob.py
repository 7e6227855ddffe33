"""LabelJob: measure annotator agreement, adjudicate, publish labelled splits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import (
    BaseStatus,
    LoomModel,
    ObjectReference,
    S3Source,
    S3Uri,
    Splits,
    StatusModel,
)


class AnnotationSource(S3Source):
    """A file of annotations: CSV with columns item, annotator, label."""

    uri: S3Uri = Field(
        description=(
            "s3://bucket/key.csv, or s3://bucket/prefix/ for every object under the prefix. "
            "Columns: item (the dataset's id column), annotator, label."
        ),
    )
    format: Literal["csv"] = Field(
        default="csv", description="File format of the annotations. Only csv (with a header row)."
    )


class LabelJobSpec(LoomModel):
    """Desired state of a LabelJob: which dataset, which annotations, which quality bar."""

    dataset_ref: ObjectReference = Field(
        description="The Dataset whose rows are labelled, in the same namespace."
    )
    annotations: list[AnnotationSource] = Field(
        min_length=1,
        max_length=100,
        description="Annotation files, concatenated. Each row is one annotator's label for one item.",
    )
    label_column: str = Field(
        default="label",
        min_length=1,
        max_length=253,
        description="Name of the label column written into the published splits.",
    )
    agreement_metric: Literal["auto", "cohen", "fleiss"] = Field(
        default="auto",
        description=(
            "Inter-annotator agreement statistic: cohen (Cohen's kappa, exactly 2 annotators), "
            "fleiss (Fleiss' kappa, 2 or more), or auto (cohen for 2 annotators, else fleiss)."
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
    adjudication: Literal["majority"] = Field(
        default="majority",
        description="How one label is chosen per item: majority vote (ties are counted in status).",
    )


class Agreement(StatusModel):
    """The measured inter-annotator agreement."""

    metric: str = Field(description="Statistic used: cohen_kappa or fleiss_kappa.")
    value: float = Field(description="Its value: 1 is perfect agreement, 0 is chance.")


class LabelJobStatus(BaseStatus):
    """Observed state of a LabelJob: the agreement and the labelled dataset version."""

    agreement: Agreement | None = Field(default=None, description="Measured agreement.")
    annotators: list[str] = Field(
        default_factory=list, description="Distinct annotators found in the annotations."
    )
    items: int | None = Field(default=None, ge=0, description="Number of items annotated.")
    ties: int | None = Field(
        default=None, ge=0, description="Items whose majority vote was tied: dropped from the labelled data, never guessed."
    )
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
