"""The CRDs: generated from loom.api, committed, structural, CEL rules that work."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import celpy
import pydantic
import pytest
import yaml

from loom.api import KINDS, parse_spec, status_dict
from loom.api import crdgen
from loom.api.common import DIGEST_PATTERN, LoomModel, StatusModel
from loom.api.dataset import DATASET_URI_RULE, SPLIT_IMMUTABLE_RULE, SPLIT_SUM_TOLERANCE, SplitSpec
from loom.api.deployment import AnalysisMetric, CanarySpec, ThresholdRange
from loom.api.evaluation import EvaluationSpec, Perturbation, SliceSpec, Threshold

from .examples import SPECS

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = [ROOT / "crds", ROOT / "charts" / "loom" / "crds"]

PROVENANCE = {
    "owner": "o",
    "license": "CC0-1.0",
    "consent": "c",
    "collectedAt": "2024-01-01T00:00:00Z",
}

#: a whole TrainingRun spec (defaults written out, as the API server applies them)
_TR = {"labelJobRef": {"name": "lj"}, "workers": 1, "resources": {"gpus": 0}, "imageHasCuda": False,
       "precision": "fp32"}

#: rule text -> (model that declares it, good objects, bad objects). Every CEL
#: rule in a CRD must appear here: a new rule needs examples before it ships.
CEL_EXAMPLES: dict[str, tuple[str, list[dict], list[dict]]] = {
    "self.uri.startsWith('s3://')": (
        "any",
        [{"uri": "s3://bucket/key.csv"}, {"uri": "s3://bucket/prefix/"}],
        [{"uri": "http://bucket/key.csv"}, {"uri": "/data/x.csv"}, {"uri": "S3://b/k"}],
    ),
    SplitSpec.cel_rules[0].rule: (
        "SplitSpec",
        [
            {"train": 0.7, "validation": 0.15, "test": 0.15},
            {"train": 0.8, "validation": 0.1, "test": 0.1},
            {"train": 0.6, "validation": 0.2, "test": 0.2},
            {"train": 0.7 + SPLIT_SUM_TOLERANCE / 2, "validation": 0.15, "test": 0.15},
            {"train": 0.7 - SPLIT_SUM_TOLERANCE / 2, "validation": 0.15, "test": 0.15},
        ],
        [
            {"train": 0.7, "validation": 0.2, "test": 0.2},
            {"train": 0.5, "validation": 0.1, "test": 0.1},
            {"train": 0.7 + SPLIT_SUM_TOLERANCE * 2, "validation": 0.15, "test": 0.15},
            {"train": 0.7 - SPLIT_SUM_TOLERANCE * 2, "validation": 0.15, "test": 0.15},
        ],
    ),
    "!has(self.minGoldAccuracy) || has(self.gold)": (
        "LabelJobSpec",
        [
            {"datasetRef": {"name": "d"}, "annotations": [{"uri": "s3://b/a.csv"}]},
            {"datasetRef": {"name": "d"}, "annotations": [{"uri": "s3://b/a.csv"}], "gold": {"uri": "s3://b/g.csv"},
             "minGoldAccuracy": 0.8},
        ],
        [{"datasetRef": {"name": "d"}, "annotations": [{"uri": "s3://b/a.csv"}], "minGoldAccuracy": 0.8}],
    ),
    "has(self.min) || has(self.max)": (
        "Threshold",
        [{"metric": "accuracy", "min": 0.8}, {"metric": "accuracy", "max": 0.9}],
        [{"metric": "accuracy"}],
    ),
    "!has(self.min) || !has(self.max) || self.min <= self.max": (
        "Threshold",
        [
            {"metric": "f1_macro", "min": 0.8},
            {"metric": "f1_macro", "min": 0.5, "max": 0.9},
            {"metric": "f1_macro", "min": 0.7, "max": 0.7},
        ],
        [{"metric": "f1_macro", "min": 0.9, "max": 0.5}],
    ),
    **{rule: ("TrainingRunSpec", good, bad) for rule, good, bad in (
        (
            "self.resources.gpus == 0 || self.imageHasCuda",
            [_TR, {**_TR, "resources": {"gpus": 1}, "image": "reg/loom-workload-cuda:1", "imageHasCuda": True}],
            [{**_TR, "resources": {"gpus": 1}, "image": "reg/loom-workload:1"}],
        ),
        (
            "!self.imageHasCuda || has(self.image)",
            [_TR, {**_TR, "image": "reg/cuda:1", "imageHasCuda": True}],
            [{**_TR, "imageHasCuda": True}],
        ),
        (
            "self.precision != 'fp16' || self.resources.gpus > 0",
            [{**_TR, "precision": "bf16"},
             {**_TR, "precision": "fp16", "resources": {"gpus": 1}, "image": "reg/cuda:1", "imageHasCuda": True}],
            [{**_TR, "precision": "fp16"}],
        ),
        (
            "!has(self.minAvailable) || self.minAvailable <= 1 + self.workers",
            [_TR, {**_TR, "minAvailable": 2}],
            [{**_TR, "minAvailable": 3}],
        ),
    )},
    # Evaluation gates (issue 5): metric names, unit bounds, slices, perturbations.
    Threshold.cel_rules[0].rule: (
        "Threshold",
        [{"metric": "roc_auc", "min": 0.5}, {"metric": "latency_p99_ms", "max": 250},
         {"metric": "robustness.noise-1.f1_macro", "min": 0.5}],
        [{"metric": "auc", "min": 0.5}, {"metric": "robustness.noise.roc_auc", "min": 0.5},
         {"metric": "robustness..accuracy", "min": 0.5}, {"metric": "xaccuracy", "min": 0.5}],
    ),
    Threshold.cel_rules[3].rule: (
        "Threshold",
        [{"metric": "accuracy", "min": 1.0}, {"metric": "log_loss", "max": 2.5},
         {"metric": "throughput_rps", "min": 1000}],
        [{"metric": "accuracy", "min": 1.5}, {"metric": "ece", "max": 2},
         {"metric": "robustness.n.accuracy", "min": 3}],
    ),
    SliceSpec.cel_rules[0].rule: (
        "SliceSpec",
        [{"column": "species", "thresholds": [{"metric": "accuracy", "min": 0.5}]}, {"column": "a"}],
        [{"column": "species", "thresholds": [{"metric": "roc_auc", "min": 0.5}]}],
    ),
    Perturbation.cel_rules[0].rule: (
        "Perturbation",
        [{"name": "n", "type": "gaussianNoise", "sigma": 0.1}, {"name": "d", "type": "dropValues", "rate": 0.1}],
        [{"name": "n", "type": "gaussianNoise"}],
    ),
    Perturbation.cel_rules[1].rule: (
        "Perturbation",
        [{"name": "d", "type": "dropValues", "rate": 0.1}, {"name": "n", "type": "gaussianNoise", "sigma": 1}],
        [{"name": "d", "type": "dropValues", "fill": "zero"}],
    ),
    EvaluationSpec.cel_rules[0].rule: (
        "EvaluationSpec",
        [{"trainingRunRef": {"name": "t"}, "thresholds": [{"metric": "accuracy", "min": 0.5}]},
         {"trainingRunRef": {"name": "t"}, "thresholds": [{"metric": "robustness.noise.accuracy", "min": 0.5}],
          "robustness": [{"name": "noise", "type": "gaussianNoise", "sigma": 0.1}]}],
        [{"trainingRunRef": {"name": "t"}, "thresholds": [{"metric": "robustness.noise.accuracy", "min": 0.5}]},
         {"trainingRunRef": {"name": "t"}, "thresholds": [{"metric": "robustness.noise.accuracy", "min": 0.5}],
          "robustness": [{"name": "drop", "type": "dropValues", "rate": 0.1}]}],
    ),
    # Deployment progressive delivery (loom.api.deployment)
    CanarySpec.cel_rules[0].rule: (
        "CanarySpec",
        [{"steps": [10, 50]}, {"stepWeight": 10, "maxWeight": 50}, {}],
        [{"steps": [10, 50], "stepWeight": 10}, {"steps": [10], "maxWeight": 50}],
    ),
    CanarySpec.cel_rules[1].rule: (
        "CanarySpec",
        [{"stepWeight": 10, "maxWeight": 50}, {"stepWeight": 50, "maxWeight": 50}, {"stepWeight": 10}],
        [{"stepWeight": 60, "maxWeight": 50}],
    ),
    CanarySpec.cel_rules[2].rule: (
        "CanarySpec",
        [{"steps": [10]}, {"steps": [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]}, {}],
        [{"steps": [20, 10]}, {"steps": [10, 10]}, {"steps": [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]}],
    ),
    ThresholdRange.cel_rules[0].rule: ("ThresholdRange", [{"min": 1}, {"max": 2}, {"min": 0, "max": 0}], [{}]),
    ThresholdRange.cel_rules[1].rule: ("ThresholdRange", [{"min": 1, "max": 2}, {"min": 3}], [{"min": 2, "max": 1}]),
    AnalysisMetric.cel_rules[0].rule: (
        "AnalysisMetric",
        [{"name": "error-rate", "thresholdRange": {"max": 1}},
         {"name": "custom", "thresholdRange": {"max": 1}, "prometheus": {"address": "http://p:9090", "query": "up"}}],
        [{"name": "custom", "thresholdRange": {"max": 1}}],
    ),
}

#: The same rule on a second model, whose objects need other fields: (model, rule) -> (good, bad).
CEL_MODEL_EXAMPLES = {
    ("Guidelines", "self.uri.startsWith('s3://') || self.uri.startsWith('https://') || self.uri.startsWith('http://')"): (
        [{"uri": "s3://b/guidelines.md", "version": "v1"}, {"uri": "https://wiki.example/labels", "version": "3"}],
        [{"uri": "ftp://b/g.md", "version": "v1"}, {"uri": "/docs/g.md", "version": "v1"}],
    ),
}

_SRC = {"uri": "s3://b/k.csv", "provenance": PROVENANCE}
_CUTOFFS = {"validation": "2024-01-01T00:00:00Z", "test": "2024-06-01T00:00:00Z"}
CEL_EXAMPLES.update({
    DATASET_URI_RULE.rule: (
        "DatasetSource",
        [{"uri": "s3://bucket/key.csv"}, {"uri": "https://example.com/d.parquet"}, {"uri": "http://127.0.0.1:8000/d.jsonl"}],
        [{"uri": "ftp://x/y.csv"}, {"uri": "/data/x.csv"}, {"uri": "S3://b/k"}],
    ),
    "self.strategy != 'group' || has(self.groupColumn)": (
        "SplitSpec",
        [{"strategy": "group", "groupColumn": "patient"}, {"strategy": "random"}],
        [{"strategy": "group"}],
    ),
    "self.strategy != 'time' || (has(self.timeColumn) && has(self.cutoffs))": (
        "SplitSpec",
        [{"strategy": "time", "timeColumn": "ts", "cutoffs": _CUTOFFS}, {"strategy": "group", "groupColumn": "g"}],
        [{"strategy": "time", "timeColumn": "ts"}, {"strategy": "time", "cutoffs": _CUTOFFS}],
    ),
    "timestamp(self.validation) < timestamp(self.test)": (
        "TimeCutoffs",
        [_CUTOFFS],
        [{"validation": "2024-06-01T00:00:00Z", "test": "2024-06-01T00:00:00Z"},
         {"validation": "2024-06-01T00:00:00Z", "test": "2024-01-01T00:00:00Z"}],
    ),
    "!(has(self.min) && has(self.max)) || self.min <= self.max": (
        "ColumnSchema",
        [{"column": "a", "type": "number", "min": 0, "max": 1}, {"column": "a", "type": "integer", "min": 3},
         {"column": "a", "type": "number", "min": 1, "max": 1}],
        [{"column": "a", "type": "number", "min": 2, "max": 1}],
    ),
    "(!has(self.min) && !has(self.max)) || self.type == 'integer' || self.type == 'number'": (
        "ColumnSchema",
        [{"column": "a", "type": "integer", "max": 9}, {"column": "a", "type": "string"}],
        [{"column": "a", "type": "string", "max": 3}, {"column": "a", "type": "timestamp", "min": 0}],
    ),
    "self.split.strategy != 'stratified' || has(self.labelColumn)": (
        "DatasetSpec",
        [{"sources": [_SRC], "split": {"strategy": "stratified"}, "labelColumn": "species"},
         {"sources": [_SRC], "split": {"strategy": "random"}}],
        [{"sources": [_SRC], "split": {"strategy": "stratified"}}],
    ),
})

#: Transition rules (they read oldSelf, so only run on updates): rule -> (model, good (old, new), bad (old, new)).
#: Their Python mirror is in the planner (it has the old state), not in the model.
CEL_TRANSITION_EXAMPLES: dict[str, tuple[str, list[tuple[dict, dict]], list[tuple[dict, dict]]]] = {
    SPLIT_IMMUTABLE_RULE.rule: (
        "SplitSpec",
        [({"strategy": "random", "seed": 1, "train": 0.7, "validation": 0.15, "test": 0.15},
          {"strategy": "random", "seed": 1, "train": 0.7, "validation": 0.15, "test": 0.15}),
         ({"strategy": "group", "groupColumn": "g", "frozenTestFrom": {"name": "a"}},
          {"strategy": "group", "groupColumn": "g", "frozenTestFrom": {"name": "a"}})],
        [({"strategy": "random", "seed": 1}, {"strategy": "random", "seed": 2}),
         ({"strategy": "random", "train": 0.7, "validation": 0.15, "test": 0.15},
          {"strategy": "random", "train": 0.6, "validation": 0.25, "test": 0.15}),
         ({"strategy": "group", "groupColumn": "g"}, {"strategy": "group", "groupColumn": "h"}),
         ({"strategy": "random"}, {"strategy": "random", "frozenTestFrom": {"name": "a"}})],
    ),
}


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return docs[0]


def crds() -> dict[str, dict]:
    return {info.kind: load(ROOT / "crds" / crdgen.filename(info)) for info in KINDS.values()}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every schema node, with a readable path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}[*]")
    for i, sub in enumerate(node.get("anyOf") or []):
        yield from walk(sub, f"{path}<anyOf{i}>")


def schema_of(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# ---------------------------------------------------------------- generated


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crds_equal_generated(directory: Path) -> None:
    """crds/ and the chart's crds/ each hold exactly the generated files (so they are equal)."""
    expected = {crdgen.filename(info) for info in KINDS.values()}
    assert {p.name for p in directory.glob("*.yaml")} == expected == set(crdgen.generate())
    problems = crdgen.check(directory)
    assert not problems, (
        "CRDs differ from the models; run `python -m loom.api.crdgen crds/ charts/loom/crds/`\n"
        + "".join(problems)
    )


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_generation_is_deterministic(tmp_path: Path, hash_seed: str) -> None:
    """Another interpreter, with another hash seed (set and dict order), writes the same bytes."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run(
        [sys.executable, "-m", "loom.api.crdgen", str(tmp_path)], check=True, env=env, capture_output=True
    )
    written = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    assert written == crdgen.generate()


def test_check_cli_reports_a_difference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert crdgen.main([str(tmp_path)]) == 0
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    target = tmp_path / "loom.dev_datasets.yaml"
    target.write_text(target.read_text().replace("lds", "xds"))
    capsys.readouterr()
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-    - xds" in out and "+    - lds" in out
    (tmp_path / "loom.dev_stale.yaml").write_text("---\n")
    assert crdgen.main([str(tmp_path)]) == 0
    assert not (tmp_path / "loom.dev_stale.yaml").exists()
    assert crdgen.main(["--check", str(tmp_path)]) == 0


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("kind", list(KINDS))
def test_names_and_columns(kind: str) -> None:
    info = KINDS[kind]
    crd = crds()[kind]
    assert crd["metadata"]["name"] == f"{info.plural}.loom.dev"
    spec = crd["spec"]
    assert spec["group"] == "loom.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["categories"] == ["loom"]
    assert spec["names"]["shortNames"] == list(info.short_names)
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert columns[0]["jsonPath"] == ".status.phase"
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    schema = schema_of(crd)
    for column in columns[:-1]:
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            props = node.get("properties") or {}
            node = props[part] if part in props else node.get("additionalProperties")
            assert node, f"{kind}: printer column {column['name']} points nowhere"
        assert column["type"] in ("string", "integer", "number", "boolean", "date")
        assert node.get("type", "string") == ("string" if column["type"] == "date" else column["type"])


def test_short_names_are_unique_and_as_documented() -> None:
    assert {k: i.short_names for k, i in KINDS.items()} == {
        "Dataset": ("lds",),
        "LabelJob": ("llj",),
        "TrainingRun": ("ltr",),
        "Evaluation": ("lev",),
        "Deployment": ("ldep",),
    }


# ---------------------------------------------------------------- structural


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_is_structural(kind: str) -> None:
    text = (ROOT / "crds" / crdgen.filename(KINDS[kind])).read_text()
    assert "$ref" not in text and "$defs" not in text
    schema = schema_of(crds()[kind])
    assert schema["type"] == "object" and schema["required"] == ["spec"]
    for path, node in walk(schema):
        where = f"{kind}{path or '.'}"
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, where
        assert "nullable" not in node and "title" not in node, where
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], where
            assert "type" not in node, where
        else:
            assert "anyOf" not in node, where
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), (
                f"{where}: no type"
            )
        if "properties" in node:
            assert node["type"] == "object", where
            assert "additionalProperties" not in node, where
            for required in node.get("required", []):
                assert required in node["properties"], where
        if "items" in node:
            assert node["type"] == "array", where
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], where
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, where
        if "exclusiveMaximum" in node:
            assert node["exclusiveMaximum"] is True and "maximum" in node, where


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_property_is_described(kind: str) -> None:
    schema = schema_of(crds()[kind])
    for part in ("spec", "status"):
        for path, node in walk(schema["properties"][part], f".{part}"):
            if "<anyOf" in path or path.endswith("[*]"):
                continue
            if path.endswith("[]") and node.get("type") != "object":
                continue  # scalar list items: the list is described
            assert (node.get("description") or "").strip(), f"{kind}{path}: no description"


@pytest.mark.parametrize("kind", list(KINDS))
def test_status_schema_has_no_defaults(kind: str) -> None:
    status = schema_of(crds()[kind])["properties"]["status"]
    for path, node in walk(status, ".status"):
        assert "default" not in node, f"{kind}{path}"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_status_timestamps_are_date_times(kind: str) -> None:
    status = schema_of(crds()[kind])["properties"]["status"]
    stamps = [
        (path, node)
        for path, node in walk(status, ".status")
        if path.rsplit(".", 1)[-1].endswith(("Time", "Since", "Timestamp"))
    ]
    for path, node in stamps:
        assert node.get("type") == "string" and node.get("format") == "date-time", f"{kind}{path}"
    if kind == "Deployment":
        assert {p for p, _ in stamps} >= {".status.canaryStartTime", ".status.canaryReadySince"}


def test_no_model_field_lacks_a_description() -> None:
    seen: set[type] = set()

    def visit(model: type[pydantic.BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
        for field in model.model_fields.values():
            for arg in _model_types(field.annotation):
                visit(arg)

    for info in KINDS.values():
        visit(info.spec_model)
        visit(info.status_model)
    assert len(seen) > 10


def _model_types(annotation: Any) -> Iterator[type[pydantic.BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _model_types(arg)


# ---------------------------------------------------------------- defaults


def apply_defaults(schema: dict, value: Any) -> Any:
    """What the API server's defaulting does (for the subset of schema used here)."""
    if isinstance(value, dict) and "properties" in schema:
        value = dict(value)
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], v) for v in value]
    return value


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_defaults_equal_model_defaults(kind: str) -> None:
    """A minimal object defaulted by the API server reads the same as parsed by the models."""
    spec_schema = schema_of(crds()[kind])["properties"]["spec"]
    minimal = {k: SPECS[kind][k] for k in spec_schema["required"]}
    if kind == "Dataset":
        minimal["sources"] = [{"uri": "s3://b/k.csv", "provenance": PROVENANCE}]
    if kind == "LabelJob":
        minimal["annotations"] = [{"uri": "s3://b/a.csv"}]
    defaulted = apply_defaults(spec_schema, minimal)
    assert defaulted == status_dict(parse_spec(kind, minimal))


