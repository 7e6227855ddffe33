"""Dataset: ingest CSV, JSON Lines or Parquet sources from object storage or HTTP(S),
hash them, check them against a declared schema, split them without leakage."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pydantic import field_validator

from .common import (
    DIGEST_PATTERN,
    ArtifactRef,
    BaseStatus,
    CelRule,
    LoomModel,
    ObjectReference,
    S3Source,
    S3Uri,
    SplitRef,
    Splits,
    StatusModel,
)

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


#: A Dataset source may also be an HTTP(S) URL (LabelJob annotations stay s3:// only).
DATASET_URI_RULE = CelRule(
    rule="self.uri.startsWith('s3://') || self.uri.startsWith('https://') || self.uri.startsWith('http://')",
    message="uri must start with s3:// (an object or a prefix), https:// or http:// (one object)",
    field_path=".uri",
)
URI_SCHEMES = ("s3://", "https://", "http://")


class DatasetSource(S3Source):
    """One input of the dataset: an object, every object under an S3 prefix, or an HTTP(S) URL."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (DATASET_URI_RULE,)

    uri: S3Uri = Field(
        description=(
            "s3://bucket/key for one object, s3://bucket/prefix/ (trailing slash) for every object "
            "under the prefix (read with the namespace's S3 credentials), or an https:// (or http://) "
            "URL of one file."
        ),
    )
    format: Literal["csv", "jsonl", "parquet"] = Field(
        default="csv",
        description=(
            "File format of the source: csv (with a header row), jsonl (one JSON object per line) "
            "or parquet."
        ),
    )
    provenance: Provenance = Field(
        description="Ownership, license and consent of this source; recorded in lineage."
    )

    @field_validator("uri")
    @classmethod
    def _s3_uri(cls, value: str) -> str:  # replaces S3Source's check: URLs are allowed here
        if not value.startswith(URI_SCHEMES):
            raise ValueError(f"must start with s3://, https:// or http:// (got {value!r})")
        return value


class ColumnSchema(LoomModel):
    """One declared column, checked at ingest."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="!(has(self.min) && has(self.max)) || self.min <= self.max",
            message="min must not exceed max",
        ),
        CelRule(
            rule="(!has(self.min) && !has(self.max)) || self.type == 'integer' || self.type == 'number'",
            message="min and max apply only to integer and number columns",
        ),
    )

    column: str = Field(min_length=1, max_length=253, description="Column name, as in the source header.")
    type: Literal["string", "integer", "number", "boolean", "timestamp"] = Field(
        default="string",
        description=(
            "Type every present value must have: string, integer, number, boolean "
            "(true/false/1/0/yes/no) or timestamp (ISO 8601)."
        ),
    )
    nullable: bool = Field(default=True, description="Whether empty values are allowed.")
    min: float | None = Field(default=None, description="Smallest allowed value (integer and number columns).")
    max: float | None = Field(default=None, description="Largest allowed value (integer and number columns).")
    allowed_values: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="The only values allowed (written as strings), e.g. [setosa, versicolor, virginica].",
    )

    @model_validator(mode="after")
    def _bounds(self) -> "ColumnSchema":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must not exceed max (got min {self.min:g}, max {self.max:g})")
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "number"):
            raise ValueError(f"min and max apply only to integer and number columns (type is {self.type})")
        return self


class TimeCutoffs(LoomModel):
    """Where a time split cuts: train < validation <= validation rows < test <= test rows."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="timestamp(self.validation) < timestamp(self.test)",
            message="cutoffs.validation must be before cutoffs.test",
        ),
    )

    validation: datetime = Field(description="First instant of the validation period (RFC 3339).")
    test: datetime = Field(description="First instant of the test period (RFC 3339).")

    @model_validator(mode="after")
    def _ordered(self) -> "TimeCutoffs":
        if not self.validation < self.test:
            raise ValueError("cutoffs.validation must be before cutoffs.test")
        return self


