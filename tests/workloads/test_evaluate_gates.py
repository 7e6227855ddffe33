"""The gate matrix: real ONNX models, real scikit-learn metrics, each check failing alone.

Every case runs the evaluation workload against the embedded S3, then the
operator's planner on its result, and checks that exactly the expected check
fails with the expected reason.
"""
from __future__ import annotations

import copy
import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest

from loom.api import parse_spec
from loom.config import Settings
from loom.lineage.digest import sha256_bytes
from loom.reconcile import evaluation
from loom.reconcile.common import get_condition
from loom.workloads import evaluate
from loom.workloads._task import execute

import onnx_models as om

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
S = Settings(bucket="loom", s3_endpoint="http://s3:9000")

BASE_SPEC = {
    "trainingRunRef": {"name": "tr"},
    "thresholds": [
        {"metric": "accuracy", "min": 0.8},
        {"metric": "f1_macro", "min": 0.8},
        {"metric": "roc_auc", "min": 0.9},
        {"metric": "log_loss", "max": 1.0},
        {"metric": "ece", "max": 0.5},
        {"metric": "robustness.noise.accuracy", "min": 0.3},
        {"metric": "latency_p99_ms", "max": 100000},
    ],
    "slices": [{"column": "region", "minRows": 5, "thresholds": [{"metric": "accuracy", "min": 0.6}]},
               {"column": "label", "minRows": 1000}],
    "robustness": [{"name": "noise", "type": "gaussianNoise", "sigma": 1.0, "seed": 1},
                   {"name": "drop", "type": "dropValues", "rate": 0.3, "fill": "mean", "seed": 2}],
    "latency": {"batchSize": 16, "iterations": 20, "warmup": 2},
    "champion": {"deploymentRef": {"name": "iris"}, "metric": "accuracy", "tolerance": 0.0},
}


def put(storage, uri: str, data: bytes) -> dict:
    storage.put_bytes(uri, data)
    return {"uri": uri, "digest": sha256_bytes(data)}


@pytest.fixture(scope="module")
def inputs(storage):
    ns = "gates-" + uuid.uuid4().hex[:6]
    df = om.test_frame()
    train = om.test_frame(seed=8, start_id=1)
    refs = {
        "good": put(storage, f"s3://loom/{ns}/models/good.onnx", om.good_model()),
        "biased": put(storage, f"s3://loom/{ns}/models/biased.onnx", om.biased_model()),
        "test": dict(put(storage, f"s3://loom/{ns}/labels/test.csv", om.csv_bytes(df)), rows=len(df)),
        "dsTest": dict(put(storage, f"s3://loom/{ns}/datasets/test.csv", om.csv_bytes(df.drop(columns=["label"]))),
                       rows=len(df)),
        "train": put(storage, f"s3://loom/{ns}/labels/train.csv", om.csv_bytes(train)),
        # a training split that shares three rows with the test split
        "leaky": put(storage, f"s3://loom/{ns}/labels/train-leaky.csv",
                     om.csv_bytes(pd.concat([train, df.iloc[:3]]))),
    }
    return ns, refs


def task_for(ns, refs, spec, candidate="good", champion="biased", training=("train",)):
    dumped = parse_spec("Evaluation", spec).model_dump(by_alias=True, mode="json", exclude_none=True)
    task = {
        "namespace": ns, "name": "ev", "trainingRun": "tr",
        "model": refs[candidate], "test": refs["test"], "datasetTest": refs["dsTest"],
        "idColumn": "id", "labelColumn": "label", "versions": {"dataset": "sha256:" + "d" * 64, "labels": "sha256:" + "e" * 64},
        "trainingInputs": [dict(refs[t], event=f"s3://loom/{ns}/lineage/trainingrun/tr/run.json") for t in training],
        "spec": {k: dumped[k] for k in ("thresholds", "slices", "calibration", "robustness", "latency")},
        "outputPrefix": f"s3://loom/{ns}/evaluations/ev/{uuid.uuid4().hex[:6]}/",
        "resultUri": f"s3://loom/{ns}/runs/{uuid.uuid4().hex[:6]}.json",
    }
    if champion:
        task["champion"] = {"deployment": "iris", "metric": dumped["champion"]["metric"],
                            "tolerance": dumped["champion"]["tolerance"], "model": refs[champion]}
    return dumped, task