# ---------------------------------------------------------------- CEL


def cel_rules() -> Iterator[tuple[str, str, dict, dict]]:
    for kind, crd in crds().items():
        for path, node in walk(schema_of(crd)):
            for rule in node.get("x-kubernetes-validations", []):
                yield kind, path, node, rule


def coerce(schema: dict, value: Any) -> Any:
    """JSON numbers are doubles in CEL where the schema says number."""
    if schema.get("type") == "number" and isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: coerce(props.get(k, {}), v) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce(schema.get("items", {}), v) for v in value]
    return value


def evaluate(rule: str, node: dict, obj: dict, old: dict | None = None) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    activation = {"self": celpy.json_to_cel(coerce(node, obj))}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(coerce(node, old))
    return bool(program.evaluate(activation))


def test_there_are_cel_rules_where_the_design_wants_them() -> None:
    where = {(kind, path) for kind, path, _, _ in cel_rules()}
    assert ("Dataset", ".spec.sources[]") in where
    assert ("Dataset", ".spec.split") in where
    assert ("LabelJob", ".spec.annotations[]") in where
    assert ("Evaluation", ".spec.thresholds[]") in where
    assert ("Deployment", ".spec.canary") in where
    assert ("Deployment", ".spec.analysis.metrics[]") in where
    # Plain bounds need no CEL: the schema's minimum/maximum name the field themselves.
    canary = schema_of(crds()["Deployment"])["properties"]["spec"]["properties"]["canary"]
    weight = canary["properties"]["stepWeight"]
    assert (weight["type"], weight["minimum"], weight["maximum"]) == ("integer", 1, 100)
    step = canary["properties"]["steps"]["items"]
    assert (step["type"], step["minimum"], step["maximum"]) == ("integer", 1, 100)


