"""The registry of Loom kinds: names, models, printer columns; parse and dump helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .. import GROUP, VERSION
from .common import PATTERN_NAMES
from .dataset import DatasetSpec, DatasetStatus
from .deployment import DeploymentSpec, DeploymentStatus
from .evaluation import EvaluationSpec, EvaluationStatus
from .labeljob import LabelJobSpec, LabelJobStatus
from .trainingrun import TrainingRunSpec, TrainingRunStatus


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD."""

    name: str
    type: str  # string, integer, number, boolean, date
    json_path: str
    description: str = ""
    priority: int = 0  # 0: shown by kubectl get; 1: only with -o wide

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


PHASE = PrinterColumn("Phase", "string", ".status.phase", "One-word summary of the state.")
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class KindInfo:
    """Everything the operator and crdgen need to know about one kind."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...]
    description: str
    categories: tuple[str, ...] = ("loom",)
    group: str = GROUP
    version: str = VERSION

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, e.g. ``datasets.loom.dev``."""
        return f"{self.plural}.{self.group}"

KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo(
            kind="Dataset",
            plural="datasets",
            singular="dataset",
            short_names=("lds",),
            spec_model=DatasetSpec,
            status_model=DatasetStatus,
            description=(
                "A Dataset ingests CSV, JSON Lines or Parquet sources from object storage or "
                "HTTP(S), records their sha256 digests and provenance, checks a declared schema, "
                "and publishes a leakage-checked train/validation/test split (random, stratified, "
                "group or time; the test split frozen) as a content-addressed version with a data card."
            ),
            printer_columns=(
                PHASE,
                PrinterColumn("Rows", "integer", ".status.rows", "Rows ingested."),
                PrinterColumn("Version", "string", ".status.version", "Content version (sha256)."),
                AGE,
            ),
        ),
        KindInfo(
            kind="LabelJob",
            plural="labeljobs",
            singular="labeljob",
            short_names=("llj",),
            spec_model=LabelJobSpec,
            status_model=LabelJobStatus,
            description=(
                "A LabelJob measures inter-annotator agreement on a Dataset's items, "
                "adjudicates one label per item, and publishes labelled splits only when "
                "agreement reaches minAgreement."
            ),
            printer_columns=(
                PHASE,
                PrinterColumn(
                    "Agreement", "number", ".status.agreement.value", "Inter-annotator agreement."
                ),
                PrinterColumn("Items", "integer", ".status.items", "Items annotated."),
                PrinterColumn(
                    "Version", "string", ".status.version", "Labelled version (sha256).", 1
                ),
                AGE,
            ),
        ),
        KindInfo(
            kind="TrainingRun",
            plural="trainingruns",
            singular="trainingrun",
            short_names=("ltr",),
            spec_model=TrainingRunSpec,
            status_model=TrainingRunStatus,
            description=(
                "A TrainingRun trains a model on a LabelJob's splits in a PyTorchJob "
                "(DDP, CPU or GPU) and exports it to ONNX, content-addressed."
            ),
            printer_columns=(
                PHASE,
                PrinterColumn(
                    "Workers", "integer", ".status.worldSize", "Training processes that ran."
                ),
                PrinterColumn(
                    "Val-Accuracy",
                    "number",
                    ".status.metrics.val_accuracy",
                    "Accuracy on the validation split.",
                ),
                PrinterColumn("Model", "string", ".status.model.digest", "ONNX model digest.", 1),
                AGE,
            ),
        ),
        KindInfo(
            kind="Evaluation",
            plural="evaluations",
            singular="evaluation",
            short_names=("lev",),
            spec_model=EvaluationSpec,
            status_model=EvaluationStatus,
            description=(
                "An Evaluation scores a TrainingRun's model on the frozen test split and "
                "passes only when every threshold holds."
            ),
            printer_columns=(
                PHASE,
                PrinterColumn(
                    "Accuracy", "number", ".status.metrics.accuracy", "Accuracy on the test split."
                ),
                PrinterColumn(
                    "F1", "number", ".status.metrics.f1_macro", "Macro F1 on the test split."
                ),
                PrinterColumn("Model", "string", ".status.model.digest", "Model digest.", 1),
                AGE,
            ),
        ),
        KindInfo(
            kind="Deployment",
            plural="deployments",
            singular="deployment",
            short_names=("ldep",),
            spec_model=DeploymentSpec,
            status_model=DeploymentStatus,
            description=(
                "A Loom Deployment (deployments.loom.dev, short name ldep; not apps/v1) "
                "serves an evaluated model with a KServe InferenceService, rolls new models "
                "out as a canary and rolls them back automatically when analysis fails."
            ),
            printer_columns=(
                PHASE,
                PrinterColumn("Model", "string", ".status.model.digest", "Serving model digest."),
                PrinterColumn(
                    "Canary", "integer", ".status.trafficPercent", "Traffic % on the canary."
                ),
                PrinterColumn("URL", "string", ".status.url", "InferenceService URL.", 1),
                AGE,
            ),
        ),
    )
}

_LOOKUP: dict[str, KindInfo] = {}
for _info in KINDS.values():
    for _key in (_info.kind, _info.plural, _info.singular, _info.crd_name, *_info.short_names):
        _LOOKUP[_key.lower()] = _info


def kind_info(kind: str) -> KindInfo:
    """Find a kind by its name, plural, singular, short name or CRD name (any case)."""
    try:
        return _LOOKUP[kind.lower()]
    except KeyError:
        raise KeyError(f"unknown Loom kind {kind!r}; known: {', '.join(KINDS)}") from None


class SpecError(ValueError):
    """A spec that does not validate. ``str(err)`` names every offending field,
    e.g. ``spec.split: train + validation + test must sum to 1 (got 1.1)``;
    ``fields`` lists the paths (``spec.sources[0].uri``)."""

    def __init__(self, kind: str, problems: list[tuple[str, str]]):
        self.kind = kind
        self.problems = problems
        self.fields = [path for path, _ in problems]
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


def _path(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("value_error", "assertion_error"):
        return msg
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        msg = f"must be {PATTERN_NAMES.get(pattern, f'a string matching {pattern}')}"
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        if len(text) > 80:
            text = text[:77] + "..."
        return f"{msg[:1].lower()}{msg[1:]} (got {text})"
    return f"{msg[:1].lower()}{msg[1:]}"


def parse_spec(kind: str, data: dict[str, Any] | None) -> BaseModel:
    """Validate ``data`` (the ``spec`` of an object, camelCase) as the spec of ``kind``.

    Raises :class:`SpecError` (a ``ValueError``) whose message names each field,
    suitable for the ``message`` of a ``Failed`` condition (reason ``InvalidSpec``).
    """
    info = kind_info(kind)
    try:
        return info.spec_model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = [
            (_path("spec", tuple(e.get("loc", ()))), _message(e))
            for e in exc.errors(include_url=False)
        ]
        raise SpecError(info.kind, problems) from None


def parse_status(kind: str, data: dict[str, Any] | None) -> BaseModel:
    """Read a status dict (camelCase) into the status model of ``kind``."""
    return kind_info(kind).status_model.model_validate(data or {})


def status_dict(model: BaseModel) -> dict[str, Any]:
    """Dump a status (or any Loom model) as JSON-ready camelCase, without None values."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")