#: The split may not change once the Dataset exists (the test split is frozen).
SPLIT_IMMUTABLE_RULE = CelRule(
    rule="self == oldSelf",
    message=(
        "split is immutable: the test split is frozen once the Dataset exists; create a new Dataset "
        "(split.frozenTestFrom keeps this one's test split)"
    ),
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
        CelRule(
            rule="self.strategy != 'group' || has(self.groupColumn)",
            message="groupColumn is required for strategy group",
        ),
        CelRule(
            rule="self.strategy != 'time' || (has(self.timeColumn) && has(self.cutoffs))",
            message="timeColumn and cutoffs are required for strategy time",
        ),
        SPLIT_IMMUTABLE_RULE,
    )

    strategy: Literal["random", "stratified", "group", "time"] = Field(
        default="random",
        description=(
            "How rows are assigned: random (seeded shuffle), stratified (seeded, keeping the "
            "labelColumn's class mix in every split), group (whole entities of groupColumn per "
            "split: no entity in two splits), time (forward-chaining by timeColumn at cutoffs)."
        ),
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
            "train + validation + test must equal 1. Ignored by the time strategy."
        ),
    )
    group_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Entity key of the group strategy (e.g. patient_id): all rows of an entity share a split.",
    )
    time_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Timestamp column (ISO 8601) of the time strategy.",
    )
    cutoffs: TimeCutoffs | None = Field(
        default=None, description="Where the time strategy cuts train, validation and test."
    )
    frozen_test_from: ObjectReference | None = Field(
        default=None,
        description=(
            "Keep the frozen test split of another Ready Dataset in this namespace: the same file and "
            "digest; its rows (by row hash; for group splits its entities, for time splits its period) "
            "are kept out of train and validation."
        ),
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "SplitSpec":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > SPLIT_SUM_TOLERANCE:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        if self.strategy == "group" and not self.group_column:
            raise ValueError("groupColumn is required for strategy group")
        if self.strategy == "time" and not (self.time_column and self.cutoffs):
            raise ValueError("timeColumn and cutoffs are required for strategy time")
        return self


class DriftSpec(LoomModel):
    """When a new version counts as drifted from its baseline."""

    baseline_from: ObjectReference | None = Field(
        default=None,
        description=(
            "Compare against this Dataset's Ready version. Default: the previous Ready version of "
            "this Dataset (none for the first version)."
        ),
    )
    max_psi: float = Field(default=0.2, ge=0, description="Population stability index above which a column drifts.")
    max_ks: float = Field(
        default=0.2, ge=0, le=1, description="Kolmogorov-Smirnov statistic above which a number column drifts."
    )
    max_jensen_shannon: float = Field(
        default=0.1, ge=0, le=1,
        description="Jensen-Shannon distance (base 2) above which a category column drifts.",
    )
    min_p_value: float | None = Field(
        default=None, ge=0, le=1,
        description="Optional: a KS or chi-square p-value below this also counts as drift.",
    )
    fail_on_drift: bool = Field(
        default=False,
        description="Fail the ingest (reason DriftDetected) instead of only setting the DriftDetected condition.",
    )


class DatasetSpec(LoomModel):
    """Desired state of a Dataset: its sources, columns and split."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.split.strategy != 'stratified' || has(self.labelColumn)",
            message="split.strategy stratified needs labelColumn",
        ),
    )

    sources: list[DatasetSource] = Field(
        min_length=1,
        max_length=100,
        description=(
            "Sources (CSV, JSON Lines or Parquet), concatenated in order. All must share the same columns. "
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
        description="How rows are divided into train, validation and test splits. Immutable.",
    )
    data_schema: list[ColumnSchema] = Field(
        default_factory=list,
        alias="schema",
        max_length=500,
        description=(
            "Declared columns, checked at ingest: a violation fails the Dataset with reason "
            "SchemaViolation (or MissingColumn) and a message naming the column."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["column"]},
    )
    deduplicate: bool = Field(
        default=True, description="Remove exact duplicate rows (same row hash) and report how many."
    )
    drift: DriftSpec = Field(
        default_factory=DriftSpec, description="Drift thresholds against the baseline version."
    )

    @model_validator(mode="after")
    def _stratified_needs_a_label(self) -> "DatasetSpec":
        if self.split.strategy == "stratified" and not self.label_column:
            raise ValueError("split.strategy stratified needs labelColumn")
        return self


class FrozenTest(SplitRef):
    """The test split that stays fixed for this Dataset and any Dataset that reuses it."""

    from_: str | None = Field(
        default=None, alias="from", description="The Dataset whose ingest first produced this test split."
    )


class LeakageSummary(StatusModel):
    """What two splits share; zero for group and time splits."""

    entity_column: str | None = Field(default=None, description="Column used as the entity key.")
    entity_overlap: int = Field(default=0, ge=0, description="Entities found in more than one split.")
    row_overlap: int = Field(default=0, ge=0, description="Identical rows (by row hash) found in more than one split.")
    time_order_violations: int | None = Field(
        default=None, ge=0, description="Time split: split pairs whose periods overlap."
    )


class DriftSummary(StatusModel):
    """Summary of the drift report (figures per column are in the data report and card)."""

    baseline_version: str | None = Field(default=None, description="The version compared against.")
    detected: bool = Field(default=False, description="Whether any column crossed a threshold of spec.drift.")
    drifted_columns: list[str] = Field(default_factory=list, description="Columns that crossed a threshold.")
    max_psi: float | None = Field(default=None, description="The largest population stability index of any column.")
    message: str | None = Field(default=None, description="The columns and figures that crossed.")


class DataCardRef(ArtifactRef):
    """The data card: JSON at uri, Markdown at markdownUri."""

    markdown_uri: str | None = Field(default=None, description="The Markdown rendering of the card.")
    markdown_digest: str | None = Field(default=None, pattern=DIGEST_PATTERN, description="sha256 of the Markdown.")


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
    rows_read: int | None = Field(default=None, ge=0, description="Rows read from the sources, before duplicates were removed.")
    duplicates_removed: int | None = Field(default=None, ge=0, description="Exact duplicate rows removed (by row hash).")
    excluded_rows: int | None = Field(
        default=None, ge=0, description="Rows kept out of train and validation because they belong to the frozen test split."
    )
    nulls: int | None = Field(default=None, ge=0, description="Empty cells in the published rows.")
    ready_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation whose ingest produced version."
    )
    previous_version: str | None = Field(
        default=None, pattern=DIGEST_PATTERN,
        description="The Ready version before this one (the default drift baseline).",
    )
    split_digest: str | None = Field(
        default=None, pattern=DIGEST_PATTERN,
        description="sha256 of spec.split as the frozen test split was made with (the split may not change).",
    )
    frozen_test: FrozenTest | None = Field(
        default=None, description="The frozen test split: fixed once Ready; later Datasets may reuse it."
    )
    leakage: LeakageSummary | None = Field(default=None, description="Overlap between the splits.")
    drift: DriftSummary | None = Field(default=None, description="Drift against the baseline version.")
    report: ArtifactRef | None = Field(default=None, description="The data report (JSON): statistics per column.")
    data_card: DataCardRef | None = Field(default=None, description="The data card, JSON and Markdown.")