@pytest.mark.parametrize("kind", list(KINDS))
def test_status_digests_have_the_digest_pattern(kind: str) -> None:
    status = schema_of(crds()[kind])["properties"]["status"]
    digests = [(path, node) for path, node in walk(status, ".status") if path.endswith(".digest")]
    assert digests, kind  # every kind's status records a content-addressed artifact
    for path, node in digests:
        assert node["pattern"] == DIGEST_PATTERN, f"{kind}{path}"


def test_every_cel_example_belongs_to_a_rule() -> None:
    """No examples for rules that no CRD has any more."""
    assert {rule["rule"] for _, _, _, rule in cel_rules()} == set(CEL_EXAMPLES) | set(CEL_TRANSITION_EXAMPLES)


@pytest.mark.parametrize(
    "kind,path,node,rule",
    list(cel_rules()),
    ids=[f"{k}{p}:{r['rule'][:30]}" for k, p, _, r in cel_rules()],
)
def test_cel_rule(kind: str, path: str, node: dict, rule: dict) -> None:
    if rule["rule"] in CEL_TRANSITION_EXAMPLES:
        _, good_pairs, bad_pairs = CEL_TRANSITION_EXAMPLES[rule["rule"]]
        for old, new in good_pairs:
            assert evaluate(rule["rule"], node, new, old) is True, (kind, path, old, new)
        for old, new in bad_pairs:
            assert evaluate(rule["rule"], node, new, old) is False, (kind, path, old, new)
        return
    assert rule["rule"] in CEL_EXAMPLES, f"{kind}{path}: add good/bad examples for {rule['rule']!r}"
    assert rule["message"].strip()
    if "fieldPath" in rule:
        assert rule["fieldPath"].lstrip(".") in node["properties"]
    celpy.Environment().compile(rule["rule"])  # compiles
    _, good, bad = CEL_EXAMPLES[rule["rule"]]
    for obj in good:
        obj = _complete(path, obj)
        assert evaluate(rule["rule"], node, obj) is True, (kind, path, obj)
    for obj in bad:
        obj = _complete(path, obj)
        assert evaluate(rule["rule"], node, obj) is False, (kind, path, obj)