def verdict(spec, result):
    body = {"apiVersion": "loom.dev/v1alpha1", "kind": "Evaluation",
            "metadata": {"name": "ev", "namespace": "team-a", "uid": "0123456789abcdef", "generation": 1},
            "spec": spec, "status": {}}
    ok = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
          "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    return evaluation.plan(body, evaluation.Observed(job=ok, result=result), S, NOW)


def edit(spec, metric=None, **bound):
    spec = copy.deepcopy(spec)
    for t in spec["thresholds"]:
        if t["metric"] == metric:
            t.clear()
            t.update(metric=metric, **bound)
    return spec


def run_case(storage, inputs, spec, **kw):
    ns, refs = inputs
    _, task = task_for(ns, refs, spec, **kw)
    code, result = execute(evaluate.main, task, storage)
    assert code == 0, result
    plan = verdict(spec, result)
    failing = [c["metric"] for c in plan.status["checks"] if not c["passed"]]
    return result, plan, failing


def test_baseline_passes_every_check_and_writes_a_model_card(storage, inputs):
    result, plan, failing = run_case(storage, inputs, BASE_SPEC)
    assert failing == [] and plan.status["phase"] == "Passed", plan.status["checks"]
    assert result["checks"] == plan.status["checks"]  # card and status judged alike
    names = [c["metric"] for c in plan.status["checks"]]
    assert names[0] == "leakage" and "accuracy[region=south]" in names and "champion.accuracy" in names
    # the label slices are all smaller than minRows: reported as skipped, not gated
    label_slices = [s for s in plan.status["slices"] if s["column"] == "label"]
    assert len(label_slices) == 3 and all(s["skipped"] and "metrics" not in s for s in label_slices)
    assert result["metrics"]["accuracy"] == pytest.approx(0.866667, abs=1e-6)
    card = storage.get_json(result["modelCard"]["uri"])
    assert card["verdict"] == "Passed" and card["model"]["digest"] == inputs[1]["good"]["digest"]
    assert card["champion"]["value"] == pytest.approx(0.804167, abs=1e-6)
    assert sha256_bytes(storage.get_bytes(result["modelCard"]["markdownUri"])) == result["modelCard"]["markdownDigest"]
    assert plan.status["modelCard"] == result["modelCard"]
    outputs = {o["uri"] for o in plan.lineage[0].outputs}
    assert {result["modelCard"]["uri"], result["modelCard"]["markdownUri"]} <= outputs


