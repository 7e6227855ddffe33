"""The Evaluation gate through the real operator: the quickstart chain to a Passed Evaluation with
a model card and a lineage proof, and a Failed one for a threshold no model can meet."""
from __future__ import annotations

import copy

import pytest

from it_helpers import condition, phase, refusal

pytestmark = pytest.mark.integration
NS = "eval-it"


@pytest.fixture(scope="module")
def passed(env):
    for name in ("00-namespace.yaml", "01-dataset.yaml", "02-labeljob.yaml", "03-trainingrun.yaml", "04-evaluation.yaml"):
        env.applier.apply_all(env.quickstart(name, NS))
    return env.wait_phase("Evaluation", "iris-mlp-eval", {"Passed", "Failed"}, ns=NS, timeout=300)


def test_quickstart_evaluation_passes_with_a_model_card(env, passed):
    assert phase(passed) == "Passed", passed["status"]
    st = passed["status"]
    assert condition(passed, "Passed")["status"] == "True" and condition(passed, "Ready")["status"] == "True"
    tr = env.get("TrainingRun", "iris-mlp", ns=NS)
    lj = env.get("LabelJob", "iris-species", ns=NS)
    ds = env.get("Dataset", "iris", ns=NS)
    # The contract with the Deployment: status.model is the evaluated model.
    assert st["model"]["digest"] == tr["status"]["model"]["digest"]
    assert st["testSplit"]["digest"] == lj["status"]["splits"]["test"]["digest"]
    assert st["datasetTestSplit"]["digest"] == ds["status"]["splits"]["test"]["digest"]
    checks = {c["metric"]: c for c in st["checks"]}
    assert checks["leakage"]["passed"] and "not among the 2 training input(s)" in checks["leakage"]["message"]
    assert checks["champion.accuracy"]["message"].startswith("no champion")
    assert {"accuracy", "f1_macro", "roc_auc", "ece", "robustness.noise.accuracy", "latency_p99_ms"} <= set(checks)
    assert any(m.startswith("accuracy[species=") for m in checks)
    assert {"log_loss", "robustness.missing.accuracy", "throughput_rps"} <= set(st["metrics"])
    # The model card: in S3, by digest, linked from the Evaluation's lineage event.
    card = env.storage.get_json(st["modelCard"]["uri"])
    assert env.storage.sha256(st["modelCard"]["uri"]) == st["modelCard"]["digest"]
    assert card["verdict"] == "Passed" and card["model"] == st["model"]
    assert card["data"]["labelVersion"] == lj["status"]["version"] and card["data"]["datasetVersion"] == ds["status"]["version"]
    assert [c["metric"] for c in card["checks"]] == [c["metric"] for c in st["checks"]]
    assert env.storage.get_bytes(st["modelCard"]["markdownUri"]).decode().startswith("# Model card: iris-mlp-eval")
    from loom.lineage.openlineage import dataset_digest

    events = [env.storage.get_json(o.uri) for o in env.storage.list(f"s3://loom/{NS}/lineage/evaluation/iris-mlp-eval/")]
    assert len(events) == 1
    outputs = {dataset_digest(o) for o in events[0]["outputs"]}
    assert {st["modelCard"]["digest"], st["modelCard"]["markdownDigest"], st["report"]["digest"]} <= outputs


def test_a_threshold_no_model_can_meet_fails_naming_it(env, passed):
    ev = copy.deepcopy(env.quickstart("04-evaluation.yaml", NS)[0])
    ev["metadata"]["name"] = "iris-mlp-too-strict"
    ev["spec"]["thresholds"].append({"metric": "latency_p50_ms", "max": 0.000001})
    env.applier.apply(ev)
    done = env.wait_phase("Evaluation", "iris-mlp-too-strict", {"Passed", "Failed"}, ns=NS, timeout=240)
    assert phase(done) == "Failed", done["status"]
    failed = condition(done, "Failed")
    assert failed["reason"] == "ThresholdNotMet" and "latency_p50_ms" in failed["message"]
    assert [c["metric"] for c in done["status"]["checks"] if not c["passed"]] == ["latency_p50_ms"]
    assert env.storage.get_json(done["status"]["modelCard"]["uri"])["verdict"] == "Failed"