def _complete(path: str, obj: dict) -> dict:
    """Make a rule example a whole object of the node's model (for the Python mirror)."""
    if path == ".spec.sources[]":
        return {"provenance": PROVENANCE, **obj}
    return obj


def _cel_models() -> dict[str, type[pydantic.BaseModel]]:
    out: dict[str, type[pydantic.BaseModel]] = {}

    def visit(model: type[pydantic.BaseModel]) -> None:
        if model.__name__ in out:
            return
        out[model.__name__] = model
        for field in model.model_fields.values():
            for sub in _model_types(field.annotation):
                visit(sub)

    for info in KINDS.values():
        visit(info.spec_model)
    return {n: m for n, m in out.items() if issubclass(m, (LoomModel, StatusModel)) and m.cel_rules}


@pytest.mark.parametrize("model_name", sorted(_cel_models()))
def test_python_validators_mirror_cel(model_name: str) -> None:
    """parse_spec refuses what the API server's CEL refuses, and accepts what it accepts."""
    model = _cel_models()[model_name]
    for cel in model.cel_rules:
        if cel.rule in CEL_TRANSITION_EXAMPLES:
            continue  # needs the old object: mirrored by the planner (tests/reconcile)
        if (model_name, cel.rule) in CEL_MODEL_EXAMPLES:
            good, bad = CEL_MODEL_EXAMPLES[(model_name, cel.rule)]
        else:
            owner, good, bad = CEL_EXAMPLES[cel.rule]
            assert owner in ("any", model_name)
        for obj in good:
            obj = {"provenance": PROVENANCE, **obj} if "provenance" in model.model_fields else obj
            model.model_validate(obj)
        for obj in bad:
            obj = {"provenance": PROVENANCE, **obj} if "provenance" in model.model_fields else obj
            with pytest.raises(pydantic.ValidationError):
                model.model_validate(obj)
