"""Bad input: each invalid manifest is refused with a message that names the problem, the
earliest place it can be (schema or CEL at admission, else a Failed condition), and the
operator keeps running."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from it_helpers import condition, phase, refusal

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

NS = "bad-input"
PROV = {"owner": "o", "license": "CC-BY-4.0", "consent": "public", "collectedAt": "2020-01-01T00:00:00Z"}
DATASET = {"sources": [{"uri": "s3://loom-examples/quickstart/iris.csv", "format": "csv", "provenance": PROV}],
           "idColumn": "id", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}}


def obj(kind, name, spec):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


def with_(base, path, value):
    out = copy.deepcopy(base)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


DELETE = object()

# (id, manifest, words the 422 message must contain)
ADMISSION = [
    ("split-sum", obj("Dataset", "a", with_(DATASET, ["split", "train"], 0.5)), ["spec.split"]),
    ("split-range", obj("Dataset", "b", with_(DATASET, ["split", "train"], 1.5)), ["spec.split.train"]),
    ("source-not-s3", obj("Dataset", "c", with_(DATASET, ["sources", 0, "uri"], "ftp://x/y.csv")), ["spec.sources[0].uri"]),
    ("no-license", obj("Dataset", "d", with_(DATASET, ["sources", 0, "provenance", "license"], DELETE)), ["license"]),
    ("no-sources", obj("Dataset", "e", with_(DATASET, ["sources"], [])), ["spec.sources"]),
    ("agreement-range", obj("LabelJob", "f", {"datasetRef": {"name": "x"}, "annotations": [{"uri": "s3://b/a.csv"}], "minAgreement": 1.5}), ["spec.minAgreement"]),
    ("agreement-metric", obj("LabelJob", "g", {"datasetRef": {"name": "x"}, "annotations": [{"uri": "s3://b/a.csv"}], "agreementMetric": "vibes"}), ["spec.agreementMetric"]),
    ("no-labeljob-ref", obj("TrainingRun", "h", {"workers": 1}), ["spec.labelJobRef"]),
    ("negative-workers", obj("TrainingRun", "i", {"labelJobRef": {"name": "x"}, "workers": -1}), ["spec.workers"]),
    ("zero-epochs", obj("TrainingRun", "j", {"labelJobRef": {"name": "x"}, "hyperparameters": {"epochs": 0}}), ["spec.hyperparameters.epochs"]),
    ("unknown-metric", obj("Evaluation", "k", {"trainingRunRef": {"name": "x"}, "thresholds": [{"metric": "vibes", "min": 0.5}]}), ["spec.thresholds[0].metric"]),
    ("min-above-max", obj("Evaluation", "l", {"trainingRunRef": {"name": "x"}, "thresholds": [{"metric": "accuracy", "min": 0.9, "max": 0.5}]}), ["spec.thresholds[0]"]),
    ("bound-missing", obj("Evaluation", "m", {"trainingRunRef": {"name": "x"}, "thresholds": [{"metric": "accuracy"}]}), ["spec.thresholds[0]"]),
    ("canary-percent", obj("Deployment", "n", {"evaluationRef": {"name": "x"}, "canary": {"stepWeight": 150}}), ["spec.canary.stepWeight"]),
    ("step-out-of-range", obj("Deployment", "n2", {"evaluationRef": {"name": "x"}, "canary": {"steps": [10, 101]}}), ["spec.canary.steps[1]"]),
    ("steps-not-increasing", obj("Deployment", "n3", {"evaluationRef": {"name": "x"}, "canary": {"steps": [50, 20]}}), ["spec.canary.steps", "strictly increasing"]),
    ("step-above-max", obj("Deployment", "n4", {"evaluationRef": {"name": "x"}, "canary": {"stepWeight": 60, "maxWeight": 50}}), ["spec.canary.stepWeight", "maxWeight"]),
    ("unknown-builtin-metric", obj("Deployment", "n5", {"evaluationRef": {"name": "x"}, "analysis": {"metrics": [{"name": "vibes", "thresholdRange": {"max": 1}}]}}), ["spec.analysis.metrics[0].name", "builtin"]),
    ("range-min-above-max", obj("Deployment", "n6", {"evaluationRef": {"name": "x"}, "analysis": {"metrics": [{"name": "error-rate", "thresholdRange": {"min": 5, "max": 1}}]}}), ["spec.analysis.metrics[0].thresholdRange.min"]),
]


@pytest.fixture(scope="module")
def namespace(env):
    env.tenant(NS)
    return NS


@pytest.mark.parametrize("manifest,words", [(m, w) for _, m, w in ADMISSION], ids=[i for i, _, _ in ADMISSION])
def test_admission_refuses_with_a_specific_message(env, namespace, manifest, words):
    message = refusal(env, manifest)
    for word in words:
        assert word in message, message
    assert env.get(manifest["kind"], manifest["metadata"]["name"], NS) == {}


def test_missing_source_object_fails_the_dataset_naming_it(env, namespace):
    env.applier.apply(obj("Dataset", "ghost", with_(DATASET, ["sources", 0, "uri"], "s3://loom-examples/nope.csv")))
    ds = env.wait_phase("Dataset", "ghost", "Failed", ns=NS, timeout=60)
    failed = condition(ds, "Failed")
    assert failed["reason"] == "SourceNotFound" and "s3://loom-examples/nope.csv" in failed["message"]
    assert "Traceback" not in failed["message"]


def test_cross_namespace_reference_is_refused(env, namespace):
    env.applier.apply(obj("LabelJob", "elsewhere", {"datasetRef": {"name": "iris", "namespace": "quickstart"},
                                                    "annotations": [{"uri": "s3://loom-examples/quickstart/annotations.csv"}]}))
    lj = env.wait_phase("LabelJob", "elsewhere", "Failed", ns=NS, timeout=30)
    assert condition(lj, "Failed")["reason"] == "CrossNamespaceReference"


def test_low_agreement_blocks_publication_naming_the_figure(env, namespace):
    # Three annotators who answer at random: agreement near zero.
    import random

    rng = random.Random(7)
    ids = sorted({line.split(",")[0] for line in (ROOT / "examples/quickstart/data/annotations.csv").read_text().splitlines()[1:]})
    rows = ["item,annotator,label"] + [f"{i},{a},{rng.choice(['setosa', 'versicolor', 'virginica'])}"
                                       for i in ids for a in ("ann", "bob", "cy")]
    env.storage.ensure_bucket("loom-examples")
    env.storage.put_bytes("s3://loom-examples/bad/random.csv", "\n".join(rows).encode())
    env.applier.apply(obj("Dataset", "iris", DATASET))
    env.applier.apply(obj("LabelJob", "noisy", {"datasetRef": {"name": "iris"}, "labelColumn": "species",
                                                "annotations": [{"uri": "s3://loom-examples/bad/random.csv"}], "minAgreement": 0.6}))
    lj = env.wait_phase("LabelJob", "noisy", "Failed", ns=NS, timeout=120)
    failed = condition(lj, "Failed")
    assert failed["reason"] == "AgreementBelowThreshold" and "below minAgreement 0.6" in failed["message"]
    assert "splits" not in lj["status"]
    # Nothing downstream can use it: a TrainingRun on it fails, naming the LabelJob.
    env.applier.apply(obj("TrainingRun", "on-noise", {"labelJobRef": {"name": "noisy"}}))
    tr = env.wait_phase("TrainingRun", "on-noise", "Failed", ns=NS, timeout=30)
    assert "noisy" in condition(tr, "Failed")["message"]


def test_deployment_of_a_missing_evaluation_waits_with_a_reason(env, namespace):
    env.applier.apply(obj("Deployment", "nothing", {"evaluationRef": {"name": "does-not-exist"}}))
    dep = env.wait("Deployment", "nothing", lambda o: condition(o, "Ready").get("reason") == "EvaluationNotFound", ns=NS, timeout=30)
    assert phase(dep) == "Pending" and "does-not-exist" in condition(dep, "Ready")["message"]
    assert env.applier.get("serving.kserve.io/v1beta1", "InferenceService", "nothing", NS) is None


def test_the_operator_is_still_running(env, namespace):
    assert env.operator.alive(), env.operator.log_tail()
    assert "Traceback" not in env.operator.log_tail(400)
