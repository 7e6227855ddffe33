"""The pydantic models: defaults, constraints, and parse_spec's messages."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pydantic
import pytest
import yaml

from loom.api import (
    KINDS,
    RBAC_NEEDS,
    METRICS,
    AnnotationSource,
    ArtifactRef,
    Condition,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    DeploymentSpec,
    EvaluationSpec,
    LabelJobSpec,
    SpecError,
    SplitRef,
    Splits,
    TrainingRunSpec,
    TrainingRunStatus,
    kind_info,
    parse_spec,
    parse_status,
    status_dict,
)

from loom.api.dataset import DATASET_URI_RULE
from loom.api.common import MAX_URI_LENGTH, S3_URI_RULE, S3Source

from .examples import SPECS

ROOT = Path(__file__).resolve().parents[2]


def bad(kind: str, spec: dict) -> str:
    with pytest.raises(ValueError) as err:
        parse_spec(kind, spec)
    assert isinstance(err.value, SpecError)
    assert "Traceback" not in str(err.value)
    return str(err.value)


def edited(kind: str, **changes) -> dict:
    spec = copy.deepcopy(SPECS[kind])
    spec.update(changes)
    return spec


# ---------------------------------------------------------------- registry


def test_registry() -> None:
    assert list(KINDS) == ["Dataset", "LabelJob", "TrainingRun", "Evaluation", "Deployment"]
    for info in KINDS.values():
        assert info.group == "loom.dev" and info.version == "v1alpha1"
        assert info.categories == ("loom",)
        assert info.spec_model.__name__ == f"{info.kind}Spec"
        assert info.status_model.__name__ == f"{info.kind}Status"
        for key in (info.kind, info.plural, info.singular, info.crd_name, *info.short_names):
            assert kind_info(key) is info
            assert kind_info(key.upper()) is info
    assert kind_info("deployments.loom.dev").short_names == ("ldep",)
    with pytest.raises(KeyError):
        kind_info("Pod")


@pytest.mark.parametrize("kind", list(SPECS))
def test_examples_parse_and_round_trip(kind: str) -> None:
    model = parse_spec(kind, SPECS[kind])
    assert isinstance(model, KINDS[kind].spec_model)
    dumped = status_dict(model)
    assert parse_spec(kind, dumped) == model
    assert contains(dumped, SPECS[kind])


def contains(big, small) -> bool:
    """Every value of ``small`` is in ``big`` (which may hold defaults on top)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(contains, big, small))
    return big == small


# ---------------------------------------------------------------- defaults


def test_dataset_defaults() -> None:
    spec = parse_spec("Dataset", {"sources": SPECS["Dataset"]["sources"]})
    assert isinstance(spec, DatasetSpec)
    assert spec.id_column == "id"
    assert spec.label_column is None
    assert spec.sources[0].format == "csv"
    assert (spec.split.strategy, spec.split.seed) == ("random", 42)
    assert (spec.split.train, spec.split.validation, spec.split.test) == (0.7, 0.15, 0.15)
    assert spec.sources[0].provenance.collected_at.year == 1936
    assert status_dict(spec)["sources"][0]["provenance"]["collectedAt"] == "1936-01-01T00:00:00Z"


def test_labeljob_defaults() -> None:
    spec = parse_spec(
        "LabelJob", {"datasetRef": {"name": "iris"}, "annotations": [{"uri": "s3://b/a.csv"}]}
    )
    assert isinstance(spec, LabelJobSpec)
    assert spec.dataset_ref.name == "iris" and spec.dataset_ref.namespace is None
    assert spec.label_column == "label"
    assert spec.agreement_metric == "auto"
    assert spec.min_agreement == 0.6
    assert spec.adjudication == "majority"
    assert spec.annotations[0].format == "csv"


def test_trainingrun_defaults() -> None:
    spec = parse_spec("TrainingRun", {"labelJobRef": {"name": "l"}})
    assert isinstance(spec, TrainingRunSpec)
    assert (spec.model.type, spec.model.hidden_units) == ("mlp", 16)
    h = spec.hyperparameters
    assert (h.epochs, h.learning_rate, h.batch_size, h.seed) == (20, 0.05, 32, 0)
    assert (spec.workers, spec.nproc_per_node) == (1, 1)
    assert (spec.resources.cpu, spec.resources.memory, spec.resources.gpus) == ("1", "1Gi", 0)
    assert spec.image is None


def test_quantities_accept_numbers() -> None:
    spec = parse_spec("TrainingRun", {"labelJobRef": {"name": "l"}, "resources": {"cpu": 2, "memory": "512Mi"}})
    assert spec.resources.cpu == "2"
    assert "resources.cpu" in bad("TrainingRun", {"labelJobRef": {"name": "l"}, "resources": {"cpu": "two"}})


