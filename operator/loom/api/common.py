"""Parts shared by every Loom kind: base models, references, conditions, status.

Conventions (see docs/internals.md, "The API"):

* attributes are snake_case, the YAML/JSON names are camelCase aliases;
* every field carries a ``description`` (it becomes ``kubectl explain`` text);
* cross-field rules are written once, in CEL, on the model that owns them
  (``cel_rules``), and mirrored in Python by a validator on the same model so
  that ``parse_spec`` refuses what the API server would refuse. ``crdgen`` puts
  the CEL rules into the CRD as ``x-kubernetes-validations``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from typing_extensions import Annotated

# --------------------------------------------------------------------------
# CEL rules


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry.

    ``rule`` is evaluated by the API server with ``self`` bound to the object
    of the model that declares it. ``field_path`` (optional, JSONPath relative
    to that object, e.g. ``.uri``) tells the API server which field to blame.
    """

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def _schema_extra(schema: dict[str, Any], cls: type) -> None:
    rules = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_schema() for r in rules]


class LoomModel(BaseModel):
    """Base of every spec part: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_schema_extra,
    )

    #: CEL rules for this object (``self`` is an instance of this model).
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


class StatusModel(BaseModel):
    """Base of every status part: camelCase aliases, tolerant of unknown and
    numeric-for-string input (status is written by the operator from workload
    results, and read back from older versions)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        coerce_numbers_to_str=True,
        json_schema_extra=_schema_extra,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


# --------------------------------------------------------------------------
# Reusable field types

#: A DNS-1123 subdomain: the name of a Kubernetes object.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A DNS-1123 label: a namespace name.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: ``sha256:`` followed by 64 lowercase hex digits.
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
#: A Kubernetes resource quantity (as in core/v1 ResourceRequirements).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: Human names of the patterns above, for error messages.
PATTERN_NAMES = {
    DNS_SUBDOMAIN: "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
    DNS_LABEL: "a DNS-1123 label (lowercase letters, digits and '-')",
    DIGEST_PATTERN: "sha256:<64 lowercase hex digits>",
    QUANTITY_PATTERN: 'a Kubernetes quantity, e.g. "500m", "2", "1Gi"',
}
#: Longest object-storage URI accepted (keeps CEL cost estimates bounded).
MAX_URI_LENGTH = 1024

#: CEL rule for every user-supplied source URI.
S3_URI_RULE = CelRule(
    rule="self.uri.startsWith('s3://')",
    message="uri must start with s3:// (an object or a prefix in S3-compatible storage)",
    field_path=".uri",
)


def _quantity_to_str(value: Any) -> Any:
    """An integer quantity (``cpu: 2``) becomes its string; a float is refused,
    because the CRD (int-or-string) refuses it too."""
    if isinstance(value, bool):
        return value  # not a quantity: refused as "a valid string"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(
            f'a fractional quantity must be written as a string, e.g. "{value:g}" or "500m" '
            f"(got {value!r})"
        )
    return value


#: A resource quantity written as a string ("500m", "2Gi") or an integer (2).
#: In the CRD it is ``x-kubernetes-int-or-string`` with the quantity pattern.
#: (The pattern sits on the str schema, before the validator wraps it, so that
#: pydantic writes it into the JSON schema itself.)
Quantity = Annotated[
    Annotated[str, Field(pattern=QUANTITY_PATTERN)],
    BeforeValidator(_quantity_to_str),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def check_s3_uri(uri: str) -> str:
    """Python mirror of :data:`S3_URI_RULE`."""
    if not uri.startswith("s3://"):
        raise ValueError(f"must start with s3:// (got {uri!r})")
    return uri


#: The bounds of every user-supplied source URI (subclasses describe it).
S3Uri = Annotated[str, Field(min_length=6, max_length=MAX_URI_LENGTH)]


class S3Source(LoomModel):
    """A CSV input in object storage: one object, or every object under a prefix.

    Subclasses redeclare ``uri`` and ``format`` only to describe them; the bounds
    (:data:`S3Uri`), the CEL rule and its Python mirror are declared here once.
    """

    cel_rules: ClassVar[tuple[CelRule, ...]] = (S3_URI_RULE,)

    uri: S3Uri = Field(
        description=(
            "s3://bucket/key.csv for one object, or s3://bucket/prefix/ (trailing slash) "
            "for every object under the prefix."
        )
    )
    format: Literal["csv"] = Field(default="csv", description="File format. Only csv (with a header row).")

    @field_validator("uri")
    @classmethod
    def _s3_uri(cls, value: str) -> str:
        return check_s3_uri(value)


# --------------------------------------------------------------------------
# References


class ObjectReference(LoomModel):
    """A reference to another Loom object, by name, in the referrer's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the referenced object (metadata.name).",
    )
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description=(
            "Namespace of the referenced object. Optional: when set it must equal the "
            "namespace of the referring object; cross-namespace references are refused "
            "with reason CrossNamespaceReference."
        ),
    )


class ArtifactRef(StatusModel):
    """A content-addressed object in object storage."""

    uri: str = Field(description="Location of the artifact, s3://bucket/key.")
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256 of the artifact's bytes, written sha256:<64 hex digits>.",
    )


class SplitRef(StatusModel):
    """A published data split: a CSV file with a header row."""

    uri: str = Field(description="Location of the split's CSV file, s3://bucket/key.")
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256 of the CSV file's bytes, written sha256:<64 hex digits>.",
    )
    rows: int = Field(ge=0, description="Number of data rows in the split (header excluded).")


class Splits(StatusModel):
    """The train, validation and test splits of a dataset version."""

    train: SplitRef | None = Field(default=None, description="Rows used to fit the model.")
    validation: SplitRef | None = Field(
        default=None, description="Rows used to monitor training (early stopping, val_accuracy)."
    )
    test: SplitRef | None = Field(
        default=None,
        description="Frozen rows held out for the Evaluation gate; never seen in training.",
    )


# --------------------------------------------------------------------------
# Status


class Condition(StatusModel):
    """An observation of one aspect of the object's state (Kubernetes API conventions)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description=(
            "Condition type in CamelCase, e.g. Ready, Succeeded, Failed, Progressing. "
            "Unique within the list."
        ),
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="Whether the condition holds: True, False or Unknown."
    )
    reason: str = Field(
        default="",
        max_length=1024,
        description=(
            "Machine-readable CamelCase reason for the last transition, "
            "e.g. AgreementBelowThreshold, CrossNamespaceReference."
        ),
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition. Never a traceback.",
    )
    last_transition_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the status last changed (RFC 3339, UTC).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object this condition was computed from.",
    )


class BaseStatus(StatusModel):
    """The part of status common to every Loom kind."""

    phase: str | None = Field(
        default=None,
        description=(
            "One-word summary for humans, e.g. Pending, Running, Succeeded, Failed. "
            "Automation should read conditions instead."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Latest observations of the object's state, one per type "
            "(Ready, Succeeded, Failed, Progressing, ...), for machines."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec the operator last acted on.",
    )