def _evaluation(name, **spec):
    return {"apiVersion": "loom.dev/v1alpha1", "kind": "Evaluation", "metadata": {"name": name, "namespace": NS},
            "spec": {"trainingRunRef": {"name": "iris-mlp"}, "thresholds": [{"metric": "accuracy", "min": 0.8}], **spec}}


BAD = [
    ("undeclared-perturbation", _evaluation("bad-a", thresholds=[{"metric": "robustness.blur.accuracy", "min": 0.5}]),
     ["spec.thresholds", "must name a perturbation declared in spec.robustness"]),
    ("unknown-metric", _evaluation("bad-b", thresholds=[{"metric": "auc", "min": 0.5}]),
     ["spec.thresholds[0].metric", "unknown metric"]),
    ("negative-tolerance", _evaluation("bad-c", champion={"deploymentRef": {"name": "iris"}, "tolerance": -0.05}),
     ["spec.champion.tolerance"]),
    ("slice-min-rows", _evaluation("bad-d", slices=[{"column": "species", "minRows": 0}]), ["spec.slices[0].minRows"]),
    ("latency-min-above-max", _evaluation("bad-e", thresholds=[{"metric": "latency_p99_ms", "min": 9, "max": 1}]),
     ["spec.thresholds[0].min", "min must be less than or equal to max"]),
]


@pytest.mark.parametrize("manifest,words", [(m, w) for _, m, w in BAD], ids=[i for i, _, _ in BAD])
def test_admission_refuses_bad_evaluations(env, passed, manifest, words):
    message = refusal(env, manifest)
    for word in words:
        assert word in message, message


def test_champion_in_another_namespace_is_refused(env, passed):
    env.applier.apply(_evaluation("elsewhere", champion={"deploymentRef": {"name": "iris", "namespace": "quickstart"}}))
    ev = env.wait_phase("Evaluation", "elsewhere", "Failed", ns=NS, timeout=60)
    failed = condition(ev, "Failed")
    assert failed["reason"] == "CrossNamespaceReference" and "spec.champion.deploymentRef.namespace" in failed["message"]
    assert env.applier.get("batch/v1", "Job", "elsewhere-eval-g1", NS) is None


def test_champion_is_the_model_the_deployment_serves(env, passed):
    # Serve the passed model, then evaluate a model against it: the champion is read from the
    # Deployment's status.model and scored on the same test split.
    env.applier.apply_all(env.quickstart("05-deployment.yaml", NS))
    dep = env.wait_phase("Deployment", "iris", {"Available", "Failed"}, ns=NS, timeout=180)
    assert phase(dep) == "Available", dep["status"]
    ev = copy.deepcopy(env.quickstart("04-evaluation.yaml", NS)[0])
    ev["metadata"]["name"] = "iris-mlp-vs-champion"
    ev["spec"]["champion"]["tolerance"] = 0.0
    env.applier.apply(ev)
    done = env.wait_phase("Evaluation", "iris-mlp-vs-champion", {"Passed", "Failed"}, ns=NS, timeout=240)
    st = done["status"]
    assert st["champion"]["model"] == dep["status"]["model"]
    champ = next(c for c in st["checks"] if c["metric"] == "champion.accuracy")
    # the same model on the same rows: equal, so within a zero tolerance
    assert st["champion"]["value"] == st["metrics"]["accuracy"] and champ["passed"], champ
    assert phase(done) == "Passed", st
    card = env.storage.get_json(st["modelCard"]["uri"])
    assert card["champion"]["model"]["digest"] == dep["status"]["model"]["digest"]