@pytest.mark.parametrize("value", [0.5, 2.0])
def test_quantities_refuse_floats(value: float) -> None:
    """The CRD's int-or-string refuses a JSON float, so parse_spec does too."""
    msg = bad("TrainingRun", {"labelJobRef": {"name": "l"}, "resources": {"cpu": value}})
    assert msg.startswith("spec.resources.cpu: a fractional quantity must be written as a string")
    assert f"(got {value!r})" in msg


@pytest.mark.parametrize("value", [2, 0, "500m", "0.5", "1Gi", 0.5, 2.0, True, "two", "-"])
def test_quantities_agree_with_the_crd(value) -> None:
    """parse_spec accepts a quantity exactly when the CRD schema does."""
    crd = yaml.safe_load((ROOT / "crds" / "loom.dev_trainingruns.yaml").read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    node = spec_schema["properties"]["resources"]["properties"]["cpu"]
    schema = {k: v for k, v in node.items() if k not in ("x-kubernetes-int-or-string", "default")}
    crd_accepts = jsonschema.Draft4Validator(schema).is_valid(value) and not isinstance(value, bool)
    try:
        parse_spec("TrainingRun", {"labelJobRef": {"name": "l"}, "resources": {"cpu": value}})
        model_accepts = True
    except SpecError:
        model_accepts = False
    assert model_accepts == crd_accepts, value


def test_evaluation_defaults_and_thresholds() -> None:
    spec = parse_spec("Evaluation", SPECS["Evaluation"])
    assert isinstance(spec, EvaluationSpec)
    assert [(t.metric, t.min, t.max) for t in spec.thresholds] == [
        ("accuracy", 0.8, None),
        ("f1_macro", 0.8, None),
    ]


def test_deployment_defaults() -> None:
    spec = parse_spec("Deployment", {"evaluationRef": {"name": "e"}})
    assert isinstance(spec, DeploymentSpec)
    assert spec.canary.weights() == [20, 40, 60]
    assert spec.analysis.interval == 10 and spec.analysis.failure_limit == 2
    assert spec.canary.progress_deadline_seconds == 120
    assert spec.service_account_name == "loom-s3"


def test_snake_case_names_are_accepted_too() -> None:
    spec = DeploymentSpec(evaluation_ref={"name": "e"}, service_account_name="sa")
    assert status_dict(spec)["serviceAccountName"] == "sa"


# ---------------------------------------------------------------- messages


def test_missing_required_field_is_named() -> None:
    msg = bad("LabelJob", {"annotations": [{"uri": "s3://b/a.csv"}]})
    assert msg == "spec.datasetRef: required field is missing"
    assert "spec.thresholds" in bad("Evaluation", {"trainingRunRef": {"name": "t"}})
    assert "spec: " in bad("Dataset", None) or "spec.sources" in bad("Dataset", None)


def test_unknown_field_is_named() -> None:
    assert bad("Deployment", edited("Deployment", trafficPercent=10)) == (
        "spec.trafficPercent: unknown field"
    )


def test_source_uri_must_be_s3() -> None:
    spec = copy.deepcopy(SPECS["Dataset"])
    spec["sources"][0]["uri"] = "ftp://example.com/iris.csv"
    msg = bad("Dataset", spec)
    assert msg.startswith("spec.sources[0].uri: must start with s3://")
    assert "ftp://example.com/iris.csv" in msg
    spec["sources"][0]["uri"] = "https://example.com/iris.csv"  # a Dataset may read a URL
    parse_spec("Dataset", spec)
    msg = bad("LabelJob", edited("LabelJob", annotations=[{"uri": "/tmp/a.csv"}]))
    assert msg.startswith("spec.annotations[0].uri: must start with s3://")
    # One S3Source declares the bounds, the CEL rule and its mirror for both.
    too_long = "s3://b/" + "k" * MAX_URI_LENGTH
    spec["sources"][0]["uri"] = too_long
    assert bad("Dataset", spec).startswith("spec.sources[0].uri: string should have at most")
    msg = bad("LabelJob", edited("LabelJob", annotations=[{"uri": too_long}]))
    assert msg.startswith("spec.annotations[0].uri: string should have at most")
    for source in (DatasetSource, AnnotationSource):
        assert issubclass(source, S3Source)
        assert source.model_fields["uri"].description != S3Source.model_fields["uri"].description
    assert AnnotationSource.cel_rules == (S3_URI_RULE,)
    assert DatasetSource.cel_rules == (DATASET_URI_RULE,)  # s3:// or http(s)://, Dataset only
    msg = bad("LabelJob", edited("LabelJob", annotations=[{"uri": "https://example.com/a.csv"}]))
    assert msg.startswith("spec.annotations[0].uri: must start with s3://")


def test_provenance_is_required_and_checked() -> None:
    spec = copy.deepcopy(SPECS["Dataset"])
    del spec["sources"][0]["provenance"]["license"]
    spec["sources"][0]["provenance"]["collectedAt"] = "last tuesday"
    msg = bad("Dataset", spec)
    assert "spec.sources[0].provenance.license: required field is missing" in msg
    assert "spec.sources[0].provenance.collectedAt:" in msg
    spec["sources"][0].pop("provenance")
    assert "spec.sources[0].provenance: required field is missing" in bad("Dataset", spec)


def test_split_fractions_must_sum_to_one() -> None:
    msg = bad("Dataset", edited("Dataset", split={"train": 0.8, "validation": 0.15, "test": 0.15}))
    assert msg == "spec.split: train + validation + test must sum to 1 (got 1.1)"
    parse_spec("Dataset", edited("Dataset", split={"train": 0.8, "validation": 0.1, "test": 0.1}))
    parse_spec(
        "Dataset",
        edited("Dataset", split={"train": 1 / 3, "validation": 1 / 3, "test": 1 / 3}),
    )
    msg = bad("Dataset", edited("Dataset", split={"train": 1.0, "validation": 0, "test": 0}))
    assert "spec.split.train" in msg and "spec.split.test" in msg


def test_enums_and_bounds_name_the_field() -> None:
    msg = bad("LabelJob", edited("LabelJob", agreementMetric="vibes"))
    assert msg.startswith("spec.agreementMetric: ") and "'cohen'" in msg and "vibes" in msg
    msg = bad("LabelJob", edited("LabelJob", minAgreement=1.5))
    assert msg == "spec.minAgreement: input should be less than or equal to 1 (got 1.5)"
    msg = bad("TrainingRun", edited("TrainingRun", workers=-1))
    assert msg == "spec.workers: input should be greater than or equal to 0 (got -1)"
    msg = bad("TrainingRun", edited("TrainingRun", hyperparameters={"learningRate": 0}))
    assert msg.startswith("spec.hyperparameters.learningRate: input should be greater than 0")
    msg = bad("TrainingRun", edited("TrainingRun", model={"type": "transformer"}))
    assert msg.startswith("spec.model.type: ")
    msg = bad("Deployment", edited("Deployment", canary={"stepWeight": 101}))
    assert msg == "spec.canary.stepWeight: input should be less than or equal to 100 (got 101)"
    assert "spec.canary.maxWeight" in bad("Deployment", edited("Deployment", canary={"maxWeight": 0}))


def test_reference_names_are_checked() -> None:
    msg = bad("TrainingRun", edited("TrainingRun", labelJobRef={"name": "Bad_Name"}))
    assert msg.startswith("spec.labelJobRef.name: must be a DNS-1123 subdomain")
    # a namespace is syntactically fine; the planner refuses a foreign one
    spec = parse_spec("TrainingRun", edited("TrainingRun", labelJobRef={"name": "l", "namespace": "other"}))
    assert spec.label_job_ref.namespace == "other"


def test_thresholds() -> None:
    msg = bad("Evaluation", edited("Evaluation", thresholds=[{"metric": "accuracy"}]))
    assert msg == "spec.thresholds[0]: a threshold needs min, max or both"
    msg = bad("Evaluation", edited("Evaluation", thresholds=[{"metric": "accuracy", "min": 0.9, "max": 0.5}]))
    assert msg == "spec.thresholds[0]: min (0.9) must be less than or equal to max (0.5)"
    msg = bad("Evaluation", edited("Evaluation", thresholds=[{"metric": "auc", "min": 0.5}]))
    assert msg.startswith("spec.thresholds[0].metric: ")
    assert METRICS[:4] == ("accuracy", "f1_macro", "precision_macro", "recall_macro")
    for metric in METRICS:
        parse_spec("Evaluation", edited("Evaluation", thresholds=[{"metric": metric, "min": 0.5}]))
    many = [{"metric": m, "min": 0.5} for m in METRICS] + [{"metric": f"robustness.n{i}.accuracy", "min": 0.5} for i in range(40)]
    msg = bad("Evaluation", edited("Evaluation", thresholds=many))
    assert "at most 32 items" in msg
    msg = bad(
        "Evaluation",
        edited("Evaluation", thresholds=[{"metric": "accuracy", "min": 0.5}, {"metric": "accuracy", "max": 0.9}]),
    )
    assert msg == "spec.thresholds: duplicate threshold for metric accuracy"
    assert "spec.thresholds" in bad("Evaluation", edited("Evaluation", thresholds=[]))


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("TrainingRun", {"labelJobRef": {"name": "l"}, "workers": -1, "nprocPerNode": 0})
    assert err.value.fields == ["spec.workers", "spec.nprocPerNode"]
    assert err.value.kind == "TrainingRun"


# ---------------------------------------------------------------- status


def test_status_dict_is_camel_case_without_none() -> None:
    status = TrainingRunStatus(
        phase="Succeeded",
        observed_generation=2,
        conditions=[Condition(type="Succeeded", status="True", reason="Trained", message="ok")],
        job_name="iris-mlp",
        world_size=2,
        model=ArtifactRef(uri="s3://loom/ns/m.onnx", digest="sha256:" + "0" * 64),
        metrics={"val_accuracy": 0.9},
        classes=["setosa"],
    )
    out = status_dict(status)
    assert out == {
        "phase": "Succeeded",
        "observedGeneration": 2,
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Trained", "message": "ok"}],
        "jobName": "iris-mlp",
        "worldSize": 2,
        "model": {"uri": "s3://loom/ns/m.onnx", "digest": "sha256:" + "0" * 64},
        "metrics": {"val_accuracy": 0.9},
        "classes": ["setosa"],
        "features": [],
    }
    assert parse_status("ltr", out) == status


@pytest.mark.parametrize("digest", ["0" * 64, "sha256:" + "A" * 64, "sha256:" + "0" * 63, "md5:" + "0" * 32])
def test_status_digests_are_sha256(digest: str) -> None:
    """Digests are always written sha256:<64 lowercase hex>; the CRD refuses anything else."""
    with pytest.raises(pydantic.ValidationError):
        ArtifactRef(uri="s3://b/m.onnx", digest=digest)
    with pytest.raises(pydantic.ValidationError):
        SplitRef(uri="s3://b/t.csv", digest=digest, rows=1)
    with pytest.raises(pydantic.ValidationError):
        parse_status("Deployment", {"model": {"uri": "s3://b/m.onnx", "digest": digest}})
    ArtifactRef(uri="s3://b/m.onnx", digest="sha256:" + "0123456789abcdef" * 4)


def test_status_reads_workload_results_leniently() -> None:
    status = parse_status(
        "Dataset",
        {
            "version": "sha256:" + "a" * 64,
            "rows": 150,
            "columns": ["id", "x"],
            "splits": {"train": {"uri": "s3://b/t.csv", "digest": "sha256:" + "b" * 64, "rows": 105}},
            "somethingNew": 1,
        },
    )
    assert isinstance(status, DatasetStatus)
    assert status.splits == Splits(train=SplitRef(uri="s3://b/t.csv", digest="sha256:" + "b" * 64, rows=105))
    labels = parse_status("LabelJob", {"classes": [0, 1, 2]})
    assert labels.classes == ["0", "1", "2"]
    assert status_dict(DatasetStatus()) == {"conditions": [], "columns": []}


def test_rbac_needs_cover_the_loom_kinds() -> None:
    pairs = {(n.group, n.resource) for n in RBAC_NEEDS}
    assert len(pairs) == len(RBAC_NEEDS)  # one entry per resource
    for info in KINDS.values():
        assert ("loom.dev", info.plural) in pairs
        assert ("loom.dev", f"{info.plural}/status") in pairs
        assert ("loom.dev", f"{info.plural}/finalizers") in pairs
    assert ("batch", "jobs") in pairs and ("kubeflow.org", "pytorchjobs") in pairs
    assert ("serving.kserve.io", "inferenceservices") in pairs
    for need in RBAC_NEEDS:
        assert need.why.strip() and "\n" not in need.why, need
        assert need.verbs and need.verbs <= {"get", "list", "watch", "create", "patch", "update"}, need
        assert "delete" not in need.verbs and "deletecollection" not in need.verbs, need
        if "update" in need.verbs:  # only blockOwnerDeletion needs update, on finalizers
            assert need.resource.endswith("/finalizers") and need.verbs == {"update"}, need
    # The operator never reads Secrets or ServiceAccounts, and kopf (clusterwide)
    # never lists namespaces.
    assert not {r for _, r in pairs} & {"secrets", "serviceaccounts", "namespaces"}
    assert all(group != "events.k8s.io" for group, _ in pairs)