CASES = {
    "metric threshold": (edit(BASE_SPEC, "accuracy", min=0.95), {}, ["accuracy"], "ThresholdNotMet"),
    "slice threshold": (
        {**BASE_SPEC, "slices": [{"column": "region", "minRows": 5, "thresholds": [{"metric": "accuracy", "min": 0.9}]}]},
        {}, ["accuracy[region=south]"], "ThresholdNotMet"),
    "calibration": (edit(BASE_SPEC, "ece", max=0.001), {}, ["ece"], "ThresholdNotMet"),
    "robustness": (edit(BASE_SPEC, "robustness.noise.accuracy", min=0.99), {}, ["robustness.noise.accuracy"],
                   "ThresholdNotMet"),
    "latency": (edit(BASE_SPEC, "latency_p99_ms", max=0.000001), {}, ["latency_p99_ms"], "ThresholdNotMet"),
    "champion regression": (BASE_SPEC, {"candidate": "biased", "champion": "good"}, ["champion.accuracy"],
                            "ChampionRegression"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_check_fails_alone(storage, inputs, case):
    spec, kw, expected, reason = CASES[case]
    result, plan, failing = run_case(storage, inputs, spec, **kw)
    assert failing == expected, plan.status["checks"]
    assert plan.status["phase"] == "Failed"
    cond = get_condition(plan.status["conditions"], "Failed")
    assert cond["reason"] == reason and expected[0] in cond["message"]
    assert get_condition(plan.status["conditions"], "Passed")["status"] == "False"
    assert storage.get_json(result["modelCard"]["uri"])["verdict"] == "Failed"


def test_champion_within_tolerance_passes_and_no_champion_passes(storage, inputs):
    spec = {**BASE_SPEC, "champion": {"deploymentRef": {"name": "iris"}, "metric": "accuracy", "tolerance": 0.1}}
    _, plan, failing = run_case(storage, inputs, spec, candidate="biased", champion="good")
    assert failing == []
    _, plan, failing = run_case(storage, inputs, BASE_SPEC, champion=None)
    assert failing == []
    # the planner turns an empty Deployment into "no champion" before the Job
    assert evaluation._champion_task({"deploymentRef": {"name": "iris"}, "metric": "accuracy", "tolerance": 0},
                                     {"status": {}})["reason"] == "Deployment 'iris' serves no model yet"


def test_leakage_by_rows_in_a_training_input(storage, inputs):
    ns, refs = inputs
    result, plan, failing = run_case(storage, inputs, BASE_SPEC, training=("train", "leaky"))
    assert failing == ["leakage"] and "metrics" not in result and "modelCard" not in result
    cond = get_condition(plan.status["conditions"], "Failed")
    assert cond["reason"] == "Leakage"
    assert "3 test row(s) (id 1000, 1001, 1002)" in cond["message"] and refs["leaky"]["uri"] in cond["message"]


def test_leakage_when_scored_rows_are_not_from_the_frozen_test_split(storage, inputs):
    ns, refs = inputs
    other = om.test_frame(seed=9, start_id=5000)
    fake = dict(put(storage, f"s3://loom/{ns}/labels/other-test.csv", om.csv_bytes(other)), rows=len(other))
    _, task = task_for(ns, refs, BASE_SPEC)
    task["test"] = fake
    code, result = execute(evaluate.main, task, storage)
    assert code == 0 and not result["leakage"]["passed"]
    assert f"of test split {fake['digest']} are not in the Dataset's frozen test split {refs['dsTest']['digest']}" \
        in result["leakage"]["message"]


def test_logits_output_gets_a_softmax(storage, inputs):
    ns, refs = inputs
    logits = put(storage, f"s3://loom/{ns}/models/logits.onnx", om.linear_onnx(np.eye(3) * 3.0, np.zeros(3), softmax=False))
    refs = dict(refs, logits=logits)
    _, task = task_for(ns, refs, BASE_SPEC, candidate="logits")
    code, result = execute(evaluate.main, task, storage)
    assert code == 0, result
    _, good_task = task_for(ns, refs, BASE_SPEC)
    code, good = execute(evaluate.main, good_task, storage)
    for m in ("accuracy", "roc_auc", "log_loss", "ece"):
        assert result["metrics"][m] == pytest.approx(good["metrics"][m], abs=1e-5)


def test_bad_slice_column_and_perturbation_column_are_named(storage, inputs):
    ns, refs = inputs
    spec = {**BASE_SPEC, "slices": [{"column": "nope"}]}
    _, task = task_for(ns, refs, spec)
    code, result = execute(evaluate.main, task, storage)
    assert code == 1 and result["error"].startswith("slice column 'nope' is not a column of the test split")
    _, task = task_for(ns, refs, {**BASE_SPEC, "slices": [{"column": "x0"}]})
    code, result = execute(evaluate.main, task, storage)
    assert code == 1 and result["error"] == ("slice column 'x0' has 240 distinct values (at most 50): "
                                             "slice by a categorical column")
    spec = {**BASE_SPEC, "robustness": [{"name": "noise", "type": "gaussianNoise", "sigma": 1, "columns": ["zz"]}]}
    _, task = task_for(ns, refs, spec)
    code, result = execute(evaluate.main, task, storage)
    assert code == 1 and "robustness 'noise': column(s) zz are not features" in result["error"]


def test_leakage_by_digest_names_the_lineage_event(storage, inputs):
    ns, refs = inputs
    result, plan, failing = run_case(storage, inputs, BASE_SPEC, training=("train", "test"))
    assert failing == ["leakage"]
    message = get_condition(plan.status["conditions"], "Failed")["message"]
    assert message.startswith(f"scored test split {refs['test']['uri']} ({refs['test']['digest']}) is an input of TrainingRun tr")
    assert f"its lineage event s3://loom/{ns}/lineage/trainingrun/tr/run.json lists" in message


def test_a_test_split_without_ids_cannot_be_proved(storage, inputs):
    ns, refs = inputs
    no_ids = om.test_frame().drop(columns=["id"])
    ref = dict(put(storage, f"s3://loom/{ns}/labels/no-ids.csv", om.csv_bytes(no_ids)), rows=len(no_ids))
    _, task = task_for(ns, refs, BASE_SPEC)
    task["test"] = ref
    code, result = execute(evaluate.main, task, storage)
    assert code == 1 and result["error"] == "test split lacks the id column 'id': the leakage proof needs row ids"
