"""Dataset: ingest CSV sources from object storage, hash them, split them."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .common import BaseStatus, CelRule, LoomModel, S3Source, S3Uri, Splits

#: Tolerance on the sum of the split fractions.
SPLIT_SUM_TOLERANCE = 1e-6


class Provenance(LoomModel):
    """Where the data came from and on what terms it may be used."""

    owner: str = Field(
        min_length=1,
        max_length=253,
        description="Team or person accountable for the data, e.g. data-platform.",
    )
    license: str = Field(
        min_length=1,
        max_length=253,
        description="License the data is used under, preferably an SPDX id, e.g. CC-BY-4.0.",
    )
    consent: str = Field(
        min_length=1,
        max_length=1024,
        description=(
            "Basis on which the data may be used for training, e.g. "
            "public-domain-dataset, user-opt-in, contract-1234."
        ),
    )
    collected_at: datetime = Field(
        description="When the data was collected (RFC 3339), e.g. 2024-01-31T00:00:00Z."
    )
    description: str | None = Field(
        default=None,
        max_length=4096,
        description="Free text: what the data is, how it was gathered, known caveats.",
    )


class DatasetSource(S3Source):
    """One input of the dataset: a CSV object, or every CSV object under a prefix."""

    uri: S3Uri = Field(
        description=(
            "s3://bucket/key.csv for one object, or s3://bucket/prefix/ (trailing slash) "
            "for every object under the prefix. Read with the namespace's S3 credentials."
        ),
    )
    format: Literal["csv"] = Field(
        default="csv", description="File format of the source. Only csv (with a header row)."
    )
    provenance: Provenance = Field(
        description="Ownership, license and consent of this source; recorded in lineage."
    )


class SplitSpec(LoomModel):
    """How rows are assigned to the train, validation and test splits."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule=(
                f"self.train + self.validation + self.test >= {1 - SPLIT_SUM_TOLERANCE:.12g} && "
                f"self.train + self.validation + self.test <= {1 + SPLIT_SUM_TOLERANCE:.12g}"
            ),
            message="train + validation + test must sum to 1",
        ),
    )

    strategy: Literal["random"] = Field(
        default="random",
        description="How rows are assigned: random (seeded shuffle, reproducible).",
    )
    seed: int = Field(
        default=42,
        ge=0,
        le=2**31 - 1,
        description="Seed of the shuffle; the same data and seed always give the same splits.",
    )
    train: float = Field(
        default=0.7, gt=0, lt=1, description="Fraction of rows in the train split (0 < x < 1)."
    )
    validation: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Fraction of rows in the validation split (0 < x < 1).",
    )
    test: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description=(
            "Fraction of rows in the test split (0 < x < 1), held out for Evaluation. "
            "train + validation + test must equal 1."
        ),
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "SplitSpec":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > SPLIT_SUM_TOLERANCE:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        return self


class DatasetSpec(LoomModel):
    """Desired state of a Dataset: its sources, columns and split."""

    sources: list[DatasetSource] = Field(
        min_length=1,
        max_length=100,
        description=(
            "CSV sources, concatenated in order. All must share the same columns. "
            "The dataset version is the sha256 of the manifest of their digests."
        ),
    )
    id_column: str = Field(
        default="id",
        min_length=1,
        max_length=253,
        description="Column holding a unique row id; LabelJob annotations refer to it as item.",
    )
    label_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=(
            "Column holding a label already present in the data, if any. "
            "Leave unset when labels come from a LabelJob."
        ),
    )
    split: SplitSpec = Field(
        default_factory=SplitSpec,
        description="How rows are divided into train, validation and test splits.",
    )


class DatasetStatus(BaseStatus):
    """Observed state of a Dataset: the version that was ingested and its splits."""

    version: str | None = Field(
        default=None,
        description="Content version: sha256 of the manifest of all source digests and splits.",
    )
    rows: int | None = Field(default=None, ge=0, description="Number of data rows ingested.")
    columns: list[str] = Field(
        default_factory=list, description="Column names, in the order of the source header."
    )
    manifest_uri: str | None = Field(
        default=None, description="Location of manifest.json describing this version."
    )
    splits: Splits | None = Field(
        default=None, description="The published train, validation and test splits."
    )
